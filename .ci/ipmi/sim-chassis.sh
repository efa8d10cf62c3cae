#!/bin/sh
# ipmi_sim's chassis_control hook for .ci/ipmi.sh's "sim" part: the simulated
# chassis keeps its power and boot device in files under STATE_DIR.
# Called by ipmi_sim as: sim-chassis.sh STATE_DIR MC get power|boot ...
#                    or: sim-chassis.sh STATE_DIR MC set power 0|1 | boot DEV ...
set -eu
state="$1"; op="$3"; shift 3
echo "${op} $*" >>"${state}/calls.log"
case "${op}" in
  get)
    for p in "$@"; do
      case "${p}" in
        power) echo "power:$(cat "${state}/power" 2>/dev/null || echo 0)" ;;
        boot) echo "boot:$(cat "${state}/boot" 2>/dev/null || echo default)" ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      case "$1" in
        power|boot) echo "$2" >"${state}/$1" ;;
      esac
      shift 2
    done ;;
esac
