"""Allocations with the real `baremetal` CLI and openstacksdk.

create (--wait) -> list -> show -> set/unset -> delete with both clients,
fields checked against Ironic's allocation schema (1.60+: with owner), the
node's instance_uuid / allocation_uuid following the allocation, plus
negative cases: unknown candidate (400), duplicate name (409), no matching
node (state error with Ironic's message), too-old microversion.
"""

import time

import openstack

from _lib import bm, bm_fails, check, expect_eq, expect_error, expect_keys, http, ok

FIELDS = {"uuid", "name", "node_uuid", "state", "last_error", "resource_class", "traits",
          "candidate_nodes", "extra", "owner", "created_at", "updated_at", "links"}


def available(name, rc, traits=()):
    n = bm("node", "create", "--driver", "fake-hardware", "--name", name, "--resource-class", rc)
    for t in traits:
        bm("node", "add", "trait", name, t, json_out=False)
    bm("node", "manage", name, "--wait", "30", json_out=False)
    bm("node", "provide", name, "--wait", "30", json_out=False)
    shown = bm("node", "show", name)
    check(shown["provision_state"] == "available" and shown["power_state"] is not None,
          f"{name} not available with a power state: {shown!r}")
    return n["uuid"]


gpu = available("gpu-node", "gold", ["CUSTOM_GPU"])
plain = available("plain-node", "gold")

# ---- the CLI ----------------------------------------------------------------
a = bm("allocation", "create", "--resource-class", "gold", "--trait", "CUSTOM_GPU",
       "--name", "alloc-cli", "--extra", "k=v", "--wait", "30")
expect_eq("cli create --wait: state", a["state"], "active")
expect_eq("cli create --wait: node (the one with the trait)", a["node_uuid"], gpu)
expect_eq("cli create: traits", a["traits"], ["CUSTOM_GPU"])
alloc_uuid = a["uuid"]
n = bm("node", "show", "gpu-node", "-c", "allocation_uuid", "-c", "instance_uuid")
expect_eq("node show -c allocation_uuid -c instance_uuid", n,
          {"allocation_uuid": alloc_uuid, "instance_uuid": alloc_uuid})
_, _, raw = http("GET", f"/v1/allocations/{alloc_uuid}")
expect_keys("http show at latest", raw, FIELDS)
_, _, raw = http("GET", f"/v1/allocations/{alloc_uuid}", version="1.59")
expect_keys("http show at 1.59 (no owner)", raw, FIELDS - {"owner"})

shown = bm("allocation", "show", "alloc-cli")
expect_eq("cli show by name", shown["uuid"], alloc_uuid)
expect_eq("cli show: extra", shown["extra"], {"k": "v"})
listed = bm("allocation", "list")
expect_eq("cli list", [r["UUID"] if "UUID" in r else r["uuid"] for r in listed], [alloc_uuid])
for args in (["--state", "active"], ["--resource-class", "gold"], ["--node", "gpu-node"]):
    rows = bm("allocation", "list", *args)
    expect_eq(f"cli list {' '.join(args)}", len(rows), 1)
expect_eq("cli list --state error", bm("allocation", "list", "--state", "error"), [])

bm("allocation", "set", "alloc-cli", "--name", "alloc-cli2", "--extra", "x=1", json_out=False)
shown = bm("allocation", "show", alloc_uuid)
expect_eq("cli set: name", shown["name"], "alloc-cli2")
expect_eq("cli set: extra", shown["extra"], {"k": "v", "x": 1})
bm("allocation", "unset", "alloc-cli2", "--extra", "k", json_out=False)
expect_eq("cli unset: extra", bm("allocation", "show", alloc_uuid)["extra"], {"x": 1})
bm("allocation", "unset", "alloc-cli2", "--name", json_out=False)
expect_eq("cli unset: name", bm("allocation", "show", alloc_uuid)["name"], None)

bm("allocation", "delete", alloc_uuid, json_out=False)
n = bm("node", "show", "gpu-node", "-c", "allocation_uuid", "-c", "instance_uuid")
expect_eq("cli delete frees the node", n, {"allocation_uuid": None, "instance_uuid": None})
expect_error("deleted allocation", "GET", f"/v1/allocations/{alloc_uuid}", 404,
             f"Allocation {alloc_uuid} could not be found.")

# ---- CLI negative cases -------------------------------------------------------
bm_fails("allocation", "create", "--resource-class", "gold", "--candidate-node", "ghost",
         contains="Nodes cannot be found: ghost")
ok("cli unknown candidate refused")
dup = bm("allocation", "create", "--resource-class", "gold", "--name", "dup", "--wait", "30")
bm_fails("allocation", "create", "--resource-class", "gold", "--name", "dup",
         contains="An allocation with name dup already exists.")
