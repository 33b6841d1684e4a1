#!/bin/sh
# kvm-manager prerm: stop the service before its files go (not on upgrade: postinst
# restarts it).
set -e
case "${1:-}" in
upgrade) exit 0 ;;
esac
if [ -d "${DPKG_ROOT:-}/run/systemd/system" ]; then
	systemctl disable --now kvm-manager.service || true
fi
exit 0
