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

# ----- runbooks (1.92) -------------------------------------------------------
import time

RB_FIELDS = {"uuid", "name", "steps", "extra", "public", "owner", "disable_ramdisk",
             "created_at", "updated_at", "links"}
rb_steps = [{"interface": "bios", "step": "apply_configuration", "order": 1,
             "args": {"settings": [{"name": "BootMode", "value": "Uefi"}]}}]
RB_FIELDS_112 = RB_FIELDS | {"description", "traits"}
rb = bm("runbook", "create", "--name", "CUSTOM_BIOS_UEFI", "--steps", json.dumps(rb_steps),
        "--owner", "proj-a", "--extra", "k=v", "--description", "UEFI boot")
expect_eq("cli runbook create: steps", rb["steps"], rb_steps)
expect_eq("cli runbook create: owner/public", (rb["owner"], rb["public"]), ("proj-a", False))
expect_eq("cli runbook create: description/traits (1.112)", (rb["description"], rb["traits"]),
          ("UEFI boot", []))
_, _, raw = http("GET", f"/v1/runbooks/{rb['uuid']}", version="1.111")
expect_keys("http runbook show (1.111)", raw, RB_FIELDS)
_, _, raw = http("GET", f"/v1/runbooks/{rb['uuid']}", version="1.112")
expect_keys("http runbook show (1.112)", raw, RB_FIELDS_112)
expect_eq("cli runbook list", [r["name"] for r in bm("runbook", "list")], ["CUSTOM_BIOS_UEFI"])
bm("runbook", "set", "CUSTOM_BIOS_UEFI", "--extra", "k2=v2", json_out=False)
bm("runbook", "unset", "CUSTOM_BIOS_UEFI", "--owner", "--description", json_out=False)
shown = bm("runbook", "show", "CUSTOM_BIOS_UEFI")
expect_eq("cli runbook set/unset", (shown["extra"], shown["owner"], shown["description"]),
          ({"k": "v", "k2": "v2"}, None, None))
bm("runbook", "set", "CUSTOM_BIOS_UEFI", "--description", "again", json_out=False)
expect_eq("cli runbook set --description", bm("runbook", "show", "CUSTOM_BIOS_UEFI")["description"], "again")
# Runbook traits (1.112): the sub-resource through the CLI.
bm("runbook", "trait", "add", "CUSTOM_BIOS_UEFI", "CUSTOM_ZZ", "CUSTOM_RB_OK", json_out=False)
expect_eq("cli runbook trait list", sorted(next(iter(t.values())) for t in
          bm("runbook", "trait", "list", "CUSTOM_BIOS_UEFI")), ["CUSTOM_RB_OK", "CUSTOM_ZZ"])
bm("runbook", "trait", "remove", "CUSTOM_BIOS_UEFI", "CUSTOM_ZZ", json_out=False)
expect_eq("cli runbook trait remove", bm("runbook", "show", "CUSTOM_BIOS_UEFI")["traits"], ["CUSTOM_RB_OK"])
bm_fails("runbook", "trait", "add", "CUSTOM_BIOS_UEFI", "not_a_trait",
         contains="Schema error for trait: 'not_a_trait' is not valid under any of the given schemas")
ok("cli invalid runbook trait refused")
bm_fails("runbook", "create", "--name", "bad name", "--steps", json.dumps(rb_steps),
         contains="does not match")
ok("cli invalid 1.112 runbook name refused")
expect_error("runbook traits too old", "GET", "/v1/runbooks/CUSTOM_BIOS_UEFI/traits", 404,
             "The API version does not allow runbook traits", version="1.111")
expect_error("runbook traits set without a list", "PUT", "/v1/runbooks/CUSTOM_BIOS_UEFI/traits", 400,
             "A single runbook trait may be added via PUT", {})
expect_error("runbook traits on create", "POST", "/v1/runbooks", 400,
             "Additional properties are not allowed ('traits' was unexpected)",
             {"name": "relaxed-name", "steps": rb_steps, "traits": ["CUSTOM_A"]})
