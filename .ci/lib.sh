# Shared by the .ci scripts (sourced after they cd to the repository root).

# stop_pid PID [TENTHS]: SIGTERM, up to TENTHS tenths of a second (default
# 100) for it to exit, then SIGKILL; reaped if it is this shell's child.
# Nothing to do for an empty PID or one that has exited.
stop_pid() {
  local pid="$1" tenths="${2:-100}"
  [[ -n "${pid}" ]] || return 0
  if kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 "${tenths}"); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pid}" 2>/dev/null || true
  fi
  wait "${pid}" 2>/dev/null || true
}
