"""`kvm-manager pool ...` against a live server on the test driver."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest


@pytest.fixture
def pool_cli(cli: Any, live_server: Any) -> Any:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    return cli


def _json(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_pool_commands(pool_cli: Any) -> None:
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    created = _json(pool_cli("--json", "pool", "create", name, "--target", f"/kvmm-t-sto/{name}",
                             "--no-autostart"))  # fmt: skip
    assert created["name"] == name and created["active"] and not created["autostart"]

    table = pool_cli("pool", "list")
    assert table.exit_code == 0 and name in table.stdout and "running" in table.stdout
    assert _json(pool_cli("--json", "pool", "show", name))["target"] == f"/kvmm-t-sto/{name}"

    assert _json(pool_cli("--json", "pool", "stop", name))["state"] == "inactive"
    again = pool_cli("pool", "stop", name)
    assert again.exit_code == 5 and again.stderr.startswith("error: ")
    assert _json(pool_cli("--json", "pool", "start", name))["active"]
    assert _json(pool_cli("--json", "pool", "refresh", name))["active"]
    assert _json(pool_cli("--json", "pool", "autostart", name))["autostart"]
    assert not _json(pool_cli("--json", "pool", "autostart", name, "--off"))["autostart"]

    deleted = pool_cli("pool", "delete", name, "--delete-volumes")
    assert deleted.exit_code == 0, deleted.stderr
    missing = pool_cli("pool", "show", name)
    assert missing.exit_code == 4 and "not found" in missing.stderr


def test_bad_pool_name_is_one_line_error(pool_cli: Any) -> None:
    result = pool_cli("pool", "create", "bad/name", "--target", "/kvmm-t-sto/x")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
