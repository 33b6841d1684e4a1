#!/bin/sh
# Let systemd forget the removed unit; drop the bytecode the agent cached for itself
# (a new version makes its own on first start).
set -e
rm -rf /var/cache/kvmmanager-agent
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
exit 0