bm_fails("runbook", "create", "--name", "CUSTOM_BIOS_UEFI", "--steps", json.dumps(rb_steps),
         contains="A runbook with name CUSTOM_BIOS_UEFI already exists.")
ok("cli duplicate runbook refused")
expect_error("runbook too old", "GET", "/v1/runbooks", 404, "The API version does not allow runbooks",
             version="1.91")
expect_error("runbook step without order", "POST", "/v1/runbooks", 400,
             "Schema error for runbook: 'order' is a required property",
             {"name": "CUSTOM_X", "steps": [{"interface": "bios", "step": "factory_reset"}]})
expect_error("unknown runbook", "GET", "/v1/runbooks/CUSTOM_NOPE", 404, "Runbook CUSTOM_NOPE could not be found.")

# Manual cleaning with the runbook: refused until the node carries its name
# as a trait, then its steps run.
node = bm("node", "create", "--driver", "fake-hardware", "--name", "rb-node")
bm("node", "manage", "rb-node", json_out=False)
deadline = time.monotonic() + 60
while bm("node", "show", "rb-node")["provision_state"] != "manageable":
    check(time.monotonic() < deadline, "rb-node never became manageable")
    time.sleep(0.2)
bm_fails("node", "clean", "rb-node", "--runbook", "CUSTOM_BIOS_UEFI",
         contains="The node does not have any of the runbook's traits ['CUSTOM_RB_OK']")
ok("cli clean with an unapproved runbook refused")
# From 1.112 the runbook's name as a node trait is not enough (below 1.112
# it is): the node needs one of the runbook's traits.
bm("node", "add", "trait", "rb-node", "CUSTOM_BIOS_UEFI", json_out=False)
bm_fails("node", "clean", "rb-node", "--runbook", "CUSTOM_BIOS_UEFI",
         contains="The node does not have any of the runbook's traits")
ok("cli clean: name-as-trait no longer approves at 1.112")
bm("node", "add", "trait", "rb-node", "CUSTOM_RB_OK", json_out=False)
bm("node", "clean", "rb-node", "--runbook", "CUSTOM_BIOS_UEFI", "--wait", "60", json_out=False)
bios = bm("node", "bios", "setting", "list", "rb-node")
expect_eq("runbook steps ran", [(b["setting name"] if "setting name" in b else b["name"], b.get("value")) for b in bios],
          [("BootMode", "Uefi")])

conn = sdk()
srb = conn.create_runbook(name="CUSTOM_SDK_RB", steps=rb_steps, public=True)
expect_eq("sdk create_runbook", (srb.name, srb.public), ("CUSTOM_SDK_RB", True))
expect_eq("sdk runbooks", sorted(x.name for x in conn.runbooks()), ["CUSTOM_BIOS_UEFI", "CUSTOM_SDK_RB"])
conn.update_runbook(srb, extra={"z": 1}, description="sdk")
got = conn.get_runbook(srb.id)
expect_eq("sdk update_runbook", (got.extra, got.description, got.traits), ({"z": 1}, "sdk", []))
conn.set_runbook_traits(srb, ["CUSTOM_S2", "CUSTOM_S1"])
expect_eq("sdk set_runbook_traits", sorted(conn.get_runbook(srb.id).traits), ["CUSTOM_S1", "CUSTOM_S2"])
conn.add_runbook_trait(srb, "CUSTOM_S3")
conn.remove_runbook_trait(srb, "CUSTOM_S1")
conn.remove_runbook_trait(srb, "CUSTOM_ABSENT")
expect_eq("sdk add/remove_runbook_trait", sorted(conn.get_runbook(srb.id).traits), ["CUSTOM_S2", "CUSTOM_S3"])
conn.delete_runbook(srb, ignore_missing=False)
bm("runbook", "delete", "CUSTOM_BIOS_UEFI", json_out=False)
expect_eq("runbooks deleted", list(conn.runbooks()), [])

