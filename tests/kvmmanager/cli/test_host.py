"""`kvm-manager host ...` against a live server (test driver)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

TESTNODE_URI = f"test://{Path(__file__).parents[1] / 'virt' / 'fixtures' / 'testnode.xml'}"


def _wait_connected(live_server, name: str) -> None:
    host = live_server.manager.registry.get(name)
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, f"host {name} did not connect"
        time.sleep(0.02)


def test_add_list_show_remove(cli, live_server):
    r = cli("--json", "host", "add", "kvmm-t-host-cli", TESTNODE_URI)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "kvmm-t-host-cli"
    _wait_connected(live_server, "kvmm-t-host-cli")

    r = cli("--json", "host", "list")
    assert r.exit_code == 0, r.stderr
    assert [h["name"] for h in json.loads(r.stdout)] == ["kvmm-t-host-cli", "local"]
    r = cli("host", "list")
    assert "kvmm-t-host-cli" in r.stdout and "connected" in r.stdout

    r = cli("--json", "host", "show", "kvmm-t-host-cli")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["status"], shown["accel"], shown["vm_count"]) == ("connected", "tcg", 2)
    assert shown["libvirt_version"].count(".") == 2
    # Issue 17's try: the human record showed `since` as raw epoch seconds.
    r = cli("host", "show", "kvmm-t-host-cli")
    since = datetime.fromtimestamp(shown["since"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert r.exit_code == 0 and since in r.stdout, r.stdout
    assert str(shown["since"]) not in r.stdout

    r = cli("host", "remove", "kvmm-t-host-cli")
    assert r.exit_code == 0, r.stderr
    assert "host kvmm-t-host-cli removed" in r.stderr
    r = cli("host", "show", "kvmm-t-host-cli")
    assert r.exit_code == 4
    assert r.stderr.strip() == "error: host 'kvmm-t-host-cli' not found"


def test_bad_input_exits_2_with_one_line(cli):
    r = cli("host", "add", "Bad/Name", TESTNODE_URI)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: host name must be") and r.stderr.count("\n") == 1


def test_vm_commands_on_a_failed_host_say_it_is_not_reachable(cli, live_server, tmp_path):
    """Issue 17's independent try, item 6: `agent system` and `metrics vm` on a failed
    host answered "VM not found"."""
    missing = tmp_path / "kvmm-t-gone.xml"
    r = cli("host", "add", "kvmm-t-host-gone", f"test://{missing}")
    assert r.exit_code == 0, r.stderr
    host = live_server.manager.registry.get("kvmm-t-host-gone")
    deadline = time.monotonic() + 30
    while host.status != "failed":
        assert time.monotonic() < deadline, host.status
        time.sleep(0.02)
    try:
        for args in (
            ("agent", "system", "web1"),
            ("metrics", "vm", "web1"),
            ("vm", "show", "web1"),
        ):
            r = cli(*args, "-H", "kvmm-t-host-gone")
            assert r.exit_code == 6, (args, r.stderr)
            assert "not found" not in r.stderr, (args, r.stderr)
            assert "host 'kvmm-t-host-gone' is not reachable: it is failed" in r.stderr, r.stderr
            assert "kvmm-t-gone.xml" in r.stderr, r.stderr  # libvirt's reason, in its words
        # A VM missing on a connected host is still "not found".
        r = cli("vm", "show", "kvmm-t-host-none", "-H", "local")
        assert r.exit_code == 4 and "not found" in r.stderr
    finally:
        assert cli("host", "remove", "kvmm-t-host-gone").exit_code == 0
