# Shared by init and the guest helpers (sourced, busybox sh).
log() { echo "kvmm-e2e: $* [t=$(cut -d' ' -f1 /proc/uptime)]" >/dev/console; }

# supervise NAME CMD...: run CMD in the background, restarting it 1 s after it exits,
# so a crashed agent is a real event followed by a real restart.
supervise() {
  name=$1; shift
  (
    trap 'kill "$child" 2>/dev/null; exit 0' TERM
    n=0
    while [ ! -e "/run/kvmm-e2e/$name.stop" ]; do
      "$@" </dev/null >/dev/console 2>&1 &
      child=$!
      echo "$child" >"/run/kvmm-e2e/$name.pid"
      log "service $name started pid=$child"
      wait "$child"
      rc=$?
      n=$((n + 1))
      log "service $name exited rc=$rc restarts=$n"
      sleep 1
    done
  ) &
  echo $! >"/run/kvmm-e2e/$name.supervisor.pid"
}
