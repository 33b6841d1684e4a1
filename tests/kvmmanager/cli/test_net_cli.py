"""`kvm-manager net ...` against a live server on the test driver."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest


@pytest.fixture
def net_cli(cli: Any, live_server: Any) -> Any:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    return cli


def _json(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_net_commands(net_cli: Any) -> None:
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    created = _json(net_cli("--json", "net", "create", name, "--address", "10.213.90.1",
                            "--dhcp-start", "10.213.90.10", "--dhcp-end", "10.213.90.20",
                            "--bridge", "virbr-kt-90"))  # fmt: skip
    assert created["active"] and created["forward"] == "nat"
    assert created["dhcp_start"] == "10.213.90.10"

    table = net_cli("net", "list")
    assert table.exit_code == 0 and name in table.stdout and "virbr-kt-90" in table.stdout
    assert _json(net_cli("--json", "net", "show", name))["address"] == "10.213.90.1"
    assert not _json(net_cli("--json", "net", "stop", name))["active"]
    assert net_cli("net", "stop", name).exit_code == 5
    assert _json(net_cli("--json", "net", "start", name))["active"]
    assert not _json(net_cli("--json", "net", "autostart", name, "--off"))["autostart"]
    # The test driver has no DHCP server to ask: a clear one-line error.
    leases = net_cli("net", "leases", name)
    assert leases.exit_code == 2 and leases.stderr.startswith("error: ")

    assert net_cli("net", "delete", name).exit_code == 0
    assert net_cli("net", "show", name).exit_code == 4


def test_bad_dhcp_range_names_the_problem(net_cli: Any) -> None:
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    args = ["--address", "10.213.91.1", "--dhcp-start", "10.213.91.50", "--dhcp-end", "10.213.91.5"]
    result = net_cli("net", "create", name, *args)
    assert result.exit_code == 2 and "--dhcp-start" in result.stderr, result.stderr


def test_lease_expiry_is_a_readable_utc_time() -> None:
    """Issue 17 item 13: `net leases` printed EXPIRES as raw Unix seconds. (No DHCP lease
    can be made on this machine without a DHCP-configured guest: the formatter is checked.)"""
    from kvmmanager.cli.commands.net import lease_time

    assert lease_time(1796601600) == "2026-12-07 00:00:00 UTC"
    assert lease_time(None) is None
