"""VIFs, boot mode, secure boot, console, target RAID config and chassis
membership with the real `baremetal` CLI and openstacksdk, plus negative
cases (unknown node 404, bad input 400, VIF attached twice 409, too-old
microversion 404/406)."""

import json

from _lib import bm, bm_fails, check, expect_eq, expect_error, http, ok, sdk

# ----- chassis membership ---------------------------------------------------
c = bm("chassis", "create", "--description", "rack")["uuid"]
n = bm("node", "create", "--driver", "fake-hardware", "--name", "ns1",
       "--chassis-uuid", c, "--network-interface", "flat")
expect_eq("cli node create --chassis-uuid", n["chassis_uuid"], c)
bm("node", "create", "--driver", "fake-hardware", "--name", "ns2")
expect_eq("cli node list --chassis", [x["name"] for x in bm("node", "list", "--chassis", c)], ["ns1"])
_, _, doc = http("GET", f"/v1/chassis/{c}/nodes")
expect_eq("http chassis nodes", [x["name"] for x in doc["nodes"]], ["ns1"])
bm_fails("node", "create", "--driver", "fake-hardware", "--chassis-uuid",
         "00000000-0000-0000-0000-0000000000cc",
         contains="Chassis 00000000-0000-0000-0000-0000000000cc could not be found.")
ok("cli node create with an unknown chassis refused")
bm_fails("chassis", "delete", c, contains="contains nodes")
ok("cli chassis delete refused while it has nodes")
expect_error("node list of an unknown chassis", "GET",
             "/v1/nodes?chassis_uuid=00000000-0000-0000-0000-0000000000cc", 404,
             "Chassis 00000000-0000-0000-0000-0000000000cc could not be found.")

conn = sdk()
conn.patch_node("ns2", [{"op": "add", "path": "/chassis_uuid", "value": c}])
expect_eq("sdk patch chassis_uuid", conn.get_node("ns2").chassis_id, c)
expect_eq("sdk nodes(chassis_uuid)", sorted(x.name for x in conn.nodes(chassis_uuid=c)), ["ns1", "ns2"])
conn.patch_node("ns2", [{"op": "remove", "path": "/chassis_uuid"}])
expect_eq("sdk remove chassis_uuid", conn.get_node("ns2").chassis_id, None)

# ----- VIFs (flat network interface) ----------------------------------------
node = bm("node", "show", "ns1")["uuid"]
p1 = bm("port", "create", "52:54:00:00:10:01", "--node", node, "--pxe-enabled", "false")["uuid"]
p2 = bm("port", "create", "52:54:00:00:10:02", "--node", node)["uuid"]
bm("node", "vif", "attach", "ns1", "vif-a", json_out=False)
expect_eq("cli vif list", [v.get("ID", v.get("id")) for v in bm("node", "vif", "list", "ns1")], ["vif-a"])
expect_eq("vif on the PXE-enabled port", bm("port", "show", p2)["internal_info"], {"tenant_vif_port_id": "vif-a"})
bm_fails("node", "vif", "attach", "ns1", "vif-a", contains="is already attached to Ironic Port")
ok("cli vif attached twice refused (409)")
bm("node", "vif", "attach", "ns1", "vif-b", "--port-uuid", p1, json_out=False)
bm_fails("node", "vif", "attach", "ns1", "vif-c", contains="not enough free physical ports")
ok("cli vif attach without a free port refused")
bm("node", "vif", "detach", "ns1", "vif-a", json_out=False)
bm_fails("node", "vif", "detach", "ns1", "vif-a", contains="because it is not attached to it")
ok("cli vif detach of a detached VIF refused")

conn.attach_vif_to_node("ns1", "vif-s", retry_on_conflict=False)
expect_eq("sdk list_node_vifs", sorted(conn.list_node_vifs("ns1")), ["vif-b", "vif-s"])
conn.detach_vif_from_node("ns1", "vif-s", ignore_missing=False)
expect_eq("sdk detach_vif_from_node", conn.list_node_vifs("ns1"), ["vif-b"])
expect_eq("sdk detach missing (ignored)", conn.detach_vif_from_node("ns1", "vif-s"), False)
expect_error("vifs need 1.28", "GET", "/v1/nodes/ns1/vifs", 404, "1.28", version="1.27")
expect_error("vif of an unknown node", "GET", "/v1/nodes/nope/vifs", 404, "nope could not be found")
expect_error("vif without id", "POST", "/v1/nodes/ns1/vifs", 400, "'id' is a required property", {})
expect_error("vif port and portgroup", "POST", "/v1/nodes/ns1/vifs", 400,
             "Cannot specify both port_uuid and portgroup_uuid",
             {"id": "x", "port_uuid": p1, "portgroup_uuid": p1})

