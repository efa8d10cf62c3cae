"""Ports and port groups with the real `baremetal` CLI and openstacksdk.

create -> list -> show -> update -> delete for both resources and both clients,
fields checked against Ironic's port / portgroup schema at the negotiated
version (both clients negotiate their maximum; ferric serves up to 1.115), plus negative cases: unknown node,
bad MAC, duplicate MAC (409), too-old microversion, portgroup with ports.
"""

from _lib import bm, bm_fails, check, expect_eq, expect_error, expect_keys, http, ok

# Ironic's port fields at 1.115 (the CLI negotiates it): description 1.97,
# vendor 1.100, category 1.101, available_for_dynamic_portgroup 1.111.
PORT_FIELDS = {"uuid", "address", "node_uuid", "portgroup_uuid", "local_link_connection",
               "pxe_enabled", "physical_network", "internal_info", "extra", "is_smartnic",
               "name", "description", "vendor", "category", "available_for_dynamic_portgroup",
               "created_at", "updated_at", "links"}
# Portgroups: physical_network 1.102, category 1.103, dynamic_portgroup 1.111.
PG_FIELDS = {"uuid", "address", "name", "node_uuid", "standalone_ports_supported",
             "internal_info", "extra", "mode", "properties", "physical_network", "category",
             "dynamic_portgroup", "created_at", "updated_at", "links", "ports"}

node = bm("node", "create", "--driver", "fake-hardware", "--name", "port-node")
node_uuid = node["uuid"]
other = bm("node", "create", "--driver", "fake-hardware", "--name", "other-node")

# ---- ports with the CLI -----------------------------------------------------
p = bm("port", "create", "52:54:00:AA:BB:01", "--node", node_uuid, "--name", "eth0",
       "--pxe-enabled", "false", "--physical-network", "physnet1",
       "--local-link-connection", "port_id=Ethernet1/1",
       "--local-link-connection", "switch_id=AA:BB:CC:DD:EE:FF",
       "--extra", "rack=r1")
expect_eq("cli create: MAC lower-cased", p["address"], "52:54:00:aa:bb:01")
expect_eq("cli create: node", p["node_uuid"], node_uuid)
expect_eq("cli create: pxe_enabled", p["pxe_enabled"], False)
expect_eq("cli create: switch_id normalised", p["local_link_connection"]["switch_id"],
          "aa:bb:cc:dd:ee:ff")
expect_eq("cli create: extra", p["extra"], {"rack": "r1"})
port_uuid = p["uuid"]

shown = bm("port", "show", port_uuid)
expect_keys("cli show", shown, PORT_FIELDS - {"links"})
expect_eq("cli show by address", bm("port", "show", "--address", "52:54:00:aa:bb:01")["uuid"], port_uuid)
expect_eq("cli show by name", bm("port", "show", "eth0")["uuid"], port_uuid)
_, _, raw = http("GET", f"/v1/ports/{port_uuid}")
expect_keys("http show at latest", raw, PORT_FIELDS)

listed = bm("port", "list", "--node", "port-node")
expect_eq("cli list --node", [(r["uuid"], r["address"]) for r in listed],
          [(port_uuid, "52:54:00:aa:bb:01")])
expect_eq("cli list --address", [r["uuid"] for r in bm("port", "list", "--address", "52:54:00:AA:BB:01")],
          [port_uuid])
long = bm("port", "list", "--long")
check(len(long) == 1 and long[0]["physical_network"] == "physnet1", f"cli list --long: {long!r}")
ok("cli list --long shows physical_network")
fields = bm("port", "list", "--fields", "uuid", "address", "name")
expect_eq("cli list --fields", fields, [{"uuid": port_uuid, "address": "52:54:00:aa:bb:01", "name": "eth0"}])

bm("port", "set", port_uuid, "--extra", "slot=2", "--physical-network", "physnet2", json_out=False)
shown = bm("port", "show", port_uuid)
expect_eq("cli set: extra (values parsed as JSON by the CLI)", shown["extra"], {"rack": "r1", "slot": 2})
expect_eq("cli set: physical_network", shown["physical_network"], "physnet2")
bm("port", "unset", port_uuid, "--extra", "rack", "--physical-network", json_out=False)
shown = bm("port", "show", port_uuid)
expect_eq("cli unset: extra", shown["extra"], {"slot": 2})
expect_eq("cli unset: physical_network", shown["physical_network"], None)

