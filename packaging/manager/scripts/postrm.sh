#!/bin/sh
# kvm-manager postrm: remove what postinst made. remove: the virtualenv. purge: also the
# data directory (database!) and the service user. The agent ISO stays in the libvirt
# pool, because VMs may still use it: `kvm-manager vol delete default kvmmanager-guest-agent-*.iso`.
set -e
ROOT=${DPKG_ROOT:-}
case "${1:-}" in
remove | purge)
	rm -rf "$ROOT/opt/kvm-manager/venv"
	rmdir "$ROOT/opt/kvm-manager" 2>/dev/null || true
	if [ -d "$ROOT/run/systemd/system" ]; then
		systemctl daemon-reload || true
	fi
	;;
esac
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