# ----- boot mode, secure boot (fake management cannot: last_error) ----------
def settle(what, cond):
    import time
    for _ in range(200):
        shown = bm("node", "show", "ns2")
        if cond(shown):
            return shown
        time.sleep(0.05)
    check(False, f"{what}: never settled: {shown!r}")


bm("node", "boot", "mode", "set", "ns2", "uefi", json_out=False)
shown = settle("boot mode", lambda s: s["last_error"])
check("does not support set_boot_mode" in shown["last_error"], f"boot mode last_error: {shown['last_error']!r}")
ok("cli boot mode set: fake management refuses in the background, as Ironic's")
bm("node", "secure", "boot", "on", "ns2", json_out=False)
shown = settle("secure boot", lambda s: "secure_boot" in (s["last_error"] or ""))
ok(f"cli secure boot on: {shown['last_error']!r}")
conn.set_node_boot_mode("ns2", "bios")
conn.set_node_secure_boot("ns2", False)
ok("sdk set_node_boot_mode / set_node_secure_boot accepted")
expect_error("bad boot mode", "PUT", "/v1/nodes/ns2/states/boot_mode", 400,
             "Invalid boot mode efi requested for node", {"target": "efi"})
expect_error("boot mode needs 1.76", "PUT", "/v1/nodes/ns2/states/boot_mode", 404,
             "starting with the API version 1.76", {"target": "uefi"}, version="1.75")

# ----- console --------------------------------------------------------------
bm("node", "set", "ns2", "--console-interface", "fake", json_out=False)
bm("node", "console", "enable", "ns2", json_out=False)
settle("console on", lambda s: s["console_enabled"])
expect_eq("cli console show", bm("node", "console", "show", "ns2"),
          {"console_enabled": True, "console_info": {}})
bm("node", "console", "disable", "ns2", json_out=False)
settle("console off", lambda s: not s["console_enabled"])
conn.enable_node_console("ns2")
settle("sdk console on", lambda s: s["console_enabled"])
expect_eq("sdk get_node_console", conn.get_node_console("ns2")["console_enabled"], True)
conn.disable_node_console("ns2")
settle("sdk console off", lambda s: not s["console_enabled"])
bm("node", "set", "ns1", "--console-interface", "no-console", json_out=False)
bm_fails("node", "console", "enable", "ns1", contains="does not support console")
ok("cli console enable refused by no-console")

# ----- target RAID config ---------------------------------------------------
raid = {"logical_disks": [{"raid_level": "1", "size_gb": 100, "is_root_volume": True}]}
bm("node", "set", "ns2", "--raid-interface", "fake", json_out=False)
bm("node", "set", "ns2", "--target-raid-config", json.dumps(raid), json_out=False)
expect_eq("cli target raid config", bm("node", "show", "ns2")["target_raid_config"], raid)
bm_fails("node", "set", "ns2", "--target-raid-config", json.dumps({"logical_disks": [{"raid_level": "7", "size_gb": 1}]}),
         contains="RAID config validation error")
ok("cli bad target raid config refused")
expect_error("raid needs 1.12", "PUT", "/v1/nodes/ns2/states/raid", 406, "not acceptable", raid, version="1.11")
bm("node", "set", "ns1", "--raid-interface", "no-raid", json_out=False)
expect_error("raid without a raid interface", "PUT", "/v1/nodes/ns1/states/raid", 404,
             "does not support raid", raid)
_, _, states = http("GET", "/v1/nodes/ns2/states")
expect_eq("states: target_raid_config", states["target_raid_config"], raid)
check({"boot_mode", "secure_boot", "console_enabled", "raid_config"} <= set(states), f"states fields: {states!r}")
ok("states document fields")