ok("cli duplicate name refused")
bm_fails("allocation", "create", "--resource-class", "bronze", "--wait", "30",
         contains="no available nodes match the resource class bronze")
ok("cli no matching node: the wait reports the error")
failed = bm("allocation", "list", "--state", "error")
expect_eq("one failed allocation", len(failed), 1)
f = bm("allocation", "show", failed[0]["UUID"] if "UUID" in failed[0] else failed[0]["uuid"])
expect_eq("failed allocation's last_error", f["last_error"],
          f"Failed to process allocation {f['uuid']}: no available nodes match the resource class bronze.")
bm("allocation", "delete", f["uuid"], dup["uuid"], json_out=False)

# ---- openstacksdk ---------------------------------------------------------------
conn = openstack.connect(cloud="ferric", baremetal_status_code_retries=0).baremetal
al = conn.create_allocation(resource_class="gold", name="alloc-sdk", candidate_nodes=["plain-node"])
al = conn.wait_for_allocation(al, timeout=30)
expect_eq("sdk wait_for_allocation: state", al.state, "active")
expect_eq("sdk: node", al.node_id, plain)
expect_eq("sdk: candidate names stored as UUIDs", al.candidate_nodes, [plain])
expect_eq("sdk allocations(state=active)", [x.name for x in conn.allocations(state="active")], ["alloc-sdk"])
expect_eq("sdk allocations(node=...)", [x.id for x in conn.allocations(node="plain-node")], [al.id])
got = conn.get_allocation("alloc-sdk")
expect_eq("sdk get_allocation by name", got.id, al.id)
got = conn.update_allocation(al, extra={"a": "b"})
expect_eq("sdk update_allocation: extra", got.extra, {"a": "b"})
got = conn.patch_allocation(al, [{"op": "replace", "path": "/name", "value": "alloc-sdk2"}])
expect_eq("sdk patch_allocation: name", got.name, "alloc-sdk2")
expect_eq("node's instance follows", conn.get_node("plain-node").instance_id, al.id)
conn.delete_allocation(al)
expect_eq("sdk delete_allocation frees the node", conn.get_node("plain-node").instance_id, None)
expect_eq("sdk allocations() empty", list(conn.allocations()), [])

try:
    conn.create_allocation(resource_class="gold", candidate_nodes=["ghost"])
    check(False, "sdk unknown candidate accepted")
except openstack.exceptions.BadRequestException as e:
    check("Nodes cannot be found: ghost" in str(e), f"sdk unknown candidate: {e}")
    ok("sdk unknown candidate: 400")
conn.create_allocation(resource_class="gold", name="sdk-dup")
try:
    conn.create_allocation(resource_class="gold", name="sdk-dup")
    check(False, "sdk duplicate name accepted")
except openstack.exceptions.ConflictException as e:
    check("An allocation with name sdk-dup already exists." in str(e), f"sdk duplicate: {e}")
    ok("sdk duplicate name: 409")
bad = conn.create_allocation(resource_class="bronze")
try:
    conn.wait_for_allocation(bad, timeout=30)
    check(False, "sdk allocation without a matching node became active")
except openstack.exceptions.ResourceFailure as e:
    check("no available nodes match the resource class bronze" in str(e), f"sdk failure: {e}")
    ok("sdk wait_for_allocation reports the failure")
bad = conn.wait_for_allocation(bad, timeout=30, ignore_error=True)
expect_eq("sdk failed allocation state", bad.state, "error")

# ---- raw HTTP: version gates and the node's allocation ------------------------------
expect_error("list at 1.51", "GET", "/v1/allocations", 404,
             "The API version does not allow allocations", version="1.51")
expect_error("create at 1.51", "POST", "/v1/allocations", 405,
             "The API version does not allow allocations", {"resource_class": "gold"}, version="1.51")
expect_error("patch at 1.56", "PATCH", "/v1/allocations/sdk-dup", 405,
             "The API version does not allow updating allocations",
             [{"op": "replace", "path": "/name", "value": "z"}], version="1.56")
deadline = time.monotonic() + 30
while http("GET", "/v1/allocations/sdk-dup")[2]["state"] == "allocating":
    check(time.monotonic() < deadline, "sdk-dup never settled")
    time.sleep(0.1)
node_of = http("GET", "/v1/allocations/sdk-dup")[2]["node_uuid"]
status, _, doc = http("GET", f"/v1/nodes/{node_of}/allocation")
expect_eq("GET /v1/nodes/{node}/allocation", (status, doc["name"]), (200, "sdk-dup"))
status, _, _ = http("DELETE", f"/v1/nodes/{node_of}/allocation")
expect_eq("DELETE /v1/nodes/{node}/allocation", status, 204)
expect_error("node without allocation", "GET", f"/v1/nodes/{node_of}/allocation", 404,
             f"Allocation for node {node_of} was not found")
