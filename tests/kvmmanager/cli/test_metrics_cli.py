"""`kvm-manager metrics ...` against a live server (test driver)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from kvmmanager.core.config import Settings

DEADLINE = 60.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.metrics.interval_seconds = 0.1
    return settings


def _wait_cycles(live_server: Any, n: int = 3) -> None:
    svc = live_server.manager.metrics
    deadline = time.monotonic() + DEADLINE
    while not ("local" in svc.hosts() and svc.host("local").cycles >= n):
        assert time.monotonic() < deadline, "no collections"
        time.sleep(0.05)


def test_host_vm_history_collectors(cli: Any, live_server: Any) -> None:
    _wait_cycles(live_server)
    r = cli("metrics", "host", "local", "--sort", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "test" in r.stdout and "CPU %" in r.stdout
    r = cli("--json", "metrics", "host")
    assert r.exit_code == 0, r.stderr
    assert [v["name"] for v in json.loads(r.stdout)["vms"]] == ["test"]

    r = cli("metrics", "vm", "local", "test")
    assert r.exit_code == 0, r.stderr
    assert "running" in r.stdout and "collected" in r.stdout

    r = cli("--json", "metrics", "history", "local", "test", "--last", "300")
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)["series"]["ts"]) >= 3
    r = cli("metrics", "history", "local", "test", "-f", "disk_rd_bps")
    assert r.exit_code == 0, r.stderr
    assert "DISK RD BPS" in r.stdout and "0 B" in r.stdout

    r = cli("--json", "metrics", "collectors")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)[0]["host"] == "local"


def test_bad_input_is_one_line_naming_the_field(cli: Any, live_server: Any) -> None:
    _wait_cycles(live_server, 1)
    r = cli("metrics", "host", "local", "--sort", "colour")
    assert r.exit_code == 2 and r.stderr.startswith("error: --sort must be one of")
    r = cli("metrics", "history", "local", "test", "-f", "nope")
    assert r.exit_code == 2 and "unknown field 'nope'" in r.stderr
    r = cli("metrics", "vm", "local", "kvmm-t-met-none")
    assert r.exit_code == 4 and r.stderr.count("\n") == 1
