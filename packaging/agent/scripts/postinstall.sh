#!/bin/sh
# Enable and start the agent on whichever init system the guest runs. The service only
# starts for real once the host has added the org.kvmmanager.agent.0 port.
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
	systemctl enable kvmmanager-agent.service || true
	if [ -e /dev/virtio-ports/org.kvmmanager.agent.0 ]; then
		systemctl restart kvmmanager-agent.service || true
	fi
	if command -v udevadm >/dev/null 2>&1; then
		udevadm control --reload || true
		udevadm trigger --subsystem-match=virtio-ports || true
	fi
elif command -v rc-update >/dev/null 2>&1; then
	rc-update add kvmmanager-agent default || true
	rc-service kvmmanager-agent restart || true
fi
exit 0
