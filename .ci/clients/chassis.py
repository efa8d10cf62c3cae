"""Chassis with the real `baremetal` CLI and openstacksdk: create -> list ->
show -> update -> delete, fields checked against Ironic's chassis schema, and
negative cases (bad input 400, duplicate UUID 409, unknown chassis 404)."""

from _lib import bm, bm_fails, check, expect_eq, expect_error, expect_keys, http, ok, sdk

FIELDS = {"uuid", "description", "extra", "created_at", "updated_at", "links", "nodes"}

c = bm("chassis", "create", "--description", "rack 1", "--extra", "row=3")
uuid = c["uuid"]
expect_eq("cli create: description", c["description"], "rack 1")
expect_eq("cli create: extra", c["extra"], {"row": 3})
expect_keys("cli show", bm("chassis", "show", uuid), FIELDS - {"links", "nodes"})
_, _, raw = http("GET", f"/v1/chassis/{uuid}")
expect_keys("http show", raw, FIELDS)
expect_eq("cli list", [(r["uuid"], r["description"]) for r in bm("chassis", "list")], [(uuid, "rack 1")])
long = bm("chassis", "list", "--long")
check(long[0]["extra"] == {"row": 3}, f"cli list --long: {long!r}")
ok("cli list --long")
bm("chassis", "set", uuid, "--description", "rack 2", "--extra", "col=1", json_out=False)
shown = bm("chassis", "show", uuid)
expect_eq("cli set", (shown["description"], shown["extra"]), ("rack 2", {"row": 3, "col": 1}))
bm("chassis", "unset", uuid, "--extra", "row", "--description", json_out=False)
shown = bm("chassis", "show", uuid)
expect_eq("cli unset", (shown["description"], shown["extra"]), (None, {"col": 1}))
bm_fails("chassis", "create", "--uuid", uuid, contains=f"A chassis with UUID {uuid} already exists.")
ok("cli duplicate UUID refused")
expect_error("duplicate UUID", "POST", "/v1/chassis", 409, f"A chassis with UUID {uuid} already exists.", {"uuid": uuid})
expect_error("description too long", "POST", "/v1/chassis", 400, "is too long", {"description": "x" * 256})
expect_error("unknown field", "POST", "/v1/chassis", 400, "Additional properties are not allowed", {"name": "x"})
expect_error("unknown chassis", "GET", "/v1/chassis/00000000-0000-0000-0000-0000000000cc", 404,
             "Chassis 00000000-0000-0000-0000-0000000000cc could not be found.")
expect_error("not a UUID", "GET", "/v1/chassis/rack", 400, "Expected UUID for chassis_uuid: rack")
bm("chassis", "delete", uuid, json_out=False)
expect_error("deleted", "GET", f"/v1/chassis/{uuid}", 404, f"Chassis {uuid} could not be found.")

conn = sdk()
sc = conn.create_chassis(description="sdk rack", extra={"a": "b"})
expect_eq("sdk create_chassis", sc.description, "sdk rack")
expect_eq("sdk chassis(details)", [(x.id, x.extra) for x in conn.chassis(details=True)], [(sc.id, {"a": "b"})])
conn.update_chassis(sc, description="sdk rack 2")
expect_eq("sdk update_chassis", conn.get_chassis(sc.id).description, "sdk rack 2")
conn.patch_chassis(sc, [{"op": "add", "path": "/extra/c", "value": "d"}])
expect_eq("sdk patch_chassis", conn.get_chassis(sc.id).extra, {"a": "b", "c": "d"})
conn.delete_chassis(sc, ignore_missing=False)
expect_eq("sdk delete_chassis", list(conn.chassis()), [])
