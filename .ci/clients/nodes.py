"""Node fields, list filters, traits, protected/retired, shards and children
with the real `baremetal` CLI and openstacksdk (the CLI negotiates 1.115,
ferric's maximum; openstacksdk's node resource 1.109)."""

import time

from _lib import bm, bm_fails, check, expect_eq, expect_error, http, ok

# Ironic's node fields up to 1.96 (instance_name is 1.104, health 1.109).
NODE_FIELDS_1_96 = {
    "allocation_uuid", "automated_clean", "bios_interface", "boot_interface",
    "boot_mode", "chassis_uuid", "clean_step", "conductor", "conductor_group",
    "console_enabled", "console_interface", "created_at", "deploy_interface",
    "deploy_step", "description", "disable_power_off", "driver",
    "driver_info", "driver_internal_info", "extra", "fault",
    "firmware_interface", "inspect_interface", "inspection_finished_at",
    "inspection_started_at", "instance_info", "instance_uuid", "last_error",
    "lessee", "links", "maintenance", "maintenance_reason",
    "management_interface", "name", "network_data", "network_interface",
    "owner", "parent_node", "portgroups", "ports", "power_interface",
    "power_state", "properties", "protected", "protected_reason",
    "provision_state", "provision_updated_at", "raid_config",
    "raid_interface", "rescue_interface", "reservation", "resource_class",
    "retired", "retired_reason", "secure_boot", "service_step", "shard",
    "states", "storage_interface", "target_power_state",
    "target_provision_state", "target_raid_config", "traits", "updated_at",
    "uuid", "vendor_interface", "volume",
}


def names(rows):
    return sorted(r["Name"] if "Name" in r else r["name"] for r in rows)


def wait_state(node, state):
    """Poll until `node` rests in `state` (the CLI's --wait knows only the
    usual targets: a retired node cleans back to manageable)."""
    deadline = time.monotonic() + 60
    while True:
        n = bm("node", "show", node)
        if n["provision_state"] == state and not n["target_provision_state"] and not n["reservation"]:
            ok(f"{node} rests in {state}")
            return n
        check(time.monotonic() < deadline, f"{node} never rested in {state}: {n['provision_state']}")
        time.sleep(0.2)


# ---- CLI: create with the new fields -------------------------------------
n1 = bm("node", "create", "--driver", "fake-hardware", "--name", "n1",
        "--resource-class", "gold", "--owner", "proj-a", "--lessee", "proj-b",
        "--description", "rack 1", "--shard", "s1", "--property", "cpus=2",
        "--disable-power-off")
for field, want in [("resource_class", "gold"), ("owner", "proj-a"),
                    ("lessee", "proj-b"), ("description", "rack 1"),
                    ("shard", "s1"), ("properties", {"cpus": 2}),
                    ("disable_power_off", True), ("protected", False),
                    ("retired", False), ("traits", [])]:
    expect_eq(f"create {field}", n1[field], want)
_, _, shown = http("GET", "/v1/nodes/n1", version="1.96")
missing = NODE_FIELDS_1_96 - set(shown)
check(not missing, f"node show lacks {sorted(missing)}")
_, _, latest = http("GET", "/v1/nodes/n1")
expect_eq("node show at 1.115 adds", sorted(set(latest) - NODE_FIELDS_1_96), ["health", "instance_name"])
extra = set(shown) - NODE_FIELDS_1_96
check(not extra, f"node show has fields Ironic 1.96 does not: {sorted(extra)}")
ok(f"node show: Ironic's {len(NODE_FIELDS_1_96)} fields at 1.96")
bm("node", "create", "--driver", "fake-hardware", "--name", "n2",
   "--resource-class", "silver", "--shard", "s2")
bm("node", "create", "--driver", "fake-hardware", "--name", "kid",
   "--parent-node", "n1", "--owner", "proj-a")

# ---- CLI: set / unset -----------------------------------------------------
bm("node", "set", "n1", "--resource-class", "platinum", "--description",
   "rack 2", "--extra", "a=b", "--automated-clean", json_out=False)
