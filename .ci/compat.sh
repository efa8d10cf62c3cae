#!/usr/bin/env bash
# Real-client compatibility test (issue 5): the `baremetal` CLI of
# python-ironicclient and openstacksdk's baremetal proxy drive a full node
# lifecycle against a running `ferric serve` (debug build, temp SQLite file,
# free port, no auth on loopback), and every output is asserted; then a
# ferric with api.auth = "token" refuses the CLI without the token (401) and
# serves it with `--os-auth-type admin_token --os-token ...`.
#
# The venv lives in target/compat-venv (never committed; reused when it
# already has both clients). On failure ferric's log is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
# shellcheck source=.ci/lib.sh
source .ci/lib.sh
started=$(date +%s)

venv="${root}/target/compat-venv"
work="$(mktemp -d)"
ferric_pid=""

step() { printf '\n---- %s (+%ss)\n' "$*" "$(($(date +%s) - started))"; }

cleanup() {
  local rc=$?
  stop_pid "${ferric_pid}"
  if [[ ${rc} -ne 0 ]]; then
    echo "compat: FAILED (exit ${rc}); ferric's log follows" >&2
    for log in "${work}"/*.log; do
      [[ -e "${log}" ]] || continue
      echo "==== ${log##*/}" >&2
      cat "${log}" >&2
    done
  fi
  rm -rf "${work}"
  exit "${rc}"
}
trap cleanup EXIT

fail() {
  echo "compat: ASSERTION FAILED: $*" >&2
  exit 1
}

# expect_eq WHAT GOT WANT
expect_eq() {
  [[ "$2" == "$3" ]] || fail "$1: got '$2', want '$3'"
  echo "ok: $1 = $3"
}

step "venv with python-ironicclient and openstacksdk"
if [[ ! -x "${venv}/bin/baremetal" ]] || ! "${venv}/bin/python" -c 'import openstack' 2>/dev/null; then
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check python-ironicclient openstacksdk
fi
"${venv}/bin/pip" list --disable-pip-version-check 2>/dev/null | grep -iE '^(python-ironicclient|openstacksdk) '

step "build ferric"
cargo build --quiet -p ferric
ferric="${CARGO_TARGET_DIR:-${root}/target}/debug/ferric"

# start_ferric NAME [ENV=VALUE...]: `ferric serve` on a fresh SQLite file and
# a free port, logging to ${work}/NAME.log; sets ferric_pid and url.
start_ferric() {
  local name=$1
  shift
  env "$@" "${ferric}" serve --database-url "sqlite://${work}/${name}.db" --host compat-conductor \
    --api-host 127.0.0.1 --api-port 0 >"${work}/${name}.log" 2>&1 &
  ferric_pid=$!
  url=""
  for _ in $(seq 1 300); do
    url="$(grep -oE 'api=http://[0-9.]+:[0-9]+' "${work}/${name}.log" | head -n 1 | cut -d= -f2 || true)"
    [[ -n "${url}" ]] && break
    kill -0 "${ferric_pid}" 2>/dev/null || fail "ferric serve exited early"
    sleep 0.1
  done
  [[ -n "${url}" ]] || fail "ferric serve did not log its API address"
  echo "ferric at ${url}"
}

# stop_ferric: SIGTERM, bounded wait, exit status 0 required.
stop_ferric() {
  kill -TERM "${ferric_pid}"
  for _ in $(seq 1 100); do
    kill -0 "${ferric_pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${ferric_pid}" 2>/dev/null; then fail "ferric did not stop on SIGTERM"; fi
  wait "${ferric_pid}" || fail "ferric serve exited with $?"
  ferric_pid=""
}

step "start ferric serve"
# Keep the client's caches and any user config out of the picture.
export HOME="${work}/home" XDG_CACHE_HOME="${work}/cache" XDG_CONFIG_HOME="${work}/config"
mkdir -p "${HOME}"
for v in $(env | grep -oE '^(FERRIC_[A-Z0-9_]+|OS_[A-Z0-9_]+)' || true); do unset "${v}"; done
start_ferric ferric

cat >"${work}/clouds.yaml" <<EOF
clouds:
  ferric:
    auth_type: none
    baremetal_endpoint_override: ${url}
EOF
export OS_CLIENT_CONFIG_FILE="${work}/clouds.yaml" OS_CLOUD=ferric

bm() { "${venv}/bin/baremetal" "$@"; }
# field NODE FIELD: one field of `node show`.
field() { bm node show "$1" -f value -c "$2"; }