# ----- volume connectors and targets (1.32) ----------------------------------
vnode = bm("node", "create", "--driver", "fake-hardware", "--name", "vol-node")["uuid"]
VC_FIELDS = {"uuid", "node_uuid", "type", "connector_id", "extra", "created_at", "updated_at", "links"}
vc = bm("volume", "connector", "create", "--node", vnode, "--type", "iqn",
        "--connector-id", "iqn.2017-07.org.openstack:01:d9a51732c3f", "--extra", "a=b")
expect_eq("cli volume connector create", (vc["node_uuid"], vc["type"], vc["extra"]), (vnode, "iqn", {"a": "b"}))
_, _, raw = http("GET", f"/v1/volume/connectors/{vc['uuid']}")
expect_keys("http volume connector show", raw, VC_FIELDS)
expect_eq("cli volume connector list --node",
          [r["uuid"] for r in bm("volume", "connector", "list", "--node", "vol-node")], [vc["uuid"]])
bm_fails("volume", "connector", "create", "--node", vnode, "--type", "iqn",
         "--connector-id", "iqn.2017-07.org.openstack:01:d9a51732c3f",
         contains="A volume connector with type iqn and connector ID iqn.2017-07.org.openstack:01:d9a51732c3f already exists.")
ok("cli duplicate connector refused")
bm_fails("volume", "connector", "set", vc["uuid"], "--extra", "c=d",
         contains="can not be performed on node")
ok("cli connector update refused while the node is not powered off")
bm("node", "power", "off", "vol-node", json_out=False)
deadline = time.monotonic() + 60
while bm("node", "show", "vol-node")["power_state"] != "power off":
    check(time.monotonic() < deadline, "vol-node never powered off")
    time.sleep(0.2)
bm("volume", "connector", "set", vc["uuid"], "--extra", "c=d", json_out=False)
bm("volume", "connector", "unset", vc["uuid"], "--extra", "a", json_out=False)
expect_eq("cli volume connector set/unset", bm("volume", "connector", "show", vc["uuid"])["extra"], {"c": "d"})

VT_FIELDS = {"uuid", "node_uuid", "volume_type", "boot_index", "volume_id", "properties", "extra",
             "created_at", "updated_at", "links"}
vt = bm("volume", "target", "create", "--node", vnode, "--type", "iscsi", "--boot-index", "0",
        "--volume-id", "04452bed-5367-4202-8bf5-de4335ac56d2", "--property", "target_lun=0")
expect_eq("cli volume target create", (vt["boot_index"], vt["properties"]), (0, {"target_lun": 0}))
_, _, raw = http("GET", f"/v1/volume/targets/{vt['uuid']}")
expect_keys("http volume target show", raw, VT_FIELDS)
bm_fails("volume", "target", "create", "--node", vnode, "--type", "iscsi", "--boot-index", "0",
         "--volume-id", "x", contains="A volume target with boot index '0' for the same node already exists.")
ok("cli duplicate boot index refused")
bm("volume", "target", "set", vt["uuid"], "--boot-index", "1", json_out=False)
expect_eq("cli volume target set", bm("volume", "target", "show", vt["uuid"])["boot_index"], 1)
expect_eq("nested list", [t["uuid"] for t in http("GET", "/v1/nodes/vol-node/volume/targets")[2]["targets"]],
          [vt["uuid"]])
expect_error("volume too old", "GET", "/v1/volume/connectors", 404, "The API is not supported for this version",
             version="1.31")
expect_error("connector on unknown node", "POST", "/v1/volume/connectors", 400,
             "Invalid input for field/attribute node_uuid.",
             {"node_uuid": "00000000-0000-0000-0000-0000000000aa", "type": "ip", "connector_id": "192.0.2.9"})
expect_error("unknown node list", "GET", "/v1/nodes/nope/volume/connectors", 404, "Node nope could not be found.")

