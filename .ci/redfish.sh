#!/usr/bin/env bash
# Redfish integration test against the real sushy-tools emulator (SPEC §10).
#
# Creates a Python venv under target/redfish (never committed), installs
# sushy-tools from PyPI with pip, starts `sushy-emulator` with its fake driver
# (no libvirt) and HTTP basic auth on a free loopback port, then runs the Rust
# test crates/ferric-api/tests/it/redfish.rs (the `redfish::` tests of the
# `it` binary) with FERRIC_TEST_REDFISH_URL set (the
# test is skipped only when that variable is unset). The emulator is stopped
# on exit. Runs unattended (no stdin).
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
export FERRIC_TEST_REDFISH_USERNAME="$user"
export FERRIC_TEST_REDFISH_PASSWORD="$password"
status=0
FERRIC_TEST_REQUIRE="${FERRIC_TEST_REQUIRE:-},FERRIC_TEST_REDFISH_URL" cargo test -p ferric-api --test it redfish:: -- --nocapture || status=$?
if [ "$status" -ne 0 ]; then
  echo "---- sushy-emulator log (tail) ----" >&2
  tail -n 50 "$state/sushy.log" >&2
fi
exit "$status"
