"""Node sub-resources with the real clients: management (boot device, NMI),
history, BIOS, firmware, inventory, virtual media, vendor passthru, driver
properties and events, driven by the `baremetal` CLI and openstacksdk against
a fresh `ferric serve` (fake-hardware nodes)."""

import json
import os
import tempfile

from _lib import (bm, bm_fails, check, error_message, expect_eq, expect_error,
                  expect_keys, http, ok, sdk)


def fields(row):
    """A CLI row with its column labels as field names ("Created At" -> created_at)."""
    return {k.lower().replace(" ", "_"): v for k, v in row.items()}


# ----- a node whose verification fails: an ERROR event in its history -------
node = bm("node", "create", "--driver", "fake-hardware", "--name", "nd1",
          "--driver-info", "fake_power_state_error=BMC unreachable")
uuid = node["uuid"]
ok(f"created nd1 {uuid}")
good = bm("node", "create", "--driver", "fake-hardware", "--name", "nd2")

# ----- management: boot device through the CLI and the SDK ------------------
shown = bm("node", "boot", "device", "show", "nd2")
expect_eq("boot device show (fake default)", shown, {"boot_device": "pxe", "persistent": False})
bm("node", "boot", "device", "set", "nd2", "disk", "--persistent", json_out=False)
shown = bm("node", "boot", "device", "show", "nd2")
expect_eq("boot device after set --persistent", shown, {"boot_device": "disk", "persistent": True})
supported = bm("node", "boot", "device", "show", "nd2", "--supported")
expect_eq("supported boot devices (CLI)", supported,
          {"supported_boot_devices": "pxe, disk, cdrom, bios"})
bm_fails("node", "boot", "device", "set", "nd2", "safe",
         contains="Invalid boot device safe specified.")
bm_fails("node", "boot", "device", "show", "missing-node", contains="could not be found")

conn = sdk()
conn.set_node_boot_device("nd2", "cdrom", persistent=False)
expect_eq("sdk get_node_boot_device", conn.get_node_boot_device("nd2"),
          {"boot_device": "cdrom", "persistent": False})
expect_eq("sdk get_node_supported_boot_devices",
          conn.get_node_supported_boot_devices("nd2"),
          {"supported_boot_devices": ["pxe", "disk", "cdrom", "bios"]})
expect_error("boot device without boot_device", "PUT", "/v1/nodes/nd2/management/boot_device",
             400, 'Missing argument: "boot_device"', body={"persistent": True})

# NMI: the fake management interface does not do it (Ironic's fake neither).
bm_fails("node", "inject", "nmi", "nd2",
         contains="Driver fake-hardware does not support inject_nmi (disabled or not implemented).")
try:
    conn.inject_nmi_to_node("nd2")
    check(False, "sdk inject_nmi_to_node should fail")
except Exception as e:  # openstack.exceptions.BadRequestException
    check("does not support inject_nmi" in str(e), f"sdk inject_nmi error: {e}")
    ok("sdk inject_nmi_to_node refused")
expect_error("inject_nmi below 1.29", "PUT", "/v1/nodes/nd2/management/inject_nmi", 404,
             "1.29", version="1.28")

# ----- history ---------------------------------------------------------------
bm("node", "manage", "nd1", json_out=False)
events = []
for _ in range(200):
    events = bm("node", "history", "list", "nd1")
    if events:
        break
    import time
    time.sleep(0.1)
check(len(events) == 1, f"one history event after the failed verification: {events}")
ev = fields(events[0])
expect_keys("history list row (CLI)", ev, ["uuid", "created_at", "severity", "event"])
expect_eq("history severity", ev["severity"], "ERROR")
check("BMC unreachable" in ev["event"], f"history event names the failure: {ev}")
long_rows = bm("node", "history", "list", "nd1", "--long")
row = fields(long_rows[0])
expect_eq("history --long event_type", row["event_type"], "verifying")
expect_eq("history --long conductor", row["conductor"], "clients-conductor")
got = bm("node", "history", "get", "nd1", ev["uuid"])
expect_eq("history get uuid", got["uuid"], ev["uuid"])
expect_eq("history get event", got["event"], ev["event"])
status, _, body = http("GET", f"/v1/nodes/{uuid}/history/{ev['uuid']}", version="1.112")
expect_keys("history event (raw, 1.112)", body,
            ["uuid", "created_at", "severity", "event_type", "event", "conductor", "user", "links"])
status, _, body = http("GET", f"/v1/nodes/{uuid}/history/{ev['uuid']}")
expect_keys("history event (raw, 1.115: project, state fields)", body,
            ["uuid", "created_at", "severity", "event_type", "event", "conductor", "user", "links",
             "project", "state", "target_provision_state", "duration_seconds"])
expect_error("history below 1.78", "GET", "/v1/nodes/nd1/history", 404, "1.78", version="1.77")
expect_error("history bad limit", "GET", "/v1/nodes/nd1/history?limit=0", 400,
             "Limit must be positive")
expect_error("history unknown event", "GET",
             "/v1/nodes/nd1/history/11111111-2222-3333-4444-555555555555", 404,
             "Node history record 11111111-2222-3333-4444-555555555555 could not be found.")
bm_fails("node", "history", "list", "missing-node", contains="could not be found")

# ----- BIOS, firmware, inventory (empty caches of a fake node) --------------
expect_eq("bios setting list (CLI)", bm("node", "bios", "setting", "list", "nd2"), [])
expect_eq("bios setting list --long (CLI)",
          bm("node", "bios", "setting", "list", "nd2", "--long"), [])
