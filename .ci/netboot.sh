#!/usr/bin/env bash
# A real VM boots its ramdisk through ferric (issue 15).
#
# In a network namespace this script creates (a bridge with 10.77.0.1/24 and a
# tap), `ferric serve` listens on the bridge and runs the dnsmasq it manages
# (pxe.dnsmasq_spawn: DHCP and TFTP on the bridge only). A node (power `fake`,
# boot `ipxe`, deploy `direct`) with a port for the VM's MAC is deployed: ferric
# caches Debian's kernel and a tiny busybox initramfs from file:// URLs and
# writes the MAC's DHCP entries. Then qemu-system-x86_64 (TCG) boots from the
# network: SeaBIOS' iPXE ROM gets DHCP from that dnsmasq (iPXE user class: the
# boot file is ferric's chain script URL), chains to the node's script by MAC,
# downloads kernel and initrd from ferric over HTTP and boots. The initramfs
# prints a marker on the serial console, takes an address with udhcpc, calls
# `GET /v1/lookup?addresses=MAC` with busybox wget and prints the answer (the
# test requires an HTTP answer, and the node's UUID in it when it is a 200),
# then powers off.
# Also checked: the first stage over dnsmasq's TFTP (`undionly.kpxe` read back
# with busybox tftp) and tear-down turning the MAC's entry to `ignore`.
#
# Then the same kernel and initramfs boot with QEMU's -kernel/-initrd (no
# firmware network boot): the power-on → lookup time of both is printed
# (BENCHMARKS.md). Last, the boot ISO (crates/ferric-conductor/tests/iso.rs)
# boots the same kernel with BIOS and UEFI. All traffic stays in the namespace; every process is
# stopped by PID; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
# shellcheck source=.ci/lib.sh
source .ci/lib.sh
started=$(date +%s)
work="$(mktemp -d)"
ns="ferric-nb-$$"
ferric_pid=""
qemu_pid=""
MAC="52:54:00:4e:42:01"
BRIDGE_IP="10.77.0.1"
TOKEN="netboot-ci-token"

cleanup() {
  local rc=$?
  stop_pid "${qemu_pid}"
  stop_pid "${ferric_pid}"
  ip netns del "${ns}" 2>/dev/null || true
  if [[ ${rc} -ne 0 ]]; then
    echo "netboot: FAILED (exit ${rc}); logs follow" >&2
    for log in "${work}"/*.log; do
      [[ -e "${log}" ]] || continue
      echo "==== ${log##*/}" >&2
      tail -n 80 "${log}" >&2
    done
  fi
  rm -rf "${work}"
  exit "${rc}"
}
trap cleanup EXIT

for tool in qemu-system-x86_64 dnsmasq busybox ip; do
  command -v "${tool}" >/dev/null || { echo "netboot: ${tool} missing (see .ci/run DEBIAN_PACKAGES)" >&2; exit 1; }
done
[[ -e /usr/lib/ipxe/qemu/efi-e1000.rom || -e /usr/share/qemu/efi-e1000.rom ]] \
  || { echo "netboot: QEMU's iPXE ROM missing (ipxe-qemu)" >&2; exit 1; }

