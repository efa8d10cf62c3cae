"""The ipmi hardware type with the real `baremetal` CLI against OpenIPMI's
ipmi_sim (Debian package openipmi).

Run by .ci/ipmi.sh's "sim" part: ipmi_sim listens on 127.0.0.1:IPMI_SIM_PORT
(RMCP+, user IPMI_USERNAME, password IPMI_PASSWORD, cipher suite 3; it has no
suite 17), its chassis is .ci/ipmi/sim-chassis.sh keeping power and boot
device in files under IPMI_SIM_CHASSIS. Every state the CLI reports is
checked against the BMC with ipmitool and against the chassis files.
"""

import os

from _lib import bm, check, expect_eq, ok
from ipmilib import driver_info, ipmitool, wait_power

PORT = os.environ["IPMI_SIM_PORT"]
PASSWORD = os.environ["IPMI_PASSWORD"]
CHASSIS = os.environ["IPMI_SIM_CHASSIS"]
NODE = "ipmi-sim"


def chassis(what):
    with open(os.path.join(CHASSIS, what)) as f:
        return f.read().strip()


n = bm("node", "create", "--driver", "ipmi", "--name", NODE, *driver_info(PORT, PASSWORD),
       "--driver-info", "ipmi_cipher_suite=3")
expect_eq("created power interface", n["power_interface"], "ipmitool")
expect_eq("password masked", n["driver_info"]["ipmi_password"], "******")

v = {i["Interface"]: i for i in bm("node", "validate", NODE)}
expect_eq("validate power", v["power"]["Result"], True)
expect_eq("validate management", v["management"]["Result"], True)

bm("node", "power", "on", NODE, json_out=False)
n = wait_power(NODE, "power on")
expect_eq("power on: last_error", n["last_error"], None)
expect_eq("ipmi_sim after power on", ipmitool(PORT, "power", "status").strip(),
          "Chassis Power is on")
expect_eq("chassis after power on", chassis("power"), "1")
expect_eq("power state (node show --fields)",
          bm("node", "show", NODE, "--fields", "power_state")["power_state"], "power on")

bm("node", "power", "off", NODE, json_out=False)
n = wait_power(NODE, "power off")
expect_eq("power off: last_error", n["last_error"], None)
expect_eq("ipmi_sim after power off", ipmitool(PORT, "power", "status").strip(),
          "Chassis Power is off")
expect_eq("chassis after power off", chassis("power"), "0")
expect_eq("power state (node show --fields)",
          bm("node", "show", NODE, "--fields", "power_state")["power_state"], "power off")

bm("node", "boot", "device", "set", NODE, "pxe", json_out=False)
shown = bm("node", "boot", "device", "show", NODE)
expect_eq("boot device after set pxe", shown["boot_device"], "pxe")
expect_eq("chassis boot device", chassis("boot"), "pxe")
raw = ipmitool(PORT, "chassis", "bootparam", "get", "5")
check("Force PXE" in raw, f"ipmi_sim boot flags: {raw}")
ok("ipmi_sim holds pxe")
ok("ipmi sim: all checks passed")
