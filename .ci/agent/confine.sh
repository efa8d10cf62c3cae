#!/usr/bin/env bash
# Confinement (b) of the agent E2E (issue 14): run a command in a private
# mount namespace whose /dev is a fresh tmpfs holding only null, zero,
# random, urandom, the fd/stdin/stdout/stderr links, shm and ONE loop device
# (plus its partitions, mirrored from sysfs by a bounded watcher, because the
# kernel creates partition nodes only in the real devtmpfs).
#
#   unshare -m -p -f --mount-proc --propagation private \
#       .ci/agent/confine.sh /dev/loopN MAX_SECONDS CMD...
#   .ci/agent/confine.sh --check /dev/loopN MAX_SECONDS CMD...   (checks only, mounts nothing)
#
# The PID namespace (with its own /proc) also keeps the agent from seeing
# the machine's processes (IPA's `fuser` checks, and it cannot signal them).
# Refuses (exit 2) outside private mount and PID namespaces or for anything
# but the test's attached /dev/loopN. Every check runs before anything is
# mounted, and the namespace check fails closed: this script must be PID 1
# of its PID namespace and its mount namespace must differ from the one the
# caller names in FERRIC_E2E_HOST_MNTNS (its own). The watcher and the
# command end together; the watcher stops after MAX_SECONDS at the latest.
set -euo pipefail

refuse() { echo "confine.sh: REFUSING: $*" >&2; exit 2; }

check_only=false
if [[ "${1:-}" == "--check" ]]; then
  check_only=true
  shift
fi
loop=${1:-}
max_seconds=${2:-}
shift 2 || refuse "usage: confine.sh /dev/loopN MAX_SECONDS CMD..."
[[ $# -gt 0 ]] || refuse "no command"
[[ "${loop}" =~ ^/dev/(loop[0-9]+)$ ]] || refuse "${loop} is not /dev/loopN"
name=${BASH_REMATCH[1]}
[[ "${max_seconds}" =~ ^[0-9]+$ ]] || refuse "MAX_SECONDS ${max_seconds} is not a number"
# The caller names its own (the host's) mount namespace; PID 1's may not be
# readable in a container.
host_ns=${FERRIC_E2E_HOST_MNTNS:-}
[[ "${host_ns}" =~ ^mnt:\[[0-9]+\]$ ]] || refuse "FERRIC_E2E_HOST_MNTNS (the caller's mount namespace) is not set"
[[ $$ == 1 ]] || refuse "not PID 1 of a new PID namespace (run under unshare -m -p -f --mount-proc)"
own_ns=$(readlink /proc/self/ns/mnt) || refuse "cannot read this process's mount namespace"
[[ "${own_ns}" =~ ^mnt:\[[0-9]+\]$ && "${own_ns}" != "${host_ns}" ]] \
  || refuse "not in a private mount namespace (${own_ns}; the caller's is ${host_ns})"
[[ -r "/sys/block/${name}/dev" ]] || refuse "${name} is not attached"
[[ "$(cat "/sys/block/${name}/loop/backing_file" 2>/dev/null)" == "${FERRIC_E2E_BACKING:?}" ]] \
  || refuse "${name} is not backed by the test's file ${FERRIC_E2E_BACKING}"
majmin=$(cat "/sys/block/${name}/dev")
[[ "${majmin}" =~ ^7:[0-9]+$ ]] || refuse "${name} is not a loop device (${majmin})"
if ${check_only}; then
  echo "confine.sh: checks passed (nothing mounted)"
  exit 0
fi

# Nothing mounted here propagates back to the host.
mount --make-rprivate /
mount -t tmpfs -o mode=755,size=1m ferric-e2e-dev /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir /dev/shm
mount -t tmpfs -o mode=1777,size=16m ferric-e2e-shm /dev/shm
mknod -m 600 "/dev/${name}" b "${majmin%%:*}" "${majmin##*:}"

# mirror: /sys/block/loopN/loopNpK/dev -> /dev/loopNpK (created, re-created
# when the numbers change, removed when the partition is gone).
mirror() {
  local p sys want have
  for sys in /sys/block/"${name}"/"${name}"p*; do
    [[ -e "${sys}/dev" ]] || continue
    p=${sys##*/}
    want=$(cat "${sys}/dev" 2>/dev/null) || continue
    have=""
    [[ -b "/dev/${p}" ]] && have="$(printf '%d:%d' "0x$(stat -c %t "/dev/${p}")" "0x$(stat -c %T "/dev/${p}")")"
    if [[ "${have}" != "${want}" ]]; then
      rm -f "/dev/${p}"
      mknod -m 600 "/dev/${p}" b "${want%%:*}" "${want##*:}"
    fi
  done
  for p in /dev/"${name}"p*; do
    [[ -e "${p}" ]] || continue
    [[ -e "/sys/block/${name}/${p##*/}" ]] || rm -f "${p}"
  done
}
mirror

"$@" &
child=$!
trap 'kill -TERM "${child}" 2>/dev/null || true' TERM INT
deadline=$(( $(date +%s) + max_seconds ))
while kill -0 "${child}" 2>/dev/null; do
  if (( $(date +%s) > deadline )); then
    echo "confine.sh: ${max_seconds}s limit reached; stopping the command" >&2
    kill -KILL "${child}" 2>/dev/null || true
    break
  fi
  mirror
  sleep 0.1
done
wait "${child}"
