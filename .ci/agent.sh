#!/usr/bin/env bash
# The agent deploy end to end (issue 14): `ferric serve` + the real
# ironic-python-agent 13.0.0 + the real `baremetal` CLI, on SQLite and, when
# FERRIC_TEST_PG_URL is set, on a fresh PostgreSQL database. The scenario is
# .ci/agent/e2e.py; this script prepares what it needs and cleans up:
#
# * target/ipa-venv: ironic-python-agent==13.0.0 from PyPI (never committed);
#   target/compat-venv: python-ironicclient (shared with .ci/compat.sh);
# * per engine, a sparse 5 GiB file under a temp dir attached with
#   `losetup -P --show -f` (5 GiB: the agent's root-disk minimum is 4 GiB;
#   sparse, so it costs only what is written), detached in the EXIT trap.
#
# SAFETY: the agent sees and touches only that loop device. It runs under
# `unshare --mount --pid --fork --mount-proc --propagation private` +
# .ci/agent/confine.sh (a tmpfs /dev holding only the loop device and its
# partitions; its own /proc, so no other process is visible) AND
# .ci/agent/ipa_launcher.py (block-device listing patched to the loop device,
# one confined hardware manager); each refuses to start without the other,
# and e2e.py checks both refusals before the first agent runs. Power
# commands on the agent's PATH are refusing fakes. Network: loopback only.
# Runs unattended (no stdin); bounded by PHASE_LIMIT waits in e2e.py.
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."
root="$(pwd)"
started=$(date +%s)

IPA_VERSION=13.0.0
ipa_venv="${root}/target/ipa-venv"
cli_venv="${root}/target/compat-venv"
work="$(mktemp -d)"
loops=()
pg_admin=""
pg_db=""

cleanup() {
  local rc=$?
  for l in "${loops[@]}"; do
    losetup -d "${l}" 2>/dev/null || true
  done
  if [[ -n "${pg_db}" ]]; then
    psql "${pg_admin}" -qAtc "DROP DATABASE IF EXISTS ${pg_db} WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [[ ${rc} -ne 0 ]]; then
    echo "agent: FAILED (exit ${rc}); logs follow" >&2
    for log in "${work}"/*/ferric.log "${work}"/*/ipa-*.log "${work}"/*/images.log; do
      [[ -e "${log}" ]] || continue
      echo "==== ${log#"${work}"/}" >&2
      tail -n 150 "${log}" >&2
    done
  fi
  rm -rf "${work}"
  exit "${rc}"
}
trap cleanup EXIT

[[ "$(id -u)" == 0 ]] || { echo "agent.sh needs root (loop devices, mount namespaces)" >&2; exit 1; }
for tool in losetup unshare qemu-img parted xorriso blkid wipefs; do
  command -v "${tool}" >/dev/null || { echo "agent.sh needs ${tool} (see .ci/run's DEBIAN_PACKAGES)" >&2; exit 1; }
done

installed="$("${ipa_venv}/bin/pip" show ironic-python-agent 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [[ "${installed}" != "${IPA_VERSION}" ]]; then
  echo "installing ironic-python-agent ${IPA_VERSION} into ${ipa_venv}"
  python3 -m venv "${ipa_venv}"
  "${ipa_venv}/bin/pip" install --quiet --disable-pip-version-check "ironic-python-agent==${IPA_VERSION}"
fi
if [[ ! -x "${cli_venv}/bin/baremetal" ]] || ! "${cli_venv}/bin/python" -c 'import openstack' 2>/dev/null; then
  python3 -m venv "${cli_venv}"
  "${cli_venv}/bin/pip" install --quiet --disable-pip-version-check python-ironicclient openstacksdk
fi

cargo build --quiet -p ferric
ferric="${CARGO_TARGET_DIR:-${root}/target}/debug/ferric"

run_engine() {
  local engine=$1 db_url=$2
  local dir="${work}/${engine}"
  mkdir -p "${dir}"
  local backing="${dir}/disk.img"
  truncate -s 5G "${backing}"
  local loop
  loop="$(losetup -P --show -f "${backing}")"
  loops+=("${loop}")
  printf '\n---- %s on %s (%s) (+%ss)\n' "${engine}" "${loop}" "${backing}" "$(($(date +%s) - started))"
  FERRIC_BIN="${ferric}" IPA_PYTHON="${ipa_venv}/bin/python" BAREMETAL="${cli_venv}/bin/baremetal" \
    E2E_WORK="${dir}" E2E_LOOP="${loop}" E2E_BACKING="${backing}" E2E_DB_URL="${db_url}" \
    E2E_ENGINE="${engine}" python3 .ci/agent/e2e.py
  losetup -d "${loop}"
  loops=("${loops[@]/${loop}}")
}

run_engine sqlite "sqlite://${work}/sqlite/ferric.db"
if [[ -n "${FERRIC_TEST_PG_URL:-}" ]]; then
  pg_admin="${FERRIC_TEST_PG_URL}"
  pg_db="ferric_agent_e2e_$$"
  psql "${pg_admin}" -qAtc "CREATE DATABASE ${pg_db}"
  run_engine postgres "${FERRIC_TEST_PG_URL%/*}/${pg_db}"
else
  echo "agent: PostgreSQL run skipped (FERRIC_TEST_PG_URL unset)"
fi
echo "agent: passed in $(($(date +%s) - started))s"
