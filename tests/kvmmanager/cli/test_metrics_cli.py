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
    r = cli("metrics", "host", "-H", "local", "--sort", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "test" in r.stdout and "CPU %" in r.stdout
    r = cli("--json", "metrics", "host")
    assert r.exit_code == 0, r.stderr
    assert [v["name"] for v in json.loads(r.stdout)["vms"]] == ["test"]

    r = cli("metrics", "vm", "test", "--host", "local")
    assert r.exit_code == 0, r.stderr
    assert "running" in r.stdout and "collected" in r.stdout

    r = cli("--json", "metrics", "history", "test", "-H", "local", "--last", "300")
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)["series"]["ts"]) >= 3
    r = cli("metrics", "history", "test", "-f", "disk_rd_bps")
    assert r.exit_code == 0, r.stderr
    assert "DISK RD BPS" in r.stdout and "0 B" in r.stdout

    r = cli("--json", "metrics", "collectors")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)[0]["host"] == "local"


def test_bad_input_is_one_line_naming_the_field(cli: Any, live_server: Any) -> None:
    _wait_cycles(live_server, 1)
    r = cli("metrics", "host", "--sort", "colour")
    assert r.exit_code == 2 and r.stderr.startswith("error: --sort must be one of")
    r = cli("metrics", "history", "test", "-f", "nope")
    assert r.exit_code == 2 and "unknown field 'nope'" in r.stderr
    r = cli("metrics", "vm", "kvmm-t-met-none")
    assert r.exit_code == 4 and r.stderr.count("\n") == 1


def test_metrics_commands_take_host_like_every_other_command(cli: Any, live_server: Any) -> None:
    """Issue 17 item 17: `metrics vm/history` took positional HOST VM, and `--last` said
    "up to 86400" while a week worked."""
    _wait_cycles(live_server, 1)
    for args in (("vm", "test", "-H", "local"), ("history", "test", "--host", "local")):
        r = cli("metrics", *args)
        assert r.exit_code == 0, r.stderr
    r = cli("--json", "metrics", "history", "test", "--last", "604800")
    assert r.exit_code == 0, r.stderr
    help_text = cli("metrics", "history", "--help").stdout
    assert "86400" not in help_text and "30 days" in help_text
