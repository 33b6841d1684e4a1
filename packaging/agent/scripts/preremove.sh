#!/bin/sh
# Stop and disable the agent before its files go away. On an upgrade (deb "upgrade",
# rpm "1", apk pre-upgrade) the service keeps running and postinstall restarts it.
set -e
case "${1:-}" in
upgrade | 1) exit 0 ;;
esac
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now kvmmanager-agent.service || true
elif command -v rc-update >/dev/null 2>&1; then
	rc-service kvmmanager-agent stop || true
	rc-update del kvmmanager-agent default || true
fi
exit 0
