"""Helpers shared by .ci/ipmi/cli.py (pyghmi's BMC) and .ci/ipmi/sim.py
(OpenIPMI's ipmi_sim): ipmitool against a loopback BMC, waiting for a node's
power state, and the ipmi driver_info for the CLI.

The BMC user is IPMI_USERNAME (default admin), its password IPMI_PASSWORD
(passed to ipmitool through the environment, -E).
"""

import os
import subprocess
import time

from _lib import bm, check

USERNAME = os.environ.get("IPMI_USERNAME", "admin")


def ipmitool(port, *args):
    p = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", port, "-U", USERNAME, "-E",
         "-R", "3", "-N", "1", *args],
        capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"ipmitool {args}: {p.stderr.strip()}")
    return p.stdout


def wait_power(node, want, bound=60):
    started = time.monotonic()
    while True:
        n = bm("node", "show", node)
        if n["target_power_state"] is None and n["reservation"] is None and (
                n["power_state"] == want or n["last_error"]):
            return n
        check(time.monotonic() - started < bound, f"{node}: no {want} in {bound}s: {n}")
        time.sleep(0.2)


def driver_info(port, password, username=USERNAME):
    return ["--driver-info", "ipmi_address=127.0.0.1", "--driver-info", f"ipmi_port={port}",
            "--driver-info", f"ipmi_username={username}",
            "--driver-info", f"ipmi_password={password}"]
