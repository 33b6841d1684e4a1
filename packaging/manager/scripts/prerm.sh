#!/bin/sh
# kvm-manager prerm: stop the service before its files go (not on upgrade: postinst
# restarts it).
set -e
# The bytecode postinst compiled is no file of the package: remove it before dpkg
# replaces or removes the venv (as py3clean does), on upgrade too.
find "${DPKG_ROOT:-}/usr/lib/kvm-manager/venv" -name __pycache__ -type d -prune \
	-exec rm -rf {} + 2>/dev/null || true
case "${1:-}" in
upgrade) exit 0 ;;
esac
if [ -d "${DPKG_ROOT:-}/run/systemd/system" ]; then
	systemctl disable --now kvm-manager.service || true
fi
exit 0
