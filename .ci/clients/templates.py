"""Deploy templates (and, where built, runbooks, volume connectors/targets and
inspection rules) with the real `baremetal` CLI and openstacksdk: create ->
list -> show -> set/unset -> delete, fields checked against Ironic's schema,
and negative cases (bad input 400, duplicate 409, unknown 404, too-old
microversion)."""

import json

from _lib import bm, bm_fails, check, expect_eq, expect_error, expect_keys, http, ok, sdk

# ----- deploy templates (1.55) ---------------------------------------------
DT_FIELDS = {"uuid", "name", "steps", "extra", "created_at", "updated_at", "links"}
steps = [{"interface": "bios", "step": "apply_configuration", "priority": 150,
          "args": {"settings": [{"name": "LogicalProc", "value": "Enabled"}]}}]
t = bm("deploy", "template", "create", "CUSTOM_HYPERTHREADING_ON", "--steps", json.dumps(steps),
       "--extra", "team=infra")
uuid = t["uuid"]
expect_eq("cli create: steps", t["steps"], steps)
expect_eq("cli create: extra", t["extra"], {"team": "infra"})
expect_keys("cli show", bm("deploy", "template", "show", "CUSTOM_HYPERTHREADING_ON"), DT_FIELDS - {"links"})
_, _, raw = http("GET", f"/v1/deploy_templates/{uuid}")
expect_keys("http show", raw, DT_FIELDS)
expect_eq("cli list", [(r["uuid"], r["name"]) for r in bm("deploy", "template", "list")],
          [(uuid, "CUSTOM_HYPERTHREADING_ON")])
long = bm("deploy", "template", "list", "--long")
check(long[0]["steps"] == steps, f"cli list --long: {long!r}")
ok("cli list --long")
new_steps = [{"interface": "bios", "step": "factory_reset", "priority": 0, "args": {}}]
bm("deploy", "template", "set", uuid, "--name", "CUSTOM_HT_ON", "--steps", json.dumps(new_steps),
   "--extra", "tier=1", json_out=False)
shown = bm("deploy", "template", "show", uuid)
expect_eq("cli set", (shown["name"], shown["steps"], shown["extra"]),
          ("CUSTOM_HT_ON", new_steps, {"team": "infra", "tier": 1}))
bm("deploy", "template", "unset", "CUSTOM_HT_ON", "--extra", "team", json_out=False)
expect_eq("cli unset", bm("deploy", "template", "show", uuid)["extra"], {"tier": 1})
bm_fails("deploy", "template", "create", "CUSTOM_HT_ON", "--steps", json.dumps(steps),
         contains="A deploy template with name CUSTOM_HT_ON already exists.")
ok("cli duplicate name refused")
bm_fails("deploy", "template", "create", "not_a_trait", "--steps", json.dumps(steps),
         contains="is not valid under any of the given schemas")
ok("cli invalid name refused")
expect_error("duplicate UUID", "POST", "/v1/deploy_templates", 409,
             f"A deploy template with UUID {uuid} already exists.",
             {"uuid": uuid, "name": "CUSTOM_OTHER", "steps": steps})
expect_error("empty steps", "POST", "/v1/deploy_templates", 400,
             "Schema error for template: [] should be non-empty", {"name": "CUSTOM_X", "steps": []})
expect_error("bad interface", "POST", "/v1/deploy_templates", 400, "'network' is not one of",
             {"name": "CUSTOM_X", "steps": [dict(steps[0], interface="network")]})
expect_error("duplicate steps", "POST", "/v1/deploy_templates", 400,
             "Deploy template invalid: Duplicate deploy steps.", {"name": "CUSTOM_X", "steps": steps * 2})
expect_error("too old (GET)", "GET", "/v1/deploy_templates", 404,
             "The API version does not allow deploy templates", version="1.54")
expect_error("too old (POST)", "POST", "/v1/deploy_templates", 405,
             "The API version does not allow deploy templates", {"name": "CUSTOM_X", "steps": steps},
             version="1.54")
expect_error("unknown template", "GET", "/v1/deploy_templates/CUSTOM_NOPE", 404,
             "Deploy template CUSTOM_NOPE could not be found.")
expect_error("patch uuid", "PATCH", f"/v1/deploy_templates/{uuid}", 400,
             "Cannot patch /uuid. Only the following can be updated: extra, name, steps, description",
             [{"op": "replace", "path": "/uuid", "value": uuid}])
bm("deploy", "template", "delete", "CUSTOM_HT_ON", json_out=False)
expect_error("deleted", "GET", f"/v1/deploy_templates/{uuid}", 404, f"Deploy template {uuid} could not be found.")

conn = sdk()
st = conn.create_deploy_template(name="CUSTOM_SDK", steps=steps, extra={"a": "b"})
expect_eq("sdk create_deploy_template", (st.name, st.steps), ("CUSTOM_SDK", steps))
expect_eq("sdk deploy_templates(details)", [(x.id, x.extra) for x in conn.deploy_templates(details=True)],
          [(st.id, {"a": "b"})])
conn.update_deploy_template(st, extra={"c": "d"})
expect_eq("sdk update_deploy_template", conn.get_deploy_template(st.id).extra, {"c": "d"})
conn.patch_deploy_template(st, [{"op": "replace", "path": "/name", "value": "CUSTOM_SDK_2"}])
expect_eq("sdk patch_deploy_template", conn.get_deploy_template("CUSTOM_SDK_2").id, st.id)
conn.delete_deploy_template(st, ignore_missing=False)
expect_eq("sdk delete_deploy_template", list(conn.deploy_templates()), [])
