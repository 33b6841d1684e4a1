#!/bin/sh
# Kills the agent with SIGKILL one second after returning, so the exec call that ran this
# gets its reply and the crash happens between calls. The supervisor restarts it.
pid=$(cat /run/kvmm-e2e/agent.pid) || exit 1
setsid sh -c "sleep 1; kill -9 $pid" </dev/null >/dev/null 2>&1 &
echo "agent pid $pid will be killed"
