#!/usr/bin/env python3
"""Run the real ironic-python-agent confined to ONE loop device (issue 14).

Confinement (a) of two; (b) is .ci/agent/confine.sh, the private mount and
PID namespaces whose /dev holds only the loop device. This launcher refuses to
start (exit 2, before importing the agent's main) unless:

* /dev contains only the allowed nodes: null, zero, random, urandom, the
  fd/stdin/stdout/stderr links, shm, and FERRIC_E2E_LOOP with its
  partitions (loopNpK), and /dev is a tmpfs in a mount namespace other
  than PID 1's;
* the power commands on PATH are the test's refusing fakes.

Then it patches the agent so that every block-device listing can only
return that loop device (and its partitions):

* the module-level ``hardware.list_all_block_devices`` (the generic
  manager's ``list_block_devices`` and other modules call it);
* the hardware managers: stevedore's discovery is replaced by ONE manager,
  ``ConfinedHardwareManager`` (a GenericHardwareManager subclass with the
  highest support), so ``dispatch_to_all_managers`` cannot reach an
  unconfined GenericHardwareManager; its ``list_block_devices`` and
  ``list_network_interfaces`` return only the loop device and one fake NIC
  with the MAC the test registered as the node's port;
* the generic manager's start-up work on the host (iSCSI, software RAID
  assembly, IPMI and multipath kernel modules) and the virtual-media
  config copy are no-ops; BMC discovery returns nothing.

Environment: FERRIC_E2E_LOOP (/dev/loopN), FERRIC_E2E_MAC, FERRIC_E2E_FAKEBIN
(directory of the refusing power commands), FERRIC_E2E_IPA_CONF (the
agent's oslo config file), FERRIC_E2E_HOST_MNTNS (the caller's mount
namespace, `readlink /proc/self/ns/mnt`).
"""

import os
import re
import shutil
import stat
import sys

LOOP = os.environ.get("FERRIC_E2E_LOOP", "")
MAC = os.environ.get("FERRIC_E2E_MAC", "")
FAKEBIN = os.environ.get("FERRIC_E2E_FAKEBIN", "")
IPA_CONF = os.environ.get("FERRIC_E2E_IPA_CONF", "")

