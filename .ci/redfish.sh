#!/usr/bin/env bash
# Redfish integration test against the real sushy-tools emulator (SPEC §10).
#
# Creates a Python venv under target/redfish (never committed), installs
# sushy-tools from PyPI with pip, starts `sushy-emulator` with its fake driver
# (no libvirt) and HTTP basic auth on a free loopback port, then runs the Rust
# test crates/ferric-api/tests/it/redfish.rs (the `redfish::` tests of the
# `it` binary) with FERRIC_TEST_REDFISH_URL set (the
# test is skipped only when that variable is unset). The emulator is stopped
# on exit. Runs unattended (no stdin). The virtual media test builds boot ISOs:
# xorriso, isolinux, grub-efi-amd64-bin, mtools, dosfstools (.ci/run installs them).
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."

SUSHY_VERSION="${SUSHY_VERSION:-2.2.0}"
dir=target/redfish
venv="$dir/venv"
mkdir -p "$dir"

installed="$("$venv/bin/pip" show sushy-tools 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$installed" != "$SUSHY_VERSION" ]; then
  echo "installing sushy-tools ${SUSHY_VERSION} into ${venv}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "sushy-tools==${SUSHY_VERSION}"
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
state="$(mktemp -d "${PWD}/${dir}/state.XXXXXX")"
system_uuid=27946b59-9e44-4fa7-8e91-f3527a1ef094
# One system per test: the tests run in parallel, and the emulator's fake
# driver writes a system's whole record on every change (a power change
# applied on a read can undo another request's boot device or mode).
mgmt_uuid=3c1d7e52-8a4b-4c6e-9f10-2b3c4d5e6f70
bootmode_uuid=8e2f4a61-1b5c-4d7e-8a9b-0c1d2e3f4a5b
vmedia_uuid=5b6d2a8e-0c1f-4f36-9d8e-7a1c2b3d4e5f
user=admin
password="pw-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
# sushy-tools accepts bcrypt entries only.
"$venv/bin/python" -c 'import bcrypt, sys; print(sys.argv[1] + ":" + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode())' \
  "$user" "$password" >"$state/htpasswd"
cat >"$state/sushy.conf" <<EOF
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = ${port}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = '${state}/sushy-state'
SUSHY_EMULATOR_AUTH_FILE = '${state}/htpasswd'
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {'uuid': '${system_uuid}', 'name': 'fake-0', 'power_state': 'Off',
     'external_notifier': False, 'nics': [{'mac': '00:5c:52:31:3a:9c', 'ip': '172.22.0.100'}]},
    {'uuid': '${mgmt_uuid}', 'name': 'fake-mgmt', 'power_state': 'Off',
     'external_notifier': False, 'nics': [{'mac': '00:5c:52:31:3a:9e', 'ip': '172.22.0.102'}]},
    {'uuid': '${bootmode_uuid}', 'name': 'fake-bootmode', 'power_state': 'Off',
     'external_notifier': False, 'nics': [{'mac': '00:5c:52:31:3a:9f', 'ip': '172.22.0.103'}]},
    {'uuid': '${vmedia_uuid}', 'name': 'fake-vmedia', 'power_state': 'Off',
     'external_notifier': False, 'nics': [{'mac': '00:5c:52:31:3a:9d', 'ip': '172.22.0.101'}]},
]
EOF

"$venv/bin/sushy-emulator" --config "$state/sushy.conf" >"$state/sushy.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

url="http://127.0.0.1:${port}"
ready=""
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "sushy-emulator exited:" >&2
    cat "$state/sushy.log" >&2
    exit 1
  fi
  # 401 without credentials: it is up.
  if python3 -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/redfish/v1/", timeout=1)
except urllib.error.HTTPError:
    pass
' "$url" 2>/dev/null; then
    ready=yes
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "sushy-emulator did not answer on ${url}" >&2
  cat "$state/sushy.log" >&2
  exit 1
fi
echo "sushy-emulator ${SUSHY_VERSION} (fake driver, basic auth) on ${url}, pid ${pid}"

export FERRIC_TEST_REDFISH_URL="$url"
export FERRIC_TEST_REDFISH_SYSTEM="/redfish/v1/Systems/${system_uuid}"
export FERRIC_TEST_REDFISH_SYSTEM_MGMT="/redfish/v1/Systems/${mgmt_uuid}"
export FERRIC_TEST_REDFISH_SYSTEM_BOOTMODE="/redfish/v1/Systems/${bootmode_uuid}"
export FERRIC_TEST_REDFISH_SYSTEM_VMEDIA="/redfish/v1/Systems/${vmedia_uuid}"
export FERRIC_TEST_REDFISH_USERNAME="$user"
export FERRIC_TEST_REDFISH_PASSWORD="$password"
status=0
FERRIC_TEST_REQUIRE="${FERRIC_TEST_REQUIRE:-},FERRIC_TEST_REDFISH_URL" cargo test -p ferric-api --test it redfish:: -- --nocapture || status=$?
if [ "$status" -ne 0 ]; then
  echo "---- sushy-emulator log (tail) ----" >&2
  tail -n 50 "$state/sushy.log" >&2
fi
exit "$status"
