#!/usr/bin/env python3
"""The agent deploy end to end (issue 14): `ferric serve`, the real
ironic-python-agent 13.0.0 confined to one loop device, the real `baremetal`
CLI. Run by .ci/agent.sh (which creates and detaches the loop device); one
run per database engine.

The test plays the BMC of a `fake-hardware` node: it starts the agent when
the node waits for its ramdisk (`wait call-back` / `clean wait`) and kills
it when ferric has powered the node off to boot the instance (deploy step
`boot_instance`) or the node leaves the agent states. A new agent process looks up again and gets a new token.

Lifecycle (CLI): node create (direct deploy, root device hint = the loop
device), port create (the agent's MAC), manage, provide (automated
cleaning through the agent), deploy --wait --config-drive -> active (the
loop device holds the image, a config-2 partition holds the user data),
undeploy --wait -> cleaning through the agent -> available (partition table
gone). Negatives: a checksum mismatch fails the deploy with the agent's
message; an agent killed in the middle of the image download leaves the
node waiting, a heartbeat with a wrong token then is refused and changes
nothing, and the call-back timeout fails the deploy.

Prints one JSON line `E2E-RESULT {...}` with the measured times.
"""

import hashlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FERRIC = os.environ["FERRIC_BIN"]
IPA_PYTHON = os.environ["IPA_PYTHON"]
BAREMETAL = os.environ["BAREMETAL"]
WORK = os.environ["E2E_WORK"]
LOOP = os.environ["E2E_LOOP"]
BACKING = os.environ["E2E_BACKING"]
DB_URL = os.environ["E2E_DB_URL"]
ENGINE = os.environ["E2E_ENGINE"]
MAC = "52:54:00:fe:14:01"
NODE = "e2e-node"
IMAGE_MIB = 32
USER_DATA = "#!/bin/sh\necho ferric-agent-e2e user data\n"
AGENT_STATES = {"deploying", "wait call-back", "cleaning", "clean wait"}
WAIT_STATES = {"wait call-back", "clean wait"}
# Deploy steps after the agent's work: ferric has powered the node off
# (tear_down_agent) and boots the instance.
POST_AGENT_STEPS = {"boot_instance"}
PHASE_LIMIT = 240  # seconds: every wait below ends by then
HOST_MNTNS = os.readlink("/proc/self/ns/mnt")
# Private mount and PID namespaces (own /proc) for the agent.
UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private"]

T0 = time.monotonic()
procs = {}


def log(msg):
    print(f"[{ENGINE} +{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def fail(msg):
    log(f"ASSERTION FAILED: {msg}")
    raise SystemExit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    log(f"ok: {msg}")


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, **kw)


def start(name, cmd, logfile, env=None):
    """Start `cmd` in its own session (stopped by its process group id)."""
    f = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env)
    procs[name] = p
    return p