conn = sdk()
sc = conn.create_volume_connector(node_id=vnode, type="wwpn", connector_id="50:01:43:80:12:34:56:78")
expect_eq("sdk volume_connectors", sorted(c.type for c in conn.volume_connectors(details=True)), ["iqn", "wwpn"])
conn.update_volume_connector(sc, extra={"x": "y"})
expect_eq("sdk update_volume_connector", conn.get_volume_connector(sc.id).extra, {"x": "y"})
conn.delete_volume_connector(sc, ignore_missing=False)
st2 = conn.create_volume_target(node_id=vnode, volume_type="iscsi", boot_index=2, volume_id="vol-2")
expect_eq("sdk volume_targets", sorted(t.boot_index for t in conn.volume_targets(details=True)), [1, 2])
conn.delete_volume_target(st2, ignore_missing=False)
bm("volume", "target", "delete", vt["uuid"], json_out=False)
bm("volume", "connector", "delete", vc["uuid"], json_out=False)
expect_eq("volume resources deleted", (list(conn.volume_connectors()), list(conn.volume_targets())), ([], []))

# ----- inspection rules (1.96) -----------------------------------------------
IR_FIELDS = {"uuid", "description", "priority", "sensitive", "phase", "conditions", "actions",
             "created_at", "updated_at", "links"}
actions = [{"op": "add-trait", "args": {"name": "CUSTOM_GPU"}}]
conditions = [{"op": "contains", "args": {"value": "{inventory[system_vendor][product_name]}", "regex": "GPU"}}]
# ironicclient sends `--priority` of create as a string, which Ironic's
# schema (integer) refuses, so ferric does too; `set --priority` sends JSON.
# Likewise it sends an absent --conditions as null, which the schema
# (array) refuses.
bm_fails("inspection", "rule", "create", "--priority", "10", "--actions", json.dumps(actions),
         "--conditions", "[]", contains="Schema error: '10' is not of type 'integer'")
bm_fails("inspection", "rule", "create", "--actions", json.dumps(actions),
         contains="Schema error: None is not of type 'array'")
ok("cli create --priority refused as Ironic refuses it")
ir = bm("inspection", "rule", "create", "--description", "gpu",
        "--actions", json.dumps(actions), "--conditions", json.dumps(conditions))
expect_eq("cli inspection rule create", (ir["actions"], ir["conditions"], ir["phase"]), (actions, conditions, "main"))
_, _, raw = http("GET", f"/v1/inspection_rules/{ir['uuid']}")
expect_keys("http inspection rule show", raw, IR_FIELDS)
expect_eq("cli inspection rule list", [r["uuid"] for r in bm("inspection", "rule", "list")], [ir["uuid"]])
bm("inspection", "rule", "set", ir["uuid"], "--priority", "20", "--description", "GPUs", json_out=False)
shown = bm("inspection", "rule", "show", ir["uuid"])
expect_eq("cli inspection rule set", (shown["priority"], shown["description"]), (20, "GPUs"))
bm_fails("inspection", "rule", "create", "--actions", json.dumps([{"op": "explode", "args": {}}]),
         "--conditions", "[]",
         contains="'explode' is not one of")
ok("cli unknown action refused")
expect_error("rule priority", "POST", "/v1/inspection_rules", 400,
             "Priority must be between 0 and 9999 for user-defined rules.", {"actions": actions, "priority": 10000})
expect_error("rule args", "POST", "/v1/inspection_rules", 400,
             "Inspection rule validation failed. Reason: missing required argument(s): name",
             {"actions": [{"op": "add-trait", "args": {}}]})
expect_error("rules too old", "GET", "/v1/inspection_rules", 404,
             "The API version does not allow inspection rules", version="1.95")
sens = http("POST", "/v1/inspection_rules", {"sensitive": True, "actions": actions})[2]
expect_eq("sensitive rule hides actions", (sens["actions"], sens["conditions"]), (None, None))

conn = sdk()
sr = conn.create_inspection_rule(actions=actions, description="sdk rule")
expect_eq("sdk inspection_rules", len(list(conn.inspection_rules())), 3)
conn.update_inspection_rule(sr, priority=5)
expect_eq("sdk update_inspection_rule", conn.get_inspection_rule(sr.id).priority, 5)
conn.delete_inspection_rule(sr, ignore_missing=False)
conn.delete_inspection_rule(sens["uuid"], ignore_missing=False)
bm("inspection", "rule", "delete", ir["uuid"], json_out=False)
expect_eq("inspection rules deleted", list(conn.inspection_rules()), [])
