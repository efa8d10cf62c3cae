#!/usr/bin/env bash
# Real-client resource tests (issue 13): every `.ci/clients/*.py` (or the ones
# named as arguments) drives one part of the Ironic API surface with the real
# `baremetal` CLI (python-ironicclient) and openstacksdk, against a fresh
# `ferric serve` (debug build, temp SQLite file, free port, no auth on
# loopback). Each script gets its own ferric; the scripts share the helpers
# in `.ci/clients/_lib.py`. The venv is the one .ci/compat.sh uses
# (target/compat-venv, never committed). On failure ferric's log is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
# shellcheck source=.ci/lib.sh
source .ci/lib.sh
started=$(date +%s)
venv="${root}/target/compat-venv"
work="$(mktemp -d)"

cleanup() {
  local rc=$?
  local pid
  # Each script's subshell stops its own ferric; this stops the subshells
  # (and so their ferric) if the run is cut short.
  for pid in "${running[@]}"; do
    pkill -TERM -P "${pid}" 2>/dev/null || true
    kill -TERM "${pid}" 2>/dev/null || true
  done
  for pid in "${running[@]}"; do
    wait "${pid}" 2>/dev/null || true
  done
  rm -rf "${work}"
  exit "${rc}"
}
running=()
trap cleanup EXIT

if [[ ! -x "${venv}/bin/baremetal" ]] || ! "${venv}/bin/python" -c 'import openstack' 2>/dev/null; then
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check python-ironicclient openstacksdk
fi

cargo build --quiet -p ferric
ferric="${CARGO_TARGET_DIR:-${root}/target}/debug/ferric"

export HOME="${work}/home" XDG_CACHE_HOME="${work}/cache" XDG_CONFIG_HOME="${work}/config"
mkdir -p "${HOME}"
for v in $(env | grep -oE '^(FERRIC_[A-Z0-9_]+|OS_[A-Z0-9_]+)' || true); do unset "${v}"; done

if [[ $# -gt 0 ]]; then
  scripts=("$@")
else
  # Biggest first (size stands in for run time), so the longest script
  # does not start last and run alone.
  mapfile -t scripts < <(find .ci/clients -maxdepth 1 -name '[!_]*.py' -printf '%s %p\n' | sort -rn | cut -d' ' -f2)
fi

# One script: its own `ferric serve` on a fresh SQLite file, the script
# against it, then ferric stopped by its PID. Output goes to ${work}/NAME.out
# and ferric's log to ${work}/NAME.log; both are printed if it fails.
run_script() {
  # ferric_pid is not local: the EXIT trap runs after this function returns
  # (the function is the whole of its background subshell).
  local script="$1" name url=""
  ferric_pid=""
  name="$(basename "${script}" .py)"
  stop_ferric() { stop_pid "${ferric_pid}"; }
  trap stop_ferric EXIT
  trap 'exit 143' TERM
  "${ferric}" serve --database-url "sqlite://${work}/${name}.db" --host clients-conductor \
    --api-host 127.0.0.1 --api-port 0 >"${work}/${name}.log" 2>&1 &
  ferric_pid=$!
  for _ in $(seq 1 300); do
    url="$(grep -oE 'api=http://[0-9.]+:[0-9]+' "${work}/${name}.log" | head -n 1 | cut -d= -f2 || true)"
    [[ -n "${url}" ]] && break
    kill -0 "${ferric_pid}" 2>/dev/null || { echo "ferric serve exited early" >&2; return 1; }
    sleep 0.1
  done
  [[ -n "${url}" ]] || { echo "ferric serve did not log its API address" >&2; return 1; }
  cat >"${work}/${name}.clouds.yaml" <<YAML
clouds:
  ferric:
    auth_type: none
    baremetal_endpoint_override: ${url}
YAML
  OS_CLIENT_CONFIG_FILE="${work}/${name}.clouds.yaml" OS_CLOUD=ferric FERRIC_URL="${url}" \
    PYTHONPATH="${root}/.ci/clients" BAREMETAL="${venv}/bin/baremetal" \
    "${venv}/bin/python" "${script}" || return 1
  kill -TERM "${ferric_pid}"
  for _ in $(seq 1 100); do
    kill -0 "${ferric_pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${ferric_pid}" 2>/dev/null; then echo "ferric did not stop on SIGTERM" >&2; return 1; fi
  local rc=0
  wait "${ferric_pid}" || rc=$?
  ferric_pid=""
  [[ ${rc} -eq 0 ]] || { echo "ferric serve exited with ${rc}" >&2; return 1; }
}

# The scripts are independent (own ferric, own database, own clouds.yaml), and
# most of their time is the Python client starting up, one CPU each: run
# CLIENTS_JOBS (default 2, the machine's cores) at a time.
jobs_max="${CLIENTS_JOBS:-2}"
[[ "${jobs_max}" =~ ^[1-9][0-9]*$ ]] || { echo "CLIENTS_JOBS must be a positive integer, not '${jobs_max}'" >&2; exit 2; }
declare -A script_of=()
failed=()
# Wait for one running script; report it.
reap() {
  local done_pid rc=0 name
  wait -n -p done_pid "${running[@]}" || rc=$?
  name="${script_of[${done_pid}]}"
  local pid left=()
  for pid in "${running[@]}"; do
    [[ "${pid}" == "${done_pid}" ]] || left+=("${pid}")
  done
  running=("${left[@]}")
  if [[ ${rc} -eq 0 ]]; then
    printf -- '---- %s passed (+%ss)\n' "${name}" "$(($(date +%s) - started))"
  else
    failed+=("${name}")
    printf -- '---- %s FAILED (exit %s, +%ss); its output and ferric log follow\n' \
      "${name}" "${rc}" "$(($(date +%s) - started))" >&2
    cat "${work}/${name}.out" >&2 || true
    echo "==== ferric log (${name}.log, last 200 lines)" >&2
    tail -n 200 "${work}/${name}.log" >&2 || true
  fi
}
for script in "${scripts[@]}"; do
  while [[ ${#running[@]} -ge ${jobs_max} ]]; do reap; done
  name="$(basename "${script}" .py)"
  printf -- '---- %s started (+%ss)\n' "${name}" "$(($(date +%s) - started))"
  run_script "${script}" >"${work}/${name}.out" 2>&1 &
  running+=("$!")
  script_of[$!]="${name}"
done
while [[ ${#running[@]} -gt 0 ]]; do reap; done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "clients: ${#failed[@]} of ${#scripts[@]} script(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "clients: ${#scripts[@]} script(s) passed in $(($(date +%s) - started))s"
