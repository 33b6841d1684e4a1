#!/bin/sh
# kvm-manager prerm: stop the service before dpkg replaces or removes its files (on
# upgrade too: the running server's venv is about to be replaced under it; postinst
# starts the new version), as dh_installsystemd --no-restart-after-upgrade does.
set -e
if [ -d "${DPKG_ROOT:-}/run/systemd/system" ]; then
	deb-systemd-invoke stop kvm-manager.service >/dev/null || true
fi
# The bytecode postinst compiled is no file of the package: remove it before dpkg
# replaces or removes the venv (as py3clean does), on upgrade too.
find "${DPKG_ROOT:-}/usr/lib/kvm-manager/venv" -name __pycache__ -type d -prune \
	-exec rm -rf {} + 2>/dev/null || true
exit 0