ALLOWED_DEV = {"null", "zero", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm"}
POWER_COMMANDS = ("poweroff", "reboot", "shutdown", "systemctl", "halt")


def refuse(why):
    print(f"ipa_launcher: REFUSING TO START: {why}", file=sys.stderr, flush=True)
    sys.exit(2)


def loop_name():
    m = re.fullmatch(r"/dev/(loop[0-9]+)", LOOP)
    if not m:
        refuse(f"FERRIC_E2E_LOOP={LOOP!r} is not /dev/loopN")
    return m.group(1)


def check_confinement():
    name = loop_name()
    part = re.compile(re.escape(name) + r"p[0-9]+")
    extra = sorted(n for n in os.listdir("/dev") if n not in ALLOWED_DEV and n != name and not part.fullmatch(n))
    if extra:
        refuse(f"/dev holds more than the loop device: {extra[:20]}")
    if not stat.S_ISBLK(os.stat(LOOP).st_mode):
        refuse(f"{LOOP} is not a block device")
    if os.major(os.stat(LOOP).st_rdev) != 7:
        refuse(f"{LOOP} is not a loop device (major {os.major(os.stat(LOOP).st_rdev)})")
    own_ns = os.readlink("/proc/self/ns/mnt")
    host_ns = os.environ.get("FERRIC_E2E_HOST_MNTNS", "")
    if not re.fullmatch(r"mnt:\[[0-9]+\]", host_ns):
        refuse("FERRIC_E2E_HOST_MNTNS (the caller's mount namespace) is not set")
    if own_ns == host_ns:
        refuse("not in a private mount namespace")
    dev_fs = None
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "/dev":
                dev_fs = fields[2]
    if dev_fs != "tmpfs":
        refuse(f"/dev is {dev_fs}, not the test's tmpfs")
    if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", MAC):
        refuse(f"FERRIC_E2E_MAC={MAC!r} is not a MAC address")
    for cmd in POWER_COMMANDS:
        found = shutil.which(cmd)
        if not found or os.path.dirname(os.path.abspath(found)) != os.path.abspath(FAKEBIN):
            refuse(f"{cmd} on PATH is {found!r}, not the refusing fake in {FAKEBIN!r}")
    if not os.path.isfile(IPA_CONF):
        refuse(f"no agent config file {IPA_CONF!r}")
    return name


def sysfs_size(kname):
    with open(f"/sys/class/block/{kname}/size") as f:
        return int(f.read().strip()) * 512


def main():
    name = check_confinement()

    # cmd.agent imports the agent's config (its options) before the rest.
    from ironic_python_agent.cmd import agent as cmd_agent
    from ironic_python_agent import hardware
    from ironic_python_agent import utils as ipa_utils

    part_re = re.compile(re.escape(name) + r"p([0-9]+)")

    def device(kname, all_serial_and_wwn):
        serial = f"ferric-e2e-{kname}"
        return hardware.BlockDevice(
            name=f"/dev/{kname}", model="ferric-e2e loop", size=sysfs_size(kname),
            rotational=False, vendor="ferric",
            serial=[serial] if all_serial_and_wwn else serial,
            wwn=[None] if all_serial_and_wwn else None,
            logical_sectors=512, physical_sectors=512, tran=None)

    def confined_list_all_block_devices(block_type="disk", ignore_raid=False, ignore_floppy=True,
                                        ignore_empty=True, ignore_multipath=False,
                                        all_serial_and_wwn=False):
        types = {block_type} if isinstance(block_type, str) else set(block_type)
        devices = []
        if "disk" in types:
            devices.append(device(name, all_serial_and_wwn))
        if "part" in types:
            parts = sorted((int(m.group(1)), m.group(0)) for m in
                           (part_re.fullmatch(e) for e in os.listdir(f"/sys/block/{name}")) if m)
            devices.extend(device(p, all_serial_and_wwn) for _, p in parts)
        return devices

    def nothing(*_args, **_kwargs):
        return None

    class ConfinedHardwareManager(hardware.GenericHardwareManager):
        """The generic manager, seeing only the loop device and one NIC."""

        def evaluate_hardware_support(self):
            return hardware.HardwareSupport.SERVICE_PROVIDER + 100

        def initialize(self):
            hardware.MULTIPATH_ENABLED = False
            self.wait_for_disks()

        def list_block_devices(self, include_partitions=False, all_serial_and_wwn=False):
            devices = confined_list_all_block_devices(all_serial_and_wwn=all_serial_and_wwn)
            if include_partitions:
                devices.extend(confined_list_all_block_devices(block_type="part"))
            return devices

        def list_network_interfaces(self):
            return [hardware.NetworkInterface("ferric-e2e0", MAC, ipv4_address="127.0.0.1",
                                              has_carrier=True)]

        def get_bmc_address(self):
            return None

        def get_bmc_v6address(self):
            return None

        def get_bmc_mac(self):
            return None

    class Extension:
        def __init__(self, obj):
            self.obj = obj
            self.name = "ferric_e2e_confined"
            self.entry_point_target = "ipa_launcher:ConfinedHardwareManager"

    hardware.list_all_block_devices = confined_list_all_block_devices
    hardware._get_extensions = lambda: [Extension(ConfinedHardwareManager())]
    hardware._global_managers = None
    for fn in ("_check_for_iscsi", "_md_scan_and_assemble", "_load_ipmi_modules",
               "_load_multipath_modules", "_enable_multipath"):
        setattr(hardware, fn, nothing)
    hardware.MULTIPATH_ENABLED = False
    ipa_utils.copy_config_from_vmedia = nothing

    # The patches are in place: prove it before the agent starts.
    listed = [d.name for d in hardware.list_all_block_devices()]
    managers = [type(e.obj).__name__ for e in hardware._get_extensions()]
    if listed != [LOOP] or managers != ["ConfinedHardwareManager"]:
        refuse(f"confinement self-check failed: disks {listed}, managers {managers}")
    print(f"ipa_launcher: confined to {LOOP} (managers {managers}), MAC {MAC}", flush=True)

    sys.argv = ["ironic-python-agent", "--config-file", IPA_CONF]
    cmd_agent.run()


if __name__ == "__main__":
    main()