def stop(name, sig=signal.SIGTERM, grace=10.0):
    p = procs.pop(name, None)
    if p is None:
        return
    for s, wait in ((sig, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, s)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----- ferric and the CLI ------------------------------------------------------

def http(method, path, body=None, version="1.68"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("X-OpenStack-Ironic-API-Version", version)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def node():
    status, body = http("GET", f"/v1/nodes/{NODE}", version="latest")
    if status != 200:
        fail(f"GET node: {status} {body}")
    return body


def bm(*args, check_rc=True, timeout=PHASE_LIMIT):
    cmd = [BAREMETAL, "--max-retries", "0", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=CLI_ENV)
    if check_rc and p.returncode != 0:
        fail(f"baremetal {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def wait_state(states, limit=PHASE_LIMIT):
    until = time.monotonic() + limit
    while True:
        n = node()
        if n["provision_state"] in states and n["reservation"] is None:
            return n
        if time.monotonic() > until:
            fail(f"node never reached {states}: {n['provision_state']} {n['last_error']}")
        time.sleep(0.2)


# ----- the BMC: the agent's lifecycle -----------------------------------------

class Bmc:
    """Boots the 'ramdisk' (starts the confined agent) when the node waits
    for it powered on; 'powers off' (kills it) when ferric powers the node
    off or the node leaves the agent states."""

    def __init__(self, ipa_port):
        self.ipa_port = ipa_port
        self.autostart = True
        self.runs = 0
        self.stop_flag = threading.Event()
        self.error = None
        self.last_seen = None
        self.seen_at = []  # (monotonic time, provision state) of every change
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def running(self):
        p = procs.get("ipa")
        return p is not None and p.poll() is None

    def boot(self):
        self.runs += 1
        logfile = os.path.join(WORK, f"ipa-{self.runs}.log")
        env = dict(os.environ)
        tmpdir = os.path.join(WORK, f"ipa-{self.runs}.tmp")
        os.makedirs(tmpdir)
        env.update({
            "TMPDIR": tmpdir,  # where the agent downloads images (not the host's /tmp)
            "PATH": f"{FAKEBIN}:{os.path.dirname(IPA_PYTHON)}:/usr/sbin:/usr/bin:/sbin:/bin",
            "FERRIC_E2E_LOOP": LOOP,
            "FERRIC_E2E_BACKING": BACKING,
            "FERRIC_E2E_MAC": MAC,
            "FERRIC_E2E_FAKEBIN": FAKEBIN,
            "FERRIC_E2E_IPA_CONF": IPA_CONF,
            "FERRIC_E2E_HOST_MNTNS": HOST_MNTNS,
        })
        cmd = UNSHARE + [
               os.path.join(HERE, "confine.sh"), LOOP, str(PHASE_LIMIT * 2),
               IPA_PYTHON, os.path.join(HERE, "ipa_launcher.py")]
        start("ipa", cmd, logfile, env=env)
        log(f"bmc: agent run {self.runs} started (pid {procs['ipa'].pid}, log {logfile})")

    def kill(self, why):
        if "ipa" in procs:
            stop("ipa", signal.SIGKILL)
            log(f"bmc: agent killed ({why})")

    def loop(self):
        try:
            while not self.stop_flag.wait(0.2):
                status, n = http("GET", f"/v1/nodes/{NODE}", version="latest")
                if status == 404:
                    continue  # not enrolled yet
                if status != 200:
                    raise RuntimeError(f"bmc: GET node: {status} {n}")
                state, power = n["provision_state"], n["power_state"]
                step = (n.get("deploy_step") or {}).get("step") or (n.get("clean_step") or {}).get("step")
                seen = (state, power, step)
                if seen != self.last_seen:
                    log(f"bmc: node {state}, {power}, step {step}")
                    self.last_seen = seen
                    self.seen_at.append((time.monotonic(), state))
                # ferric's power actions in the agent flows go straight to
                # the (fake) BMC, so `power_state` may lag: the phase is read
                # from the provision state and the deploy step instead.
                after_agent = step in POST_AGENT_STEPS
                if "ipa" in procs and (state not in AGENT_STATES or after_agent):
                    self.kill(f"node {state}, {power}, step {step}")
                elif "ipa" in procs and not self.running():
                    log(f"bmc: the agent exited by itself (rc {procs['ipa'].returncode})")
                    procs.pop("ipa")
                elif (self.autostart and "ipa" not in procs and state in WAIT_STATES
                      and not after_agent):
                    self.boot()
        except BaseException as e:  # reported by the main thread
            self.error = e


# ----- the image and the disk -------------------------------------------------

def make_raw(path, seed):
    """IMAGE_MIB of a seeded pattern with an MBR and one partition."""
    with open(path, "wb") as f:
        f.write(random.Random(seed).randbytes(IMAGE_MIB * 1024 * 1024))
    run("parted", "-s", path, "mklabel", "msdos", "mkpart", "primary", "1MiB", f"{IMAGE_MIB - 1}MiB")
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_image():
    raw = os.path.join(WORK, "image.raw")
    make_raw(raw, 14)
    qcow2 = os.path.join(IMAGES, "image.qcow2")
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    converted = os.path.join(WORK, "image.converted.raw")
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2, converted)
    with open(qcow2, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return qcow2, converted, digest


def read_loop(offset, length):
    with open(LOOP, "rb") as f:
        f.seek(offset)
        return f.read(length)


def mbr_entries(sector):
    entries = []
    for i in range(4):
        e = sector[446 + 16 * i: 446 + 16 * (i + 1)]
        ptype = e[4]
        start, count = struct.unpack("<II", e[8:16])
        if ptype:
            entries.append((i + 1, ptype, start, count))
    return entries


def check_deployed(converted):
    with open(converted, "rb") as f:
        want = f.read()
    got = read_loop(0, len(want))
    check(got[:446] == want[:446] and got[510:] == want[510:],
          f"the loop device's first {len(want)} bytes are the image (qemu-img convert -O raw), "
          "outside the partition table")
    check(got[446:462] == want[446:462], "the image's own partition entry is intact")
    entries = mbr_entries(got[:512])
    extra = [e for e in entries if e[0] != 1]
    check(len(extra) == 1, f"one partition added after the image's: {entries}")
    _, _, start, count = extra[0]
    iso = os.path.join(WORK, "configdrive.iso")
    with open(iso, "wb") as f:
        f.write(read_loop(start * 512, count * 512))
    label = run("blkid", "-p", "-o", "value", "-s", "LABEL", iso).stdout.strip()
    check(label == "config-2", f"the added partition is labelled config-2 (got {label!r})")
    out = os.path.join(WORK, "user_data")
    run("xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/openstack/latest/user_data", out)
    with open(out) as f:
        check(f.read() == USER_DATA, "the config drive holds the user_data given to the CLI")


def check_cleaned():
    head = read_loop(0, 33 * 512)
    check(head == bytes(len(head)), "cleaning wiped the partition table (first 33 sectors zero)")
    p = subprocess.run(["blkid", "-p", LOOP], capture_output=True, text=True)
    check(p.returncode != 0 or "PTTYPE" not in p.stdout, f"blkid finds no partition table: {p.stdout.strip()}")


# ----- the run ----------------------------------------------------------------

def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_file(path, proc_name, limit=30):
    until = time.monotonic() + limit
    while not os.path.exists(path):
        if procs[proc_name].poll() is not None:
            fail(f"{proc_name} exited early")
        if time.monotonic() > until:
            fail(f"{proc_name} did not write {path}")
        time.sleep(0.1)
    with open(path) as f:
        return f.read().strip()


def self_checks():
    """Both confinements refuse to run without the other (and without a
    namespace at all)."""
    env = dict(os.environ, FERRIC_E2E_LOOP=LOOP, FERRIC_E2E_MAC=MAC, FERRIC_E2E_FAKEBIN=FAKEBIN,
               FERRIC_E2E_IPA_CONF=IPA_CONF, FERRIC_E2E_BACKING=BACKING,
               FERRIC_E2E_HOST_MNTNS=HOST_MNTNS)
    p = subprocess.run([IPA_PYTHON, os.path.join(HERE, "ipa_launcher.py")], env=env,
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 2 and "REFUSING" in p.stderr,
          f"the launcher refuses to start outside the confined /dev: {p.stderr.strip()[:160]}")
    # --check: the same checks, and nothing is mounted even if they were wrong.
    p = subprocess.run([os.path.join(HERE, "confine.sh"), "--check", LOOP, "5", "true"], env=env,
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 2 and "REFUSING" in p.stderr,
          f"confine.sh refuses to run outside private namespaces: {p.stderr.strip()}")
    probe = ("import os; d = sorted(os.listdir('/dev')); print(' '.join(d))")
    p = subprocess.run(UNSHARE + [os.path.join(HERE, "confine.sh"), LOOP, "5", IPA_PYTHON, "-c", probe],
                       env=env, capture_output=True, text=True, timeout=60)
    name = os.path.basename(LOOP)
    seen = set(p.stdout.split())
    allowed = {"null", "zero", "random", "urandom", "fd", "stdin", "stdout", "stderr", "shm", name}
    check(p.returncode == 0 and name in seen
          and all(x in allowed or x.startswith(name + "p") for x in seen),
          f"inside the namespace /dev holds only {sorted(seen)}")
    with open("/proc/self/mounts") as f:
        check(not any("ferric-e2e" in line for line in f), "nothing mounted leaked to the host")


def raw_limit(qcow2):
    """The physical limit: qemu-img convert -O raw + dd onto the loop device."""
    tmp = os.path.join(WORK, "limit.raw")
    t = time.monotonic()
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2, tmp)
    run("dd", f"if={tmp}", f"of={LOOP}", "bs=4M", "oflag=direct", "conv=fsync", "status=none")
    took = time.monotonic() - t
    os.unlink(tmp)
    run("dd", "if=/dev/zero", f"of={LOOP}", "bs=1M", f"count={IMAGE_MIB}", "oflag=direct",
        "conv=fsync", "status=none")
    return took


def main():
    global URL, CLI_ENV, FAKEBIN, IPA_CONF, IMAGES
    FAKEBIN = os.path.join(WORK, "fakebin")
    IMAGES = os.path.join(WORK, "images")
    os.makedirs(FAKEBIN, exist_ok=True)
    os.makedirs(IMAGES, exist_ok=True)
    for cmd in ("poweroff", "reboot", "shutdown", "systemctl", "halt"):
        path = os.path.join(FAKEBIN, cmd)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho 'ferric agent E2E: REFUSING {cmd} $*' >&2\n"
                    f"echo \"$(date) {cmd} $*\" >> {WORK}/refused-power-commands\nexit 1\n")
        os.chmod(path, 0o755)
    ipa_port = free_port()
    IPA_CONF = os.path.join(WORK, "ipa.conf")

    qcow2, converted, digest = make_image()
    log(f"image: {IMAGE_MIB} MiB raw -> {os.path.getsize(qcow2)} bytes qcow2, sha256 {digest}")
    limit = raw_limit(qcow2)
    log(f"raw limit (qemu-img convert -O raw + dd oflag=direct): {limit:.2f}s")

    start("images", [sys.executable, os.path.join(HERE, "imgserver.py"), IMAGES,
                     os.path.join(WORK, "imgport")], os.path.join(WORK, "images.log"))
    img_port = wait_file(os.path.join(WORK, "imgport"), "images")
    image_url = f"http://127.0.0.1:{img_port}/image.qcow2"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRIC_", "OS_"))}
    env.update({
        "FERRIC_LOG": "info,ferric_conductor=debug",
        "FERRIC_API__RAMDISK_HEARTBEAT_TIMEOUT": "4s",
        "FERRIC_CONDUCTOR__DEPLOY_CALLBACK_TIMEOUT": "20s",
        "FERRIC_CONDUCTOR__CLEAN_CALLBACK_TIMEOUT": "60s",
        "FERRIC_CONDUCTOR__CHECK_PROVISION_STATE_INTERVAL": "2s",
    })
    ferric_log = os.path.join(WORK, "ferric.log")
    start("ferric", [FERRIC, "serve", "--database-url", DB_URL, "--host", "agent-e2e",
                     "--api-host", "127.0.0.1", "--api-port", "0"], ferric_log, env=env)
    until = time.monotonic() + 60
    URL = None
    while URL is None:
        with open(ferric_log) as f:
            m = re.search(r"api=(http://[0-9.]+:[0-9]+)", f.read())
            if m:
                URL = m.group(1)
        if URL is None:
            if procs["ferric"].poll() is not None or time.monotonic() > until:
                fail("ferric serve did not start")
            time.sleep(0.1)
    log(f"ferric at {URL}, images at {image_url}, agent on 127.0.0.1:{ipa_port}")
    with open(IPA_CONF, "w") as f:
        f.write(f"""[DEFAULT]
api_url = {URL}
listen_host = 127.0.0.1
listen_port = {ipa_port}
advertise_host = 127.0.0.1
advertise_port = {ipa_port}
advertise_protocol = http
enable_auto_tls = False
insecure = True
collect_lldp = False
inspection_callback_url =
lookup_timeout = 120
lookup_interval = 1
disk_wait_attempts = 1
disk_wait_delay = 1
hardware_initialization_delay = 0
# A checksum mismatch is retried after a pause (defaults: 9 retries, 10 s).
image_download_connection_retries = 1
image_download_connection_retry_interval = 1
debug = True
""")
    self_checks()

    clouds = os.path.join(WORK, "clouds.yaml")
    with open(clouds, "w") as f:
        f.write(f"clouds:\n  ferric:\n    auth_type: none\n    baremetal_endpoint_override: {URL}\n")
    CLI_ENV = dict(env, OS_CLIENT_CONFIG_FILE=clouds, OS_CLOUD="ferric", HOME=WORK)

    bmc = Bmc(ipa_port)
    bmc.thread.start()
    result = {"engine": ENGINE, "image_mib": IMAGE_MIB, "qcow2_bytes": os.path.getsize(qcow2),
              "raw_limit_s": round(limit, 2)}
    try:
        lifecycle(bmc, image_url, digest, converted, result)
    finally:
        bmc.stop_flag.set()
        bmc.thread.join(timeout=10)
        bmc.kill("end of test")
    if bmc.error:
        raise bmc.error
    refused = os.path.join(WORK, "refused-power-commands")
    if os.path.exists(refused):
        with open(refused) as f:
            log(f"the agent tried power commands (refused): {f.read().strip()}")
    result["agent_runs"] = bmc.runs
    print("E2E-RESULT " + json.dumps(result), flush=True)


def lifecycle(bmc, image_url, digest, converted, result):
    root_hint = json.dumps({"name": LOOP})
    n = json.loads(bm("node", "create", "--driver", "fake-hardware", "--name", NODE,
                      "--deploy-interface", "direct", "--boot-interface", "fake",
                      "--property", f"root_device={root_hint}", "-f", "json").stdout)
    uuid = n["uuid"]
    bm("port", "create", MAC, "--node", uuid)
    def instance_info(url, hash_value, disk_format="qcow2"):
        # Tear-down empties instance_info (as Ironic): set it before each deploy.
        bm("node", "set", NODE,
           "--instance-info", f"image_source={url}",
           "--instance-info", "image_os_hash_algo=sha256",
           "--instance-info", f"image_os_hash_value={hash_value}",
           "--instance-info", f"image_disk_format={disk_format}")

    instance_info(image_url, digest)
    bm("node", "manage", NODE, "--wait", "60")
    check(node()["provision_state"] == "manageable", "manage: manageable")

    t = time.monotonic()
    bm("node", "provide", NODE, "--wait", str(PHASE_LIMIT))
    n = node()
    check(n["provision_state"] == "available", f"provide (automated cleaning through the agent) "
          f"-> available in {time.monotonic() - t:.1f}s")
    runs_before = bmc.runs
    check(runs_before >= 1, f"cleaning ran the agent ({runs_before} agent run(s))")
    check(n["driver_internal_info"].get("agent_secret_token") is None,
          "the agent token is gone once the node left the agent states")

    configdrive = json.dumps({"meta_data": {"uuid": uuid, "hostname": "e2e"}, "user_data": USER_DATA})
    t = time.monotonic()
    bm("node", "deploy", NODE, "--config-drive", configdrive, "--wait", str(PHASE_LIMIT))
    took = time.monotonic() - t
    n = node()
    check(n["provision_state"] == "active" and n["last_error"] is None,
          f"deploy --wait --config-drive -> active in {took:.1f}s")
    result["deploy_s"] = round(took, 2)
    # Server side: the first state of the deploy seen (0.2 s polls; the
    # transient `deploying` can pass between two polls, as it did in CI) to
    # `active`, without the CLI's start-up and polling.
    t_deploying = next(at for at, st in bmc.seen_at if at >= t and st != "available")
    t_active = next(at for at, st in bmc.seen_at if at >= t and st == "active")
    result["deploy_server_s"] = round(t_active - t_deploying, 2)
    log(f"deploy: {result['deploy_server_s']}s from deploying to active (CLI wall time {took:.1f}s)")
    check(bmc.runs == runs_before + 1, "the deploy booted one new agent")
    check(n["instance_info"].get("configdrive") == "******", "the config drive is masked in the API")
    check_deployed(converted)

    t = time.monotonic()
    bm("node", "undeploy", NODE, "--wait", str(PHASE_LIMIT))
    took = time.monotonic() - t
    check(node()["provision_state"] == "available", f"undeploy --wait -> available in {took:.1f}s")
    result["undeploy_s"] = round(took, 2)
    check_cleaned()

    # A checksum mismatch: the agent refuses the image; its message is last_error.
    instance_info(image_url, "0" * 64)
    p = bm("node", "deploy", NODE, "--wait", str(PHASE_LIMIT), check_rc=False)
    n = node()
    err = n["last_error"] or ""
    check(p.returncode != 0 and n["provision_state"] == "deploy failed",
          f"a checksum mismatch fails the deploy (CLI exit {p.returncode}, "
          f"{n['provision_state']}): {p.stderr.strip()[:200]}")
    check("checksum" in err.lower() or "hash" in err.lower(), f"last_error has the agent's message: {err[:200]}")

    # The agent killed in the middle of the image download.
    slow = image_url.replace("/image.qcow2", "/slow/image.qcow2")
    # A raw image is streamed straight onto the disk (stream_raw_images):
    # killing the agent during the slow download kills it mid-write. A
    # second image, so what reaches the disk is told from the first deploy's.
    second = os.path.join(IMAGES, "second.raw")
    second_digest = make_raw(second, 15)
    slow = image_url.replace("/image.qcow2", "/slow/second.raw")
    instance_info(slow, second_digest, "raw")
    images_log = os.path.join(WORK, "images.log")
    with open(images_log) as f:
        seen = f.read().count("start /slow/")
    bm("node", "deploy", NODE)
    until = time.monotonic() + PHASE_LIMIT
    while True:
        with open(images_log) as f:
            if f.read().count("start /slow/") > seen:
                break
        if time.monotonic() > until:
            fail("the agent never started downloading the slow image")
        time.sleep(0.1)
    # Kill it once the first MiB of the second image is on the disk (the
    # whole image takes ~2 minutes at the server's slow rate).
    with open(second, "rb") as f:
        want = f.read()
    mib = 1024 * 1024
    until = time.monotonic() + 60
    while read_loop(0, mib) != want[:mib]:
        if time.monotonic() > until:
            fail("the agent never wrote the second image's first MiB")
        time.sleep(0.2)
    bmc.autostart = False
    bmc.kill("mid-write")
    log("ok: the killed agent had written the second image's first MiB")
    check(read_loop(len(want) - mib, mib) != want[-mib:], "... and had not finished")
    n = node()
    check(n["provision_state"] in ("wait call-back", "deploying"),
          f"the node waits for the agent it lost ({n['provision_state']})")
    wait_state({"wait call-back"}, limit=30)

    # A heartbeat with a wrong token is refused and changes nothing (the
    # agent's lookup minted the real one).
    before = node()
    status, body = http("POST", f"/v1/heartbeat/{before['uuid']}",
                        {"callback_url": f"http://127.0.0.1:{bmc.ipa_port}",
                         "agent_version": "13.0.0", "agent_token": "W" * 43})
    fault = json.loads(body["error_message"])["faultstring"] if body else ""
    check(status == 400 and fault == "Invalid or missing agent token received.",
          f"a wrong agent token is refused: {status} {fault}")
    after = node()
    check(before == after, "the refused heartbeat changed nothing")

    t = time.monotonic()
    n = wait_state({"deploy failed"}, limit=90)
    err = n["last_error"] or ""
    check("timeout" in err.lower(), f"the call-back timeout fails the deploy "
          f"({time.monotonic() - t:.1f}s after the kill): {err[:200]}")

    bmc.autostart = True
    bm("node", "undeploy", NODE, "--wait", str(PHASE_LIMIT))
    check(node()["provision_state"] == "available", "undeploy of the failed node -> available")


if __name__ == "__main__":
    try:
        main()
    finally:
        for name in list(procs):
            stop(name)
