"""The ipmi hardware type with the real `baremetal` CLI against `ferric serve`.

Run by .ci/ipmi.sh: ferric serves with the ipmi type enabled; two BMCs
(.ci/ipmi/fakebmc.py, pyghmi) listen on IPMI_PORT (power changes show 1 s
late) and IPMI_PORT2. Every state the CLI reports is checked against the
BMC itself with `ipmitool` (IPMI_PASSWORD in the environment, -E).
"""

import os

from _lib import bm, check, expect_eq, ok
from ipmilib import driver_info, ipmitool, wait_power

PORT = os.environ["IPMI_PORT"]
PORT2 = os.environ["IPMI_PORT2"]
PASSWORD = os.environ["IPMI_PASSWORD"]


n = bm("node", "create", "--driver", "ipmi", "--name", "ipmi-cli", *driver_info(PORT, PASSWORD))
expect_eq("created power interface", n["power_interface"], "ipmitool")
expect_eq("created management interface", n["management_interface"], "ipmitool")
expect_eq("password masked", n["driver_info"]["ipmi_password"], "******")
check(PASSWORD not in str(n), "password shown by node create")

v = {i["Interface"]: i for i in bm("node", "validate", "ipmi-cli")}
expect_eq("validate power", v["power"]["Result"], True)
expect_eq("validate management", v["management"]["Result"], True)

bm("node", "power", "on", "ipmi-cli", json_out=False)
n = wait_power("ipmi-cli", "power on")
expect_eq("power on: last_error", n["last_error"], None)
expect_eq("BMC after power on", ipmitool(PORT, "power", "status").strip(), "Chassis Power is on")

bm("node", "power", "off", "ipmi-cli", json_out=False)
n = wait_power("ipmi-cli", "power off")
expect_eq("power off: last_error", n["last_error"], None)
expect_eq("BMC after power off", ipmitool(PORT, "power", "status").strip(), "Chassis Power is off")

bm("node", "reboot", "ipmi-cli", json_out=False)
n = wait_power("ipmi-cli", "power on")
expect_eq("reboot: last_error", n["last_error"], None)
expect_eq("BMC after reboot", ipmitool(PORT, "power", "status").strip(), "Chassis Power is on")
expect_eq("power state (node show --fields)",
          bm("node", "show", "ipmi-cli", "--fields", "power_state")["power_state"], "power on")

supported = bm("node", "boot", "device", "show", "--supported", "ipmi-cli")
# The CLI prints the list joined with ", ".
expect_eq("supported boot devices", supported["supported_boot_devices"],
          "pxe, disk, cdrom, bios, safe")

bm("node", "boot", "device", "set", "--persistent", "ipmi-cli", "pxe", json_out=False)
expect_eq("boot device after set pxe --persistent",
          bm("node", "boot", "device", "show", "ipmi-cli"),
          {"boot_device": "pxe", "persistent": True})
raw = ipmitool(PORT, "chassis", "bootparam", "get", "5")
check("Options apply to all future boots" in raw and "Force PXE" in raw, f"BMC flags: {raw}")
ok("BMC holds pxe, persistent")

bm("node", "boot", "device", "set", "ipmi-cli", "cdrom", json_out=False)
expect_eq("boot device after set cdrom (one-time)",
          bm("node", "boot", "device", "show", "ipmi-cli"),
          {"boot_device": "cdrom", "persistent": False})
raw = ipmitool(PORT, "chassis", "bootparam", "get", "5")
check("Options apply to only next boot" in raw and "CD/DVD" in raw, f"BMC flags: {raw}")
ok("BMC holds cdrom, next boot only")

bm("node", "boot", "device", "set", "ipmi-cli", "safe", json_out=False)
expect_eq("boot device after set safe",
          bm("node", "boot", "device", "show", "ipmi-cli")["boot_device"], "safe")

# A second node on another BMC with the wrong password: a clean last_error
# within command_retry_timeout, without the secret.
bm("node", "create", "--driver", "ipmi", "--name", "ipmi-wrong",
   *driver_info(PORT2, "not-the-password-42"))
bm("node", "power", "on", "ipmi-wrong", json_out=False)
n = wait_power("ipmi-wrong", "power on")
err = n["last_error"] or ""
check(err.startswith("Failed to change power state to 'power on': IPMI call failed: power on."),
      f"wrong password last_error: {n}")
check("not-the-password-42" not in err, "password in last_error")
ok(f"wrong password fails cleanly: {err}")

# Bad driver_info: validate names the problem with Ironic's text.
bm("node", "create", "--driver", "ipmi", "--name", "ipmi-bad",
   "--driver-info", "ipmi_address=127.0.0.1", "--driver-info", "ipmi_bridging=triple")
v = {i["Interface"]: i for i in bm("node", "validate", "ipmi-bad")}
expect_eq("validate bad bridging", v["power"]["Result"], False)
check("Invalid value for ipmi_bridging: triple" in (v["power"]["Reason"] or ""), str(v["power"]))
ok("ipmi cli: all checks passed")
