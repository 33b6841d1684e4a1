#!/bin/sh
# kvm-manager postinst: the service user and its groups, the configuration's owner and
# mode, the venv's bytecode, the agent ISO deployed into libvirt's default pool, and the
# service, enabled and started the way debhelper's dh_installsystemd does it.
set -e

# DPKG_ROOT: set by dpkg --root (and by the tests); empty on a normal install.
ROOT=${DPKG_ROOT:-}
VENV=$ROOT/usr/lib/kvm-manager/venv
DATA=$ROOT/var/lib/kvm-manager
CONF=/etc/kvm-manager/config.toml
UNIT=kvm-manager.service

case "${1:-configure}" in
configure) ;;
abort-upgrade | abort-remove | abort-deconfigure)
	# prerm stopped the service; the old version stays: start it again.
	if [ -d "$ROOT/run/systemd/system" ]; then
		deb-systemd-invoke start "$UNIT" >/dev/null || true
	fi
	exit 0
	;;
*) exit 0 ;;
esac

if ! getent passwd kvm-manager >/dev/null; then
	adduser --system --group --home /var/lib/kvm-manager --no-create-home \
		--gecos "KVM Manager" kvm-manager >/dev/null
fi
# qemu:///system needs the libvirt group, the KVM probe (virt/probe.py) /dev/kvm's kvm
# group. apt may configure this package before libvirt-daemon-system has made its group:
# make it here then (its postinst only creates it when getent finds none, as a system
# group, so it accepts ours), so the membership never depends on the configure order.
# The same for kvm, which udev (systemd-sysusers) and libvirt-daemon-system's postinst
# create only when it is missing: waiting for it left the user out of kvm until the next
# configure (issue 20 independent try).
for group in libvirt kvm; do
	if ! getent group "$group" >/dev/null; then
		addgroup --system "$group" >/dev/null
	fi
	adduser kvm-manager "$group" >/dev/null
done
mkdir -p "$DATA"
chown kvm-manager:kvm-manager "$DATA"
chmod 0750 "$DATA"

# The configuration may hold secrets (a PostgreSQL URL with its password, SMTP
# credentials): readable by the service's group only, writable by root only. The group
# exists only now, so dpkg cannot unpack the file with it; an admin's dpkg-statoverride
# for the file wins.
if [ -f "$ROOT$CONF" ] && ! dpkg-statoverride --list "$CONF" >/dev/null 2>&1; then
	chown root:kvm-manager "$ROOT$CONF"
	chmod 0640 "$ROOT$CONF"
fi

# The venv is this package's own files (built at package build time); only its bytecode
# is made here, as py3compile does, and removed again by prerm.
python3.11 -m compileall -q "$VENV/lib" >/dev/null 2>&1 || true

# The deploy's own error line says why it failed (libvirtd down, no default pool, ...).
if deploy=$("$VENV/bin/kvm-manager" agent-iso deploy --local 2>&1); then
	echo "kvm-manager: the guest agent ISO is deployed in libvirt's default pool"
else
	echo "kvm-manager: the guest agent ISO is not deployed: $(printf '%s\n' "$deploy" | tail -n 1)"
	echo "  deploy it later with: kvm-manager agent-iso deploy --local"
fi

# As dh_installsystemd: enabled on the first install, also in an image build or chroot
# where systemd is not running (deb-systemd-helper writes the links itself); an admin's
# `systemctl disable` survives upgrades (was-enabled is false then: only the state file
# is updated).
deb-systemd-helper unmask "$UNIT" >/dev/null || true
if deb-systemd-helper --quiet was-enabled "$UNIT"; then
	deb-systemd-helper enable "$UNIT" >/dev/null || true
else
	deb-systemd-helper update-state "$UNIT" >/dev/null || true
fi
# prerm stopped the old version before dpkg replaced its files; start the new one.
# restart on an upgrade also covers an old prerm that did not stop it. deb-systemd-invoke
# starts no disabled unit and asks policy-rc.d (image builds forbid starts there).
if [ -d "$ROOT/run/systemd/system" ]; then
	systemctl --system daemon-reload >/dev/null || true
	if [ -n "${2:-}" ]; then
		deb-systemd-invoke restart "$UNIT" >/dev/null || true
	else
		deb-systemd-invoke start "$UNIT" >/dev/null || true
	fi
fi
exit 0