bm_fails("node", "bios", "setting", "show", "nd2", "BootMode",
         contains="doesn't have a BIOS setting 'BootMode'")
expect_error("bios detail below 1.74", "GET", "/v1/nodes/nd2/bios?detail=True", 400,
             "Invalid query parameter ?detail=True received.", version="1.73")
expect_error("bios below 1.40", "GET", "/v1/nodes/nd2/bios", 404, "1.40", version="1.39")
expect_eq("firmware list (CLI)", bm("node", "firmware", "list", "nd2"), [])
expect_eq("sdk list_node_firmware", conn.list_node_firmware("nd2"), {"firmware": []})
expect_error("firmware below 1.86", "GET", "/v1/nodes/nd2/firmware", 404, "1.86", version="1.85")
bm_fails("node", "inventory", "save", "nd2",
         contains=f"Node inventory record for node {good['uuid']} could not be found.")
expect_error("inventory below 1.81", "GET", "/v1/nodes/nd2/inventory", 404, "1.81",
             version="1.80")

# ----- virtual media: accepted, fails as the node's action (fake driver) ----
# (python-ironicclient has no vmedia command; openstacksdk has.)
conn.attach_vmedia_to_node("nd2", "cdrom", "http://example.com/boot.iso")
n = bm("node", "show", "nd2")
expect_eq("sdk attach_vmedia_to_node: last_error", n["last_error"],
          f"Could not attach device cdrom to node {good['uuid']}: Driver fake-hardware does not "
          "support attach_virtual_media (disabled or not implemented).")
try:
    conn.attach_vmedia_to_node("nd2", "tape", "http://example.com/boot.iso")
    check(False, "sdk attach_vmedia_to_node(tape) should fail")
except Exception as e:
    check("'tape' is not one of ['disk', 'cdrom', 'floppy']" in str(e), f"sdk vmedia error: {e}")
    ok("sdk attach_vmedia_to_node(tape) refused")
expect_error("vmedia bad scheme", "POST", "/v1/nodes/nd2/vmedia", 400,
             "Unsupported or missing URL scheme: ftp",
             body={"device_type": "cdrom", "image_url": "ftp://x/y.iso"})
expect_error("vmedia get (fake driver)", "GET", "/v1/nodes/nd2/vmedia", 400,
             "Driver fake-hardware does not support get_virtual_media")
conn.detach_vmedia_from_node("nd2", ["cdrom"])
last = bm("node", "show", "nd2")["last_error"]
check(last.startswith("Could not detach device(s) ['cdrom']"),
      f"sdk detach_vmedia_from_node recorded the failure: {last!r}")
ok("sdk detach_vmedia_from_node accepted")
rows = [fields(r) for r in bm("node", "history", "list", "nd2")]
expect_eq("vmedia failures in the history", [r["severity"] for r in rows], ["ERROR", "ERROR"])

# ----- vendor passthru, driver properties -----------------------------------
expect_eq("node passthru list (CLI)", bm("node", "passthru", "list", "nd2"), [])
bm_fails("node", "passthru", "call", "nd2", "reset_bmc", contains="No handler for method reset_bmc")
expect_eq("sdk list_node_vendor_passthru", conn.list_node_vendor_passthru("nd2"), {})
expect_eq("driver passthru list (CLI)", bm("driver", "passthru", "list", "redfish"), [])
expect_eq("sdk list_driver_vendor_passthru", conn.list_driver_vendor_passthru("redfish"), {})
bm_fails("driver", "passthru", "call", "redfish", "lookup", contains="No handler for method lookup")
props = {r["property"]: r["description"] for r in bm("driver", "property", "list", "redfish")}
# Ironic lists the keys of every default interface: redfish power and
# management, the direct deploy (agent_verify_ca) and the ipxe boot's images.
expect_eq("redfish properties", sorted(props),
          ["agent_verify_ca", "deploy_kernel", "deploy_ramdisk", "kernel_append_params",
           "redfish_address", "redfish_password", "redfish_system_id", "redfish_username",
           "redfish_verify_ca", "rescue_kernel", "rescue_ramdisk"])
check(props["redfish_address"].startswith("Required."), "redfish_address is required")
bm_fails("driver", "property", "list", "ipmi",
         contains="Could not find the following driver(s) or hardware type(s): ipmi.")
drv = conn.get_driver("redfish")
check(drv.name == "redfish", f"sdk get_driver: {drv}")
ok("sdk get_driver(redfish)")

# ----- events ----------------------------------------------------------------
event = {"event": "network.bind_port", "port_id": "11111111-2222-3333-4444-555555555555",
         "mac_address": "52:54:00:12:34:56", "status": "ACTIVE"}
status, _, body = http("POST", "/v1/events", {"events": [event]})
expect_eq("POST /v1/events", (status, body), (204, None))
expect_error("events below 1.54", "POST", "/v1/events", 404, "1.54",
             body={"events": [event]}, version="1.53")
expect_error("event with a bad MAC", "POST", "/v1/events", 400,
             "Schema error: 'zz' is not a 'mac-address'",
             body={"events": [dict(event, mac_address="zz")]})

# ----- deleting the node takes its history ----------------------------------
bm("node", "delete", "nd1", json_out=False)
again = bm("node", "create", "--driver", "fake-hardware", "--name", "nd1")
expect_eq("history of a re-created node", bm("node", "history", "list", "nd1"), [])
print("node_data: all checks passed")