# Negative cases, with the CLI and over HTTP (status + Ironic's message).
bm_fails("port", "create", "52:54:00:aa:bb:01", "--node", node_uuid,
         contains="A port with MAC address 52:54:00:aa:bb:01 already exists.")
ok("cli duplicate MAC refused")
bm_fails("port", "create", "52-54-00-aa-bb-02", "--node", node_uuid,
         contains="Expected valid MAC address for address: 52-54-00-aa-bb-02")
ok("cli bad MAC refused")
expect_error("duplicate MAC", "POST", "/v1/ports", 409,
             "A port with MAC address 52:54:00:aa:bb:01 already exists.",
             {"node_uuid": node_uuid, "address": "52:54:00:AA:BB:01"})
expect_error("unknown node", "POST", "/v1/ports", 400,
             "Node 00000000-0000-0000-0000-0000000000aa could not be found.",
             {"node_uuid": "00000000-0000-0000-0000-0000000000aa", "address": "52:54:00:aa:bb:09"})
expect_error("unknown port", "GET", "/v1/ports/00000000-0000-0000-0000-0000000000bb", 404,
             "Port 00000000-0000-0000-0000-0000000000bb could not be found.")
expect_error("name above the version (1.87)", "POST", "/v1/ports", 406, "Request not acceptable.",
             {"node_uuid": node_uuid, "address": "52:54:00:aa:bb:09", "name": "x"}, version="1.87")
expect_error("portgroup filter below 1.24", "GET", "/v1/ports?portgroup=x", 406,
             "Request not acceptable.", version="1.23")
status, _, old = http("GET", f"/v1/ports/{port_uuid}", version="1.18")
expect_keys("fields at 1.18", old, {"uuid", "address", "node_uuid", "internal_info", "extra",
                                    "created_at", "updated_at", "links"})

bm("port", "delete", port_uuid, json_out=False)
expect_error("deleted port", "GET", f"/v1/ports/{port_uuid}", 404, f"Port {port_uuid} could not be found.")

# ---- ports with openstacksdk --------------------------------------------------
import openstack  # noqa: E402

# The SDK retries every 409 (busy node) five times with backoff; a duplicate
# MAC is a 409 too (as in Ironic), so retries are off for this script.
bmc = openstack.connect(cloud="ferric", baremetal_status_code_retries=0).baremetal
sp = bmc.create_port(node_id=node_uuid, address="52:54:00:AA:CC:01", extra={"a": "1"})
expect_eq("sdk create_port: address", sp.address, "52:54:00:aa:cc:01")
expect_eq("sdk create_port: node", sp.node_id, node_uuid)
bmc.create_port(node_id=other["uuid"], address="52:54:00:aa:cc:02")
mine = list(bmc.ports(details=True, node=node_uuid))
expect_eq("sdk ports(details, node)", [x.id for x in mine], [sp.id])
expect_eq("sdk ports(details): pxe_enabled", mine[0].is_pxe_enabled, True)
expect_eq("sdk ports(address)", [x.id for x in bmc.ports(address="52:54:00:aa:cc:01")], [sp.id])
expect_eq("sdk ports() total", len(list(bmc.ports())), 2)
up = bmc.update_port(sp, extra={"a": "2"})
expect_eq("sdk update_port", bmc.get_port(sp.id).extra, {"a": "2"})
pp = bmc.patch_port(sp, [{"op": "add", "path": "/extra/b", "value": "3"}])
expect_eq("sdk patch_port", bmc.get_port(sp.id).extra, {"a": "2", "b": "3"})
import openstack.exceptions as oexc  # noqa: E402
try:
    bmc.create_port(node_id=node_uuid, address="52:54:00:aa:cc:01")
    check(False, "sdk duplicate MAC must fail")
except oexc.ConflictException as e:
    check("already exists" in str(e), f"sdk duplicate: {e}")
    ok("sdk duplicate MAC: ConflictException")
bmc.delete_port(sp, ignore_missing=False)
try:
    bmc.get_port(sp.id)
    check(False, "sdk deleted port must be gone")
except oexc.ResourceNotFound:
    ok("sdk delete_port")

