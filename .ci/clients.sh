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
started=$(date +%s)
venv="${root}/target/compat-venv"
work="$(mktemp -d)"
ferric_pid=""

cleanup() {
  local rc=$?
  if [[ -n "${ferric_pid}" ]] && kill -0 "${ferric_pid}" 2>/dev/null; then
    kill -TERM "${ferric_pid}" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "${ferric_pid}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${ferric_pid}" 2>/dev/null || true
  fi
  if [[ ${rc} -ne 0 ]]; then
    echo "clients: FAILED (exit ${rc}); ferric's log follows" >&2
    for log in "${work}"/*.log; do
      [[ -e "${log}" ]] || continue
      echo "==== ${log##*/}" >&2
      tail -n 200 "${log}" >&2
    done
  fi
  rm -rf "${work}"
  exit "${rc}"
}
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
  scripts=()
  for s in .ci/clients/*.py; do
    [[ "${s##*/}" == _* ]] || scripts+=("${s}")
  done
fi

for script in "${scripts[@]}"; do
  name="$(basename "${script}" .py)"
  printf '\n---- %s (+%ss)\n' "${name}" "$(($(date +%s) - started))"
  "${ferric}" serve --database-url "sqlite://${work}/${name}.db" --host clients-conductor \
    --api-host 127.0.0.1 --api-port 0 >"${work}/${name}.log" 2>&1 &
  ferric_pid=$!
  url=""
  for _ in $(seq 1 300); do
    url="$(grep -oE 'api=http://[0-9.]+:[0-9]+' "${work}/${name}.log" | head -n 1 | cut -d= -f2 || true)"
    [[ -n "${url}" ]] && break
    kill -0 "${ferric_pid}" 2>/dev/null || { echo "ferric serve exited early" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "${url}" ]] || { echo "ferric serve did not log its API address" >&2; exit 1; }
  cat >"${work}/clouds.yaml" <<YAML
clouds:
  ferric:
    auth_type: none
    baremetal_endpoint_override: ${url}
YAML
  OS_CLIENT_CONFIG_FILE="${work}/clouds.yaml" OS_CLOUD=ferric FERRIC_URL="${url}" \
    PYTHONPATH="${root}/.ci/clients" BAREMETAL="${venv}/bin/baremetal" \
    "${venv}/bin/python" "${script}"
  kill -TERM "${ferric_pid}"
  for _ in $(seq 1 100); do
    kill -0 "${ferric_pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${ferric_pid}" 2>/dev/null; then echo "ferric did not stop on SIGTERM" >&2; exit 1; fi
  wait "${ferric_pid}" || { echo "ferric serve exited with $?" >&2; exit 1; }
  ferric_pid=""
done
echo "clients: ${#scripts[@]} script(s) passed in $(($(date +%s) - started))s"