n = bm("node", "show", "n1")
expect_eq("set resource_class", n["resource_class"], "platinum")
expect_eq("set automated_clean", n["automated_clean"], True)
bm("node", "unset", "n1", "--description", "--lessee", json_out=False)
n = bm("node", "show", "n1")
expect_eq("unset description", n["description"], None)
expect_eq("unset lessee", n["lessee"], None)
bm_fails("node", "set", "n1", "--protected",
         contains="can only be made protected in provision states")
bm_fails("node", "set", "n1", "--protected-reason", "x",
         contains="protected_reason field can only be set when protected is True")

# ---- CLI: list filters ----------------------------------------------------
expect_eq("list --resource-class platinum",
          names(bm("node", "list", "--resource-class", "platinum")), ["n1"])
expect_eq("list --owner proj-a", names(bm("node", "list", "--owner", "proj-a")), ["n1"])
expect_eq("list --unassociated", names(bm("node", "list", "--unassociated")), ["n1", "n2"])
expect_eq("list --associated", names(bm("node", "list", "--associated")), [])
expect_eq("list --include-children",
          names(bm("node", "list", "--include-children")), ["kid", "n1", "n2"])
rows = bm("node", "list", "--fields", "uuid", "name", "resource_class", "--sort", "resource_class:desc")
expect_eq("list --fields --sort resource_class:desc",
          [r["Resource Class"] if "Resource Class" in r else r["resource_class"] for r in rows],
          ["silver", "platinum"])
children = bm("node", "children", "list", "n1")
expect_eq("node children list", children, {"children": [bm("node", "show", "kid")["uuid"]]})
shards = bm("shard", "list")
expect_eq("shard list", sorted((s["name"], s["count"]) for s in shards),
          [("None", 1), ("s1", 1), ("s2", 1)])

# ---- CLI: traits ----------------------------------------------------------
bm("node", "add", "trait", "n1", "CUSTOM_GPU", "HW_CPU_X86_VMX", json_out=False)
traits = [r["traits"] for r in bm("node", "trait", "list", "n1")]
expect_eq("trait list", traits, ["CUSTOM_GPU", "HW_CPU_X86_VMX"])
bm("node", "remove", "trait", "n1", "CUSTOM_GPU", json_out=False)
expect_eq("node show traits", bm("node", "show", "n1")["traits"], ["HW_CPU_X86_VMX"])
bm_fails("node", "add", "trait", "n1", "not_a_trait", contains="not_a_trait")
bm_fails("node", "remove", "trait", "n1", "CUSTOM_GONE", contains="CUSTOM_GONE")
bm("node", "remove", "trait", "n1", "--all", json_out=False)
expect_eq("remove --all", bm("node", "show", "n1")["traits"], [])

# ---- CLI: protected and retired through a deploy -------------------------
bm("node", "manage", "n2", "--wait", "30", json_out=False)
bm("node", "provide", "n2", "--wait", "30", json_out=False)
bm_fails("node", "set", "n2", "--retired", contains="can not have 'retired' set in provision state 'available'")
bm("node", "deploy", "n2", "--wait", "30", json_out=False)
bm("node", "set", "n2", "--protected", "--protected-reason", "prod", json_out=False)
n = wait_state("n2", "active")
expect_eq("protected", (n["protected"], n["protected_reason"]), (True, "prod"))
bm_fails("node", "undeploy", "n2", contains="is protected and cannot be undeployed")
bm_fails("node", "rebuild", "n2", contains="is protected")
bm("node", "unset", "n2", "--protected", json_out=False)
expect_eq("unprotected clears the reason", bm("node", "show", "n2")["protected_reason"], None)
bm("node", "set", "n2", "--retired", "--retired-reason", "eol", json_out=False)
bm("node", "undeploy", "n2", json_out=False)
wait_state("n2", "manageable")
bm_fails("node", "provide", "n2", contains="because it is retired")
expect_eq("list --retired", names(bm("node", "list", "--retired")), ["n2"])

# ---- CLI: negative cases --------------------------------------------------
bm_fails("node", "show", "ghost", contains="could not be found")
bm_fails("node", "create", "--driver", "fake-hardware", "--name", "n1",
         contains="A node with name n1 already exists")
