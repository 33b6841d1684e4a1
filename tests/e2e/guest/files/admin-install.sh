#!/bin/sh
# What the administrator types, as the CD's INSTALL.txt says: mount the agent CD-ROM,
# run install.sh from it, unmount it, and (there being no systemd/OpenRC here) hand the
# agent to the supervisor. Nothing of the agent is in the image: it all comes from the ISO.
. /usr/lib/kvmm-e2e/lib.sh
mkdir -p /mnt/kvmm
i=0
until [ -e /dev/sr0 ] || [ "$i" -ge 50 ]; do usleep 100000; i=$((i + 1)); done
if ! mount -r /dev/sr0 /mnt/kvmm; then
  log "no agent CD-ROM: agent not installed"
  exit 0
fi
log "cdrom mounted: $(ls /mnt/kvmm | tr '\n' ' ')"
mkdir -p /etc/kvmmanager-agent
# The administrator's own settings (allow-list, paths, sizes): install.sh keeps an
# existing config, so the tests know exactly what the agent allows.
[ -e /etc/kvmmanager-agent/config.json ] \
  || cp /usr/lib/kvmm-e2e/agent-config.json /etc/kvmmanager-agent/config.json
cd /mnt/kvmm || exit 1
sh /mnt/kvmm/install.sh >/run/kvmm-e2e/install.log 2>&1
rc=$?
cd /
umount /mnt/kvmm && log "cdrom unmounted"
cat /run/kvmm-e2e/install.log
log "install.sh rc=$rc"
[ "$rc" = 0 ] || exit 0
# With no init system install.sh starts nothing and prints the command to run: type
# exactly that, under the supervisor (this guest's "init system").
cmd=$(sed -n '/start the agent with/{n;s/^kvmmanager-agent: *//p;}' /run/kvmm-e2e/install.log)
if [ -z "$cmd" ]; then
  log "install.sh printed no start command"
  exit 0
fi
# shellcheck disable=SC2086 # the printed command is words on purpose
supervise agent $cmd
