#!/bin/sh
# kvm-manager postinst: the service user and its groups, the venv's bytecode, the
# service, and the agent ISO deployed into libvirt's default pool.
set -e

[ "${1:-configure}" = configure ] || exit 0

# DPKG_ROOT: set by dpkg --root (and by the tests); empty on a normal install.
ROOT=${DPKG_ROOT:-}
VENV=$ROOT/usr/lib/kvm-manager/venv
DATA=$ROOT/var/lib/kvm-manager

if ! getent passwd kvm-manager >/dev/null; then
	adduser --system --group --home /var/lib/kvm-manager --no-create-home \
		--gecos "KVM Manager" kvm-manager >/dev/null
fi
# qemu:///system needs the libvirt group, the KVM probe (virt/probe.py) /dev/kvm's kvm
# group. apt may configure this package before libvirt-daemon-system has made its group:
# make it here then (its postinst only creates it when getent finds none, as a system
# group, so it accepts ours), so the membership never depends on the configure order.
if ! getent group libvirt >/dev/null; then
	addgroup --system libvirt >/dev/null
fi
adduser kvm-manager libvirt >/dev/null
if getent group kvm >/dev/null; then
	adduser kvm-manager kvm >/dev/null
fi
mkdir -p "$DATA"
chown kvm-manager:kvm-manager "$DATA"
chmod 0750 "$DATA"

# The venv is this package's own files (built at package build time); only its bytecode
# is made here, as py3compile does, and removed again by prerm.
python3.11 -m compileall -q "$VENV/lib" >/dev/null 2>&1 || true

if [ -d "$ROOT/run/systemd/system" ]; then
	systemctl daemon-reload || true
	systemctl enable kvm-manager.service || true
	systemctl restart kvm-manager.service || true
fi

if "$VENV/bin/kvm-manager" agent-iso deploy --local >/dev/null 2>&1; then
	echo "kvm-manager: the guest agent ISO is deployed in libvirt's default pool"
else
	echo "kvm-manager: libvirtd is not reachable now; deploy the guest agent ISO later with:"
	echo "  kvm-manager agent-iso deploy --local"
fi
exit 0