step "baremetal driver list / conductor list"
drivers="$(bm driver list -f value -c name)"
grep -qx 'fake-hardware' <<<"${drivers}" || fail "driver list lacks fake-hardware: ${drivers}"
echo "ok: driver list has fake-hardware"
conductors="$(bm conductor list -f json)"
"${venv}/bin/python" - "${conductors}" <<'EOF' || fail "conductor list: ${conductors}"
import json, sys
rows = json.loads(sys.argv[1])
assert [(r["hostname"], r["alive"]) for r in rows] == [("compat-conductor", True)], rows
EOF
echo "ok: conductor list shows compat-conductor alive"

step "baremetal node create"
created="$(bm node create --driver fake-hardware --name compat-1 --extra owner=ci -f json)"
uuid="$("${venv}/bin/python" -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["name"]=="compat-1" and d["driver"]=="fake-hardware" and d["provision_state"]=="enroll" and d["extra"]=={"owner":"ci"}, d; print(d["uuid"])' "${created}")" \
  || fail "node create: ${created}"
echo "ok: created ${uuid}"

step "baremetal node list / show"
listed="$(bm node list -f json)"
"${venv}/bin/python" - "${listed}" "${uuid}" <<'EOF' || fail "node list: ${listed}"
import json, sys
rows, uuid = json.loads(sys.argv[1]), sys.argv[2]
assert [r["uuid"] for r in rows] == [uuid], rows
assert rows[0]["name"] == "compat-1" and rows[0]["provision_state"] == "enroll", rows
assert rows[0]["maintenance"] is False and rows[0]["instance_uuid"] is None, rows
EOF
echo "ok: node list"
expect_eq "show by name: uuid" "$(field compat-1 uuid)" "${uuid}"
expect_eq "show by uuid: name" "$(field "${uuid}" name)" "compat-1"
long="$(bm node list --long -f json)"
"${venv}/bin/python" -c 'import json,sys; r=json.loads(sys.argv[1]); assert [(n["uuid"], n["driver"], n["provision_state"]) for n in r]==[(sys.argv[2], "fake-hardware", "enroll")], r' "${long}" "${uuid}" \
  || fail "node list --long: ${long}"
echo "ok: node list --long"
fields="$(bm node list --fields uuid provision_state -f value)"
expect_eq "node list --fields" "${fields}" "${uuid} enroll"

step "baremetal node set / unset"
bm node set compat-1 --extra rack=r7 --property cpus=4 --driver-info ipmi_password=s3cret
shown="$(bm node show compat-1 -f json -c extra -c properties -c driver_info)"
"${venv}/bin/python" -c 'import json,sys; d=json.loads(sys.argv[1]); assert d=={"extra":{"owner":"ci","rack":"r7"},"properties":{"cpus":4},"driver_info":{"ipmi_password":"******"}}, d' "${shown}" \
  || fail "after set: ${shown}"
echo "ok: after set (password masked): ${shown//[$'\n' ]/}"
bm node unset compat-1 --extra owner --property cpus
shown="$(bm node show compat-1 -f json -c extra -c properties)"
"${venv}/bin/python" -c 'import json,sys; d=json.loads(sys.argv[1]); assert d=={"extra":{"rack":"r7"},"properties":{}}, d' "${shown}" \
  || fail "after unset: ${shown}"
echo "ok: after unset: ${shown//[$'\n' ]/}"

step "baremetal node validate"
validate="$(bm node validate compat-1 -f json)"
"${venv}/bin/python" - "${validate}" <<'EOF' || fail "node validate: ${validate}"
import json, sys
rows = {r["Interface"]: r for r in json.loads(sys.argv[1])}
for iface in ("power", "management", "deploy", "boot"):
    assert rows[iface]["Result"] is True, rows
EOF
echo "ok: validate"

step "baremetal node manage --wait"
bm node manage compat-1 --wait 60
expect_eq "after manage" "$(field compat-1 provision_state)" "manageable"

step "baremetal node provide --wait"
bm node provide compat-1 --wait 120
expect_eq "after provide" "$(field compat-1 provision_state)" "available"

step "baremetal node deploy --wait"
bm node deploy compat-1 --wait 120
expect_eq "after deploy" "$(field compat-1 provision_state)" "active"
expect_eq "target after deploy" "$(field compat-1 target_provision_state)" "None"

