#!/bin/sh
# Enable and start the agent on whichever init system the guest has, the way each
# platform's own packages do it. The service only starts for real once the host has
# added the org.kvmmanager.agent.0 port.
# Arguments: deb `configure [old-version]`; rpm `1` (install) or `2` (upgrade); apk
# `new-version` (post-install) or `new-version old-version` (post-upgrade).
set -e
NAME=kvmmanager-agent
UNIT=$NAME.service
first=0
case "${1:-}" in
1) first=1 ;;
2) ;;
*) [ -n "${2:-}" ] || first=1 ;;
esac
running=0
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	running=1
fi

# Enabling: also where systemd is installed but not running (an image build, a chroot),
# and an admin's `systemctl disable` survives upgrades.
if command -v deb-systemd-helper >/dev/null 2>&1; then
	# Debian, as dh_installsystemd: enabled on the first install (was-enabled is true
	# then), only the state file is updated afterwards.
	deb-systemd-helper unmask "$UNIT" >/dev/null || true
	if deb-systemd-helper --quiet was-enabled "$UNIT"; then
		deb-systemd-helper enable "$UNIT" >/dev/null || true
	else
		deb-systemd-helper update-state "$UNIT" >/dev/null || true
	fi
elif [ "$first" = 1 ] && command -v systemctl >/dev/null 2>&1; then
	# rpm, as %systemd_post: the preset this package ships (80-kvmmanager-agent.preset)
	# enables it; a distribution's or admin's preset that says disable wins.
	systemctl --no-reload preset "$UNIT" >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/$NAME ] && command -v update-rc.d >/dev/null 2>&1; then
	# Debian's sysvinit script (the .deb's), registered as dh_installinit does:
	# update-rc.d keeps existing links, so an admin's `update-rc.d ... disable` stays.
	update-rc.d kvmmanager-agent defaults >/dev/null || true
fi

if [ "$running" = 1 ]; then
	systemctl daemon-reload || true
	if [ -e /dev/virtio-ports/org.kvmmanager.agent.0 ]; then
		if command -v deb-systemd-invoke >/dev/null 2>&1; then
			# Starts no disabled unit and asks policy-rc.d.
			deb-systemd-invoke restart "$UNIT" >/dev/null || true
		elif systemctl --quiet is-enabled "$UNIT"; then
			systemctl restart "$UNIT" || true
		fi
	fi
	if command -v udevadm >/dev/null 2>&1; then
		udevadm control --reload || true
		udevadm trigger --subsystem-match=virtio-ports || true
	fi
elif command -v rc-update >/dev/null 2>&1; then
	rc-update add $NAME default || true
	rc-service $NAME restart || true
elif [ -x /etc/init.d/$NAME ] && command -v invoke-rc.d >/dev/null 2>&1; then
	# sysvinit (Debian): invoke-rc.d obeys the runlevel links and policy-rc.d.
	if [ -e /dev/virtio-ports/org.kvmmanager.agent.0 ]; then
		invoke-rc.d $NAME restart || true
	fi
fi
exit 0
