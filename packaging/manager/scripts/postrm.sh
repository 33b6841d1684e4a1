#!/bin/sh
# kvm-manager postrm: remove what postinst made. remove: the venv's bytecode. purge: also the
# data directory (database!), the configuration and the service user. The agent ISO stays in
# the libvirt pool, because VMs may still use it:
# `kvm-manager vol delete default kvmmanager-guest-agent-*.iso`.
# The unit's enablement is handled as dh_installsystemd does (mask on remove so a kept
# enable link starts nothing; purge forgets the state).
set -e
ROOT=${DPKG_ROOT:-}
UNIT=kvm-manager.service
case "${1:-}" in
remove | purge)
	# Bytecode a later run wrote (dpkg removed the package's own files already).
	find "$ROOT/usr/lib/kvm-manager" -name __pycache__ -type d -prune \
		-exec rm -rf {} + 2>/dev/null || true
	rmdir "$ROOT/usr/lib/kvm-manager/venv" "$ROOT/usr/lib/kvm-manager" 2>/dev/null || true
	if [ -d "$ROOT/run/systemd/system" ]; then
		systemctl --system daemon-reload >/dev/null || true
	fi
	;;
esac
# init-system-helpers may be gone by the time of a purge.
if command -v deb-systemd-helper >/dev/null; then
	case "${1:-}" in
	remove) deb-systemd-helper mask "$UNIT" >/dev/null || true ;;
	purge)
		deb-systemd-helper purge "$UNIT" >/dev/null || true
		deb-systemd-helper unmask "$UNIT" >/dev/null || true
		;;
	esac
fi
if [ "${1:-}" = purge ]; then
	rm -rf "$ROOT/var/lib/kvm-manager" "$ROOT/etc/kvm-manager"
	if getent passwd kvm-manager >/dev/null; then
		deluser --system kvm-manager >/dev/null || true
	fi
	if getent group kvm-manager >/dev/null; then
		delgroup --system kvm-manager >/dev/null || true
	fi
fi
exit 0
