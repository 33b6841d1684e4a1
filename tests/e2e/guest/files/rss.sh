#!/bin/sh
# Prints "NAME PID RSS_KB" for every supervised service (agent, qemu-ga, ...).
for f in /run/kvmm-e2e/*.pid; do
  case "$f" in *.supervisor.pid) continue ;; esac
  name=${f##*/}; name=${name%.pid}
  pid=$(cat "$f")
  rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null)
  echo "$name $pid ${rss:-?}"
done
