"""Helpers shared by the real-client tests in .ci/clients/*.py.

Run by .ci/clients.sh, which starts a fresh `ferric serve` per script and sets
FERRIC_URL, OS_CLOUD=ferric (auth_type none, endpoint override) and BAREMETAL
(the venv's `baremetal` CLI).
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

URL = os.environ["FERRIC_URL"]
BAREMETAL = os.environ.get("BAREMETAL", "baremetal")


def ok(what):
    print(f"ok: {what}", flush=True)


def fail(what):
    print(f"ASSERTION FAILED: {what}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)


def expect_eq(what, got, want):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")
    ok(f"{what} = {want!r}")


def bm(*args, json_out=True):
    """Run the real `baremetal` CLI; parse its JSON output (`-f json`)."""
    cmd = [BAREMETAL, "--max-retries", "0", *args]
    if json_out:
        cmd += ["-f", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        fail(f"{' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    if not json_out:
        return p.stdout
    return json.loads(p.stdout) if p.stdout.strip() else None


def bm_fails(*args, contains=None):
    """Run the CLI expecting failure; return its stderr (checked for `contains`)."""
    p = subprocess.run([BAREMETAL, "--max-retries", "0", *args],
                       capture_output=True, text=True, timeout=120)
    if p.returncode == 0:
        fail(f"{' '.join(args)} succeeded but should fail: {p.stdout.strip()}")
    if contains is not None and contains not in p.stderr:
        fail(f"{' '.join(args)}: stderr lacks {contains!r}: {p.stderr.strip()}")
    return p.stderr


def sdk():
    """openstacksdk's baremetal proxy for the cloud `ferric`."""
    import openstack

    return openstack.connect(cloud="ferric").baremetal


def http(method, path, body=None, version="latest", headers=None):
    """A raw request. Returns (status, headers, parsed JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if version is not None:
        req.add_header("X-OpenStack-Ironic-API-Version", version)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, dict(e.headers), (json.loads(raw) if raw else None)


def error_message(body):
    """Ironic's error body: {"error_message": "<JSON with faultstring>"}."""
    check(isinstance(body, dict) and "error_message" in body, f"not an Ironic error body: {body!r}")
    inner = json.loads(body["error_message"])
    check(set(inner) >= {"faultstring", "faultcode", "debuginfo"}, f"error_message lacks fields: {inner!r}")
    return inner["faultstring"]


def expect_error(what, method, path, status, contains, body=None, version="latest"):
    """A request that must fail with `status` and a faultstring containing `contains`."""
    got, _, b = http(method, path, body, version)
    if got != status:
        fail(f"{what}: status {got}, want {status}: {b!r}")
    msg = error_message(b)
    if contains not in msg:
        fail(f"{what}: faultstring {msg!r} lacks {contains!r}")
    ok(f"{what}: {status} {msg!r}")
    return msg


def expect_keys(what, doc, keys):
    """`doc` has exactly the fields `keys` (Ironic's schema at that version)."""
    got = set(doc)
    want = set(keys)
    if got != want:
        fail(f"{what}: fields differ: missing {sorted(want - got)}, unexpected {sorted(got - want)}")
    ok(f"{what}: {len(want)} fields")
