#!/bin/sh
# Stop the agent before its files go away. On an upgrade (deb "upgrade", rpm "1"; apk
# runs no pre-deinstall then) the service keeps running and postinstall restarts it.
set -e
NAME=kvmmanager-agent
case "${1:-}" in
upgrade | 1) exit 0 ;;
esac
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		# Debian: stopped here; postremove masks (remove) or forgets (purge) the unit.
		deb-systemd-invoke stop $NAME.service >/dev/null || true
	else
		# rpm, as %systemd_preun.
		systemctl --no-reload disable --now $NAME.service || true
	fi
elif command -v rc-update >/dev/null 2>&1; then
	rc-service $NAME stop || true
	rc-update del $NAME default || true
elif [ -x /etc/init.d/$NAME ] && command -v invoke-rc.d >/dev/null 2>&1; then
	invoke-rc.d $NAME stop || true
fi
exit 0