# ---- port groups with the CLI ---------------------------------------------------
pg = bm("port", "group", "create", "--node", node_uuid, "--address", "52:54:00:AA:DD:01",
        "--name", "bond0", "--mode", "802.3ad", "--property", "miimon=100",
        "--unsupport-standalone-ports")
expect_eq("cli pg create: address", pg["address"], "52:54:00:aa:dd:01")
expect_eq("cli pg create: mode", pg["mode"], "802.3ad")
expect_eq("cli pg create: properties", pg["properties"], {"miimon": 100})
expect_eq("cli pg create: standalone", pg["standalone_ports_supported"], False)
pg_uuid = pg["uuid"]
expect_keys("cli pg show", bm("port", "group", "show", "bond0"), PG_FIELDS - {"links", "ports"})
_, _, raw = http("GET", f"/v1/portgroups/{pg_uuid}")
expect_keys("http pg show at latest", raw, PG_FIELDS)
expect_eq("cli pg list", [(r["uuid"], r["name"]) for r in bm("port", "group", "list", "--node", node_uuid)],
          [(pg_uuid, "bond0")])
member = bm("port", "create", "52:54:00:aa:dd:02", "--node", node_uuid, "--port-group", pg_uuid,
            "--pxe-enabled", "false")
expect_eq("cli port in group", member["portgroup_uuid"], pg_uuid)
expect_eq("cli port list --port-group",
          [r["uuid"] for r in bm("port", "list", "--port-group", "bond0")], [member["uuid"]])
bm_fails("port", "create", "52:54:00:aa:dd:03", "--node", node_uuid, "--port-group", pg_uuid,
         "--pxe-enabled", "true", contains="doesn't support standalone ports")
ok("cli pxe-enabled member of a no-standalone group refused (409)")
bm("port", "group", "set", "bond0", "--extra", "k=v", json_out=False)
expect_eq("cli pg set", bm("port", "group", "show", "bond0")["extra"], {"k": "v"})
bm("port", "group", "unset", "bond0", "--extra", "k", json_out=False)
expect_eq("cli pg unset", bm("port", "group", "show", "bond0")["extra"], {})
bm_fails("port", "group", "delete", "bond0",
         contains=f"portgroup {pg_uuid} contains ports")
ok("cli pg delete refused while it has ports")
expect_error("pg below 1.23", "GET", "/v1/portgroups", 404, "could not be found", version="1.22")
expect_error("pg duplicate name", "POST", "/v1/portgroups", 409,
             "A portgroup with name bond0 already exists.", {"node_uuid": node_uuid, "name": "bond0"})
bm("port", "delete", member["uuid"], json_out=False)
bm("port", "group", "delete", "bond0", json_out=False)
expect_error("deleted pg", "GET", f"/v1/portgroups/{pg_uuid}", 404,
             f"Portgroup {pg_uuid} could not be found.")

# ---- port groups with openstacksdk ---------------------------------------------
spg = bmc.create_port_group(node_id=node_uuid, address="52:54:00:aa:ee:01", name="bond1")
expect_eq("sdk create_port_group", spg.name, "bond1")
expect_eq("sdk port_groups(details)", [g.id for g in bmc.port_groups(details=True)], [spg.id])
bmc.update_port_group(spg, extra={"x": "y"})
expect_eq("sdk update_port_group", bmc.get_port_group(spg.id).extra, {"x": "y"})
bmc.patch_port_group(spg, [{"op": "replace", "path": "/mode", "value": "balance-rr"}])
expect_eq("sdk patch_port_group", bmc.get_port_group(spg.id).mode, "balance-rr")
bmc.delete_port_group(spg, ignore_missing=False)
expect_eq("sdk delete_port_group", list(bmc.port_groups()), [])

# ---- node deletion takes its ports; the change feed shows it ---------------------
last = bmc.create_port(node_id=other["uuid"], address="52:54:00:aa:ff:01")
bm("node", "delete", other["uuid"], json_out=False)
_, _, feed = http("GET", "/v1/nodes/changes?resource=port")
deleted = [c["uuid"] for c in feed["changes"] if c["kind"] == "deleted"]
check(last.id in deleted, f"feed lacks the cascade deletion of {last.id}: {deleted}")
ok("node deletion removed its ports, each in the change feed")
expect_eq("ports left", len(list(bmc.ports())), 0)