step "baremetal node power off / on"
bm node power off compat-1
for _ in $(seq 1 100); do
  [[ "$(field compat-1 power_state)" == "power off" ]] && break
  sleep 0.2
done
expect_eq "after power off" "$(field compat-1 power_state)" "power off"
bm node power on compat-1
for _ in $(seq 1 100); do
  [[ "$(field compat-1 power_state)" == "power on" ]] && break
  sleep 0.2
done
expect_eq "after power on" "$(field compat-1 power_state)" "power on"

step "baremetal node maintenance set / unset"
bm node maintenance set compat-1 --reason "compat check"
expect_eq "maintenance" "$(field compat-1 maintenance)" "True"
expect_eq "maintenance_reason" "$(field compat-1 maintenance_reason)" "compat check"
bm node maintenance unset compat-1
expect_eq "maintenance after unset" "$(field compat-1 maintenance)" "False"
expect_eq "maintenance_reason after unset" "$(field compat-1 maintenance_reason)" "None"

step "invalid transition is refused (400, no retries)"
if out="$(bm --max-retries 0 node manage compat-1 2>&1)"; then
  fail "manage of an active node succeeded: ${out}"
fi
grep -q 'can not be performed' <<<"${out}" || fail "unexpected error text: ${out}"
echo "ok: refused: ${out}"
expect_eq "still active" "$(field compat-1 provision_state)" "active"

step "baremetal node undeploy --wait"
bm node undeploy compat-1 --wait 120
expect_eq "after undeploy" "$(field compat-1 provision_state)" "available"

step "baremetal node delete"
bm node delete compat-1
if out="$(bm node show compat-1 2>&1)"; then
  fail "node still there after delete: ${out}"
fi
grep -qi 'could not be found' <<<"${out}" || fail "unexpected error text: ${out}"
echo "ok: deleted (${out})"
expect_eq "node list after delete" "$(bm node list -f value -c uuid)" ""

step "openstacksdk baremetal proxy"
"${venv}/bin/python" - <<'EOF' || fail "openstacksdk script"
import openstack
conn = openstack.connect(cloud="ferric")
bm = conn.baremetal
assert list(bm.nodes()) == [], "expected no nodes"
node = bm.create_node(driver="fake-hardware", name="sdk-1")
assert node.name == "sdk-1" and node.provision_state == "enroll", node
got = bm.get_node("sdk-1")
assert got.id == node.id and got.driver == "fake-hardware", got
assert [n.id for n in bm.nodes(details=True)] == [node.id]
node = bm.set_node_provision_state("sdk-1", "manage", wait=True, timeout=60)
assert node.provision_state == "manageable", node.provision_state
bm.set_node_maintenance("sdk-1", reason="sdk")
assert bm.get_node("sdk-1").is_maintenance is True
bm.unset_node_maintenance("sdk-1")
assert bm.get_node("sdk-1").is_maintenance is False
assert [c.hostname for c in bm.conductors()] == ["compat-conductor"]
assert "fake-hardware" in [d.name for d in bm.drivers()]
bm.delete_node("sdk-1")
assert bm.find_node("sdk-1") is None
print("ok: openstacksdk list/get/create/manage/maintenance/delete, conductors, drivers")
EOF

step "stop ferric"
stop_ferric

step "token auth: ferric serve with api.auth = token, baremetal with admin_token"
start_ferric ferric-token FERRIC_API__AUTH=token FERRIC_API__TOKEN=compat-secret
unset OS_CLOUD OS_CLIENT_CONFIG_FILE
if out="$(bm --max-retries 0 --os-auth-type none --os-endpoint "${url}" node list 2>&1)"; then
  fail "unauthenticated node list succeeded: ${out}"
fi
grep -q 'HTTP 401' <<<"${out}" || fail "expected a 401: ${out}"
echo "ok: without a token: ${out%% (Request-ID*}"
tok=(--os-auth-type admin_token --os-token compat-secret --os-endpoint "${url}")
expect_eq "create with the token" "$(bm "${tok[@]}" node create --driver fake-hardware --name tok-1 -f value -c name)" "tok-1"
expect_eq "list with the token" "$(bm "${tok[@]}" node list -f value -c name)" "tok-1"
if out="$(bm --max-retries 0 --os-auth-type admin_token --os-token wrong --os-endpoint "${url}" node list 2>&1)"; then
  fail "a wrong token was accepted: ${out}"
fi
echo "ok: wrong token refused"
stop_ferric
echo "compat: all checks passed in $(($(date +%s) - started))s"