bm("node", "delete", "kid", json_out=False)
expect_eq("delete kid", names(bm("node", "list", "--include-children")), ["n1", "n2"])

# ---- raw HTTP: status codes and version gates ----------------------------
bm("node", "create", "--driver", "fake-hardware", "--name", "h1", "--resource-class", "x")
expect_error("duplicate name is 409", "POST", "/v1/nodes", 409,
             "A node with name h1 already exists.",
             body={"driver": "fake-hardware", "name": "h1"})
expect_error("owner filter needs 1.50", "GET", "/v1/nodes?owner=x", 406,
             "1.50", version="1.49")
expect_error("shard field needs 1.82", "POST", "/v1/nodes", 406, "1.82",
             body={"driver": "fake-hardware", "shard": "s"}, version="1.81")
expect_error("bad sort key", "GET", "/v1/nodes?sort_key=driver_info", 400,
             "The sort_key value driver_info is an invalid field for sorting")
expect_error("traits need 1.37", "GET", "/v1/nodes/h1/traits", 404,
             "could not be found", version="1.36")
expect_error("shards need 1.82", "GET", "/v1/shards", 404,
             "does not allow shards", version="1.81")
status, headers, body = http("POST", "/v1/nodes", {"driver": "fake-hardware", "name": "h1"})
check("Retry-After" not in headers and "retry-after" not in headers,
      f"Retry-After only on NodeLocked: {headers}")
ok("no Retry-After on a duplicate")

# ---- openstacksdk ---------------------------------------------------------
# Like the CLI's --max-retries 0: openstacksdk retries every 409 for ~15 s
# by default (Ironic's conflicts included), which only slows a negative test.
import openstack  # noqa: E402

bare = openstack.connect(cloud="ferric", baremetal_status_code_retries=0).baremetal
s1 = bare.create_node(driver="fake-hardware", name="s1", resource_class="gold",
                      owner="proj-s", properties={"cpus": 4})
expect_eq("sdk create resource_class", s1.resource_class, "gold")
expect_eq("sdk create owner", s1.owner, "proj-s")
bare.set_node_traits(s1, ["CUSTOM_A", "CUSTOM_B"])
bare.add_node_trait(s1, "CUSTOM_C")
bare.remove_node_trait(s1, "CUSTOM_A")
expect_eq("sdk traits", sorted(bare.get_node("s1").traits), ["CUSTOM_B", "CUSTOM_C"])
expect_eq("sdk nodes(resource_class=gold)",
          sorted(n.name for n in bare.nodes(resource_class="gold")), ["s1"])
expect_eq("sdk nodes(associated=False, resource_class=x)",
          sorted(n.name for n in bare.nodes(associated=False, resource_class="x")), ["h1"])
# By id: the local object `s1` carries the traits set above, and patching
# it would send them too (Ironic refuses /traits in a PATCH as ferric does).
patched = bare.patch_node(s1.id, [{"op": "add", "path": "/lessee", "value": "proj-t"},
                               {"op": "add", "path": "/description", "value": "sdk"}])
expect_eq("sdk patch lessee", patched.lessee, "proj-t")
expect_eq("sdk patch description", patched.description, "sdk")
import openstack.exceptions as oe  # noqa: E402

try:
    bare.patch_node(s1.id, [{"op": "add", "path": "/protected", "value": True}])
    check(False, "protecting an enroll node succeeded")
except oe.ConflictException as e:
    check("can only be made protected" in str(e), f"sdk protected 409: {e}")
    ok("sdk: protected outside active is 409")
try:
    bare.add_node_trait(s1, "lower_case")
    check(False, "a bad trait was accepted")
except oe.BadRequestException as e:
    ok(f"sdk: bad trait is 400 ({e.status_code})")
try:
    bare.create_node(driver="fake-hardware", name="s1")
    check(False, "a duplicate name was accepted")
except oe.ConflictException as e:
    check("already exists" in str(e), f"sdk duplicate: {e}")
    ok("sdk: duplicate name is 409")
try:
    bare.get_node("ghost")
    check(False, "an unknown node was found")
except oe.NotFoundException:
    ok("sdk: unknown node is 404")
bare.delete_node(s1)
ok("sdk delete")
