"""The files the ISO and packages carry agree with the agent they serve."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from kvmmanager.iso import CHANNEL_NAME
from kvmmanager_agent import config as agent_config
from kvmmanager_agent import protocol

AGENT = Path(__file__).resolve().parents[2] / "packaging" / "agent"


def test_config_template_is_accepted_by_the_agent_without_unknown_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kvmmanager_agent"):
        cfg = agent_config.load(str(AGENT / "config.json"))
    assert not [r for r in caplog.records if "unknown key" in r.getMessage()]
    data = json.loads((AGENT / "config.json").read_text())
    assert data["channel_name"] == CHANNEL_NAME == protocol.CHANNEL_NAME
    assert cfg is not None


def test_service_files_run_the_installed_zipapp_with_the_config() -> None:
    cmd = (
        "/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz --config /etc/kvmmanager-agent/config.json"
    )
    unit = (AGENT / "kvmmanager-agent.service").read_text()
    assert f"ExecStart=/usr/bin/python3 {cmd}" in unit
    for directive in ("ProtectSystem=", "NoNewPrivileges=true", "Restart=on-failure"):
        assert directive in unit
    openrc = (AGENT / "kvmmanager-agent.openrc").read_text()
    assert openrc.startswith("#!/sbin/openrc-run")
    assert 'command="/usr/bin/python3"' in openrc and cmd in openrc
    sysv = (AGENT / "kvmmanager-agent.sysv").read_text()
    assert "PYZ=$ROOT/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz" in sysv
    assert "CONF=$ROOT/etc/kvmmanager-agent/config.json" in sysv


def test_udev_rule_matches_the_agent_port_and_wants_the_unit() -> None:
    rule = (AGENT / "60-kvmmanager-agent.rules").read_text()
    line = next(ln for ln in rule.splitlines() if ln and not ln.startswith("#"))
    assert 'SUBSYSTEM=="virtio-ports"' in line
    assert f'ATTR{{name}}=="{CHANNEL_NAME}"' in line
    assert re.search(r'ENV\{SYSTEMD_WANTS\}\+?="kvmmanager-agent.service"', line)
    assert f'SYMLINK+="virtio-ports/{CHANNEL_NAME}"' in line
    # The unit binds to the device unit systemd derives from that link.
    unit = (AGENT / "kvmmanager-agent.service").read_text()
    escaped = "dev-virtio\\x2dports-" + CHANNEL_NAME + ".device"
    assert f"BindsTo={escaped}" in unit