# ---- the kernel: Debian's, extracted from its .deb (nothing installed into /boot)
kdir="${root}/target/netboot-kernel"
if [[ ! -s "${kdir}/vmlinuz" || ! -s "${kdir}/e1000.ko" ]]; then
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  [[ -n "${pkg}" ]] || { echo "netboot: cannot resolve linux-image-amd64" >&2; exit 1; }
  rm -rf "${kdir}" && mkdir -p "${kdir}/deb"
  (cd "${kdir}/deb" && apt-get download "${pkg}" >/dev/null 2>&1)
  dpkg-deb -x "${kdir}"/deb/*.deb "${kdir}/x"
  cp "${kdir}"/x/boot/vmlinuz-* "${kdir}/vmlinuz"
  find "${kdir}/x/lib/modules" -name e1000.ko -exec cp {} "${kdir}/e1000.ko" \;
  rm -rf "${kdir}/deb" "${kdir}/x"
fi

# ---- the initramfs: busybox, the NIC driver, a marker, the lookup
ird="${work}/initramfs"
mkdir -p "${ird}"/{bin,proc,sys,dev,etc}
cp "$(command -v busybox)" "${ird}/bin/busybox"
cp "${kdir}/e1000.ko" "${ird}/e1000.ko"
cat >"${ird}/udhcpc.sh" <<'SH'
#!/bin/busybox sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
/bin/busybox ip addr add "$ip/${mask:-24}" dev "$interface"
SH
cat >"${ird}/init" <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "FERRIC-NETBOOT-MARKER ramdisk up: $(cat /proc/cmdline)"
MAC=""; API=""
for p in $(cat /proc/cmdline); do
  case "$p" in
    BOOTIF=*) MAC="${p#BOOTIF=}" ;;
    ipa-api-url=*) API="${p#ipa-api-url=}" ;;
  esac
done
insmod /e1000.ko
ip link set lo up
for i in $(seq 1 50); do ip link show eth0 >/dev/null 2>&1 && break; sleep 0.1; done
ip link set eth0 up
udhcpc -i eth0 -n -q -t 20 -T 1 -s /udhcpc.sh >/dev/null 2>&1 || echo "FERRIC-NETBOOT udhcpc failed"
echo "FERRIC-NETBOOT address: $(ip -4 addr show eth0 | grep inet)"
OUT="$(wget -q -S -O - --header 'X-OpenStack-Ironic-API-Version: 1.68' "$API/v1/lookup?addresses=$MAC" 2>&1)"
echo "FERRIC-LOOKUP mac=$MAC answer: $(echo "$OUT" | tr '\n' ' ')"
echo "FERRIC-NETBOOT-DONE"
poweroff -f
SH
chmod +x "${ird}/init" "${ird}/udhcpc.sh"
(cd "${ird}" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"${work}/initrd.gz"
echo "initramfs: $(stat -c %s "${work}/initrd.gz") bytes, kernel: $(stat -c %s "${kdir}/vmlinuz") bytes"

# ---- the namespace: bridge + tap, nothing routed outside
ip netns add "${ns}"
ip -n "${ns}" link set lo up
ip -n "${ns}" link add br0 type bridge
ip -n "${ns}" addr add "${BRIDGE_IP}/24" dev br0
ip -n "${ns}" link set br0 up
ip -n "${ns}" tuntap add dev tap0 mode tap
ip -n "${ns}" link set tap0 master br0
ip -n "${ns}" link set tap0 up

# ---- ferric, with its dnsmasq, inside the namespace
cargo build --quiet -p ferric
ferric="${CARGO_TARGET_DIR:-${root}/target}/debug/ferric"
state="${work}/state"
mkdir -p "${state}"
api="http://${BRIDGE_IP}:6385"
env -i PATH="${PATH}" HOME="${work}" RUST_LOG="info" \
  FERRIC_API__AUTH=token FERRIC_API__TOKEN="${TOKEN}" \
  FERRIC_PXE__STATE_DIR="${state}" \
  FERRIC_PXE__DNSMASQ_SPAWN=true \
  FERRIC_PXE__DNSMASQ_INTERFACE=br0 \
  FERRIC_PXE__DNSMASQ_DHCP_RANGE="10.77.0.100,10.77.0.200,255.255.255.0,1h" \
  FERRIC_PXE__DNSMASQ_EXTRA='["user=root", "pid-file=", "log-facility=-"]' \
  ip netns exec "${ns}" "${ferric}" serve --database-url "sqlite://${work}/ferric.db" \
  --host netboot-conductor --api-host "${BRIDGE_IP}" --api-port 6385 >"${work}/ferric.log" 2>&1 &
ferric_pid=$!

in_ns() { ip netns exec "${ns}" "$@"; }
call() { # METHOD PATH [JSON]
  local args=(-sS -o "${work}/reply.json" -w '%{http_code}' -X "$1" -H "X-Auth-Token: ${TOKEN}"
              -H 'X-OpenStack-Ironic-API-Version: 1.80' -H 'Content-Type: application/json')
  [[ $# -ge 3 ]] && args+=(-d "$3")
  in_ns curl "${args[@]}" "${api}$2"
}
for _ in $(seq 1 300); do
  [[ "$(call GET /v1 2>/dev/null || true)" == 200 ]] && break
  kill -0 "${ferric_pid}" 2>/dev/null || { echo "ferric serve exited early" >&2; exit 1; }
  sleep 0.1
done
[[ "$(call GET /v1)" == 200 ]] || { echo "ferric did not answer" >&2; exit 1; }
grep -q "dnsmasq started" "${work}/ferric.log" || { echo "ferric did not start dnsmasq" >&2; exit 1; }

# ---- the first stage over TFTP (what a non-iPXE PXE ROM would load)
for _ in $(seq 1 50); do
  in_ns busybox tftp -g -r undionly.kpxe -l "${work}/undionly.kpxe" "${BRIDGE_IP}" 2>/dev/null && break
  sleep 0.1
done
cmp "${work}/undionly.kpxe" /usr/lib/ipxe/undionly.kpxe
echo "TFTP: undionly.kpxe served by ferric's dnsmasq"

# ---- the node
wait_state() { # NODE STATE SECONDS
  local s=""
  for _ in $(seq 1 $(($3 * 10))); do
    call GET "/v1/nodes/$1" >/dev/null
    s="$(python3 -c 'import json,sys; n=json.load(open(sys.argv[1])); print(n["provision_state"] if n.get("reservation") is None else "")' "${work}/reply.json")"
    [[ "${s}" == "$2" ]] && return 0
    sleep 0.1
  done
  echo "node $1 never reached $2 (last: ${s}): $(cat "${work}/reply.json")" >&2
  return 1
}
code="$(call POST /v1/nodes "{\"name\": \"vm1\", \"driver\": \"fake-hardware\", \"boot_interface\": \"ipxe\",
  \"deploy_interface\": \"direct\", \"automated_clean\": false,
  \"driver_info\": {\"deploy_kernel\": \"file://${kdir}/vmlinuz\", \"deploy_ramdisk\": \"file://${work}/initrd.gz\",
                    \"kernel_append_params\": \"console=ttyS0 panic=-1 %default%\"},
  \"instance_info\": {\"image_source\": \"http://${BRIDGE_IP}:1/disk.raw\",
                      \"image_checksum\": \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"}}")"
[[ "${code}" == 201 ]] || { echo "node create: ${code} $(cat "${work}/reply.json")" >&2; exit 1; }
node="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uuid"])' "${work}/reply.json")"
code="$(call POST /v1/ports "{\"address\": \"${MAC}\", \"node_uuid\": \"${node}\"}")"
[[ "${code}" == 201 ]] || { echo "port create: ${code} $(cat "${work}/reply.json")" >&2; exit 1; }
for step in manage:manageable provide:available active:"wait call-back"; do
  code="$(call PUT "/v1/nodes/vm1/states/provision" "{\"target\": \"${step%%:*}\"}")"
  [[ "${code}" == 202 ]] || { echo "${step%%:*}: ${code} $(cat "${work}/reply.json")" >&2; exit 1; }
  wait_state vm1 "${step#*:}" 60
done
host_file="${state}/dnsmasq/hostsdir.d/ferric-${MAC//:/-}.conf"
grep -qx "${MAC},set:ferric-${node},set:ferric" "${host_file}"
echo "node ${node} waits for its ramdisk (+$(($(date +%s) - started))s); DHCP entry: $(cat "${host_file}")"

# ---- boot the VM from the network; bounded wait for the lookup line
boot_vm() { # LOG [extra qemu args...]
  local log="$1"; shift
  : >"${log}"
  # Directly, not through a shell function: $! must be QEMU's own PID.
  ip netns exec "${ns}" qemu-system-x86_64 -machine pc,accel=tcg -m 512 -smp 1 -display none -monitor none \
    -no-reboot -serial "file:${log}" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device e1000,netdev=n0,mac="${MAC}" \
    "$@" >"${log%.log}.qemu.log" 2>&1 &
  qemu_pid=$!
}
wait_line() { # LOG PATTERN SECONDS → prints the milliseconds since $t0
  for _ in $(seq 1 $(($3 * 10))); do
    if grep -q "$2" "$1" 2>/dev/null; then
      echo $(( $(date +%s%3N) - t0 ))
      return 0
    fi
    kill -0 "${qemu_pid}" 2>/dev/null || { grep -q "$2" "$1" && { echo $(( $(date +%s%3N) - t0 )); return 0; }; echo "qemu exited" >&2; return 1; }
    sleep 0.1
  done
  echo "timeout waiting for ${2}" >&2
  return 1
}

t0=$(date +%s%3N)
net_t0=${t0}
boot_vm "${work}/vm-net.log" -boot n
banner_ms="$(wait_line "${work}/vm-net.log" "Linux version" 150)"
marker_ms="$(wait_line "${work}/vm-net.log" "FERRIC-NETBOOT-MARKER" 60)"
lookup_ms="$(wait_line "${work}/vm-net.log" "FERRIC-LOOKUP" 60)"
wait_line "${work}/vm-net.log" "FERRIC-NETBOOT-DONE" 30 >/dev/null
stop_pid "${qemu_pid}"; qemu_pid=""
grep -m1 "Linux version" "${work}/vm-net.log"
grep -m1 "FERRIC-NETBOOT-MARKER" "${work}/vm-net.log" | cut -c1-300
grep -m1 "FERRIC-NETBOOT address" "${work}/vm-net.log" || true
lookup_line="$(grep -m1 "FERRIC-LOOKUP" "${work}/vm-net.log")"
echo "${lookup_line}" | cut -c1-400
grep -q "ipa-api-url=${api}" "${work}/vm-net.log"
grep -q "BOOTIF=${MAC}" "${work}/vm-net.log"
grep -q "FERRIC-LOOKUP mac=${MAC} answer: .*HTTP/1.1 [0-9][0-9][0-9]" <<<"${lookup_line}" \
  || { echo "the ramdisk got no HTTP answer from ferric's lookup" >&2; exit 1; }
if grep -q "HTTP/1.1 200" <<<"${lookup_line}"; then
  grep -q "${node}" <<<"${lookup_line}" || { echo "lookup answered 200 without the node" >&2; exit 1; }
fi
grep -q "iPXE script served" "${work}/ferric.log" || { echo "ferric never served the node's script" >&2; exit 1; }
grep -q "DHCPACK(br0).*${MAC}" "${work}/ferric.log" || { echo "dnsmasq never acknowledged the VM" >&2; exit 1; }

# ---- the limit: QEMU boots the same kernel and initramfs from local files
t0=$(date +%s%3N)
boot_vm "${work}/vm-local.log" -kernel "${kdir}/vmlinuz" -initrd "${work}/initrd.gz" \
  -append "console=ttyS0 panic=-1 nofb nomodeset vga=normal ipa-api-url=${api} BOOTIF=${MAC}"
local_banner_ms="$(wait_line "${work}/vm-local.log" "Linux version" 150)"
local_lookup_ms="$(wait_line "${work}/vm-local.log" "FERRIC-LOOKUP" 60)"
wait_line "${work}/vm-local.log" "FERRIC-NETBOOT-DONE" 30 >/dev/null
stop_pid "${qemu_pid}"; qemu_pid=""

# ---- tear down: the MAC's entry turns to ignore, the options go
code="$(call PUT "/v1/nodes/vm1/states/provision" '{"target": "deleted"}')"
[[ "${code}" == 202 ]] || { echo "deleted: ${code} $(cat "${work}/reply.json")" >&2; exit 1; }
wait_state vm1 available 60
grep -qx "${MAC},ignore" "${host_file}"
[[ ! -e "${state}/dnsmasq/optsdir.d/ferric-${node}.conf" ]]

# Where the network boot's time goes: ferric's log timestamps against power-on.
since_t0() { # PATTERN → ms from the network VM's power-on to ferric's first log line matching
  python3 - "${work}/ferric.log" "$1" "${net_t0}" <<'PY'
import re, sys, datetime
path, pat, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
for line in open(path, errors="replace"):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    if m and pat in line:
        t = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.timezone.utc)
        print(int(t.timestamp() * 1000) - t0)
        break
else:
    print("?")
PY
}
echo "power-on → chain script: $(since_t0 'iPXE chain script served') ms, node script: $(since_t0 'iPXE script served') ms,"\
  "kernel requested: $(since_t0 'file=deploy_kernel') ms, initrd requested: $(since_t0 'file=deploy_ramdisk') ms"
echo "power-on → kernel banner: network ${banner_ms} ms, local ${local_banner_ms} ms"
echo "power-on → ramdisk marker: network ${marker_ms} ms"
echo "power-on → lookup answered: network ${lookup_ms} ms, local ${local_lookup_ms} ms"
# ---- the boot ISO (for virtual media) boots the same kernel with BIOS and UEFI
FERRIC_TEST_KERNEL="${kdir}/vmlinuz" FERRIC_TEST_REQUIRE="${FERRIC_TEST_REQUIRE:-},FERRIC_TEST_KERNEL" cargo test --quiet -p ferric-conductor --test iso 2>&1 | tail -n 3
echo "boot ISO: BIOS and UEFI boots checked (+$(($(date +%s) - started))s)"

echo "netboot: OK ($(($(date +%s) - started))s)"
