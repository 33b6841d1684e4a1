#!/bin/sh
# Let systemd forget the removed unit; drop the bytecode the agent cached for itself
# (a new version makes its own on first start). Debian: as dh_installsystemd and
# dh_installinit, remove masks the unit (its kept enable link starts nothing), purge
# forgets its enablement and removes the init script's runlevel links.
set -e
NAME=kvmmanager-agent
rm -rf /var/cache/kvmmanager-agent
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
# init-system-helpers may be gone by the time of a purge.
if command -v deb-systemd-helper >/dev/null 2>&1; then
	case "${1:-}" in
	remove) deb-systemd-helper mask $NAME.service >/dev/null || true ;;
	purge)
		deb-systemd-helper purge $NAME.service >/dev/null || true
		deb-systemd-helper unmask $NAME.service >/dev/null || true
		;;
	esac
fi
if [ "${1:-}" = purge ] && command -v update-rc.d >/dev/null 2>&1; then
	update-rc.d kvmmanager-agent remove >/dev/null || true
fi
exit 0
