"""The fact and admin methods, against this (Linux) host as the 'guest'."""

from __future__ import annotations

import os
import pwd
import struct
import time
from pathlib import Path

import pytest
from tests.kvmmanager_agent.conftest import Raw, RunningAgent

from kvmmanager_agent.methods import sshkeys, users

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEyJx5m7l3jJ0hB0sZ0x0x0x0x0x0x0x0x0x0x0x0x0x test@h"


def test_ping_and_info(raw: Raw) -> None:
    assert raw.call("ping")["result"]["pong"] is True
    info = raw.call("get_agent_info")["result"]
    assert info["negotiated_protocol_version"] == 2 and "ping" in info["capabilities"]
    assert info["protocol_version"] == "1.0.0" and info["platform"] == "linux"


def test_system_info(raw: Raw) -> None:
    r = raw.call("get_system_info")["result"]
    assert r["os_type"] == "linux"
    assert r["kernel_version"] == os.uname().release
    assert r["cpu_count"] == os.cpu_count()
    assert r["total_memory_kb"] > 0 and r["uptime_seconds"] > 0
    assert type(r["uptime_seconds"]) is int and type(r["uptime"]) is float
    assert r["uptime_seconds"] == int(r["uptime"])


def test_network_info_has_loopback(raw: Raw) -> None:
    lo = next(i for i in raw.call("get_network_info")["result"]["interfaces"] if i["name"] == "lo")
    assert "127.0.0.1/8" in lo["ipv4_addresses"]
    assert lo["mtu"] > 0 and set(lo) >= {"mac_address", "ipv6_addresses", "state"}


def test_disk_usage_and_metrics(raw: Raw) -> None:
    fs = raw.call("get_disk_usage")["result"]["filesystems"]
    root = next(f for f in fs if f["mount_point"] == "/")
    st = os.statvfs("/")
    assert root["total_bytes"] == st.f_blocks * st.f_frsize
    assert 0 <= root["used_percent"] <= 100
    m = raw.call("get_metrics")["result"]
    assert 0 <= m["cpu_percent"] <= 100 and len(m["load_average"]) == 3
    assert m["memory"]["total_kb"] > 0
    assert any(n["name"] == "lo" for n in m["network"])


def test_processes(raw: Raw) -> None:
    r = raw.call("list_processes", {"limit": 5000})["result"]
    me = next(p for p in r["processes"] if p["pid"] == os.getpid())
    assert me["ppid"] == os.getppid() and me["rss_kb"] > 0
    assert r["total"] >= len(r["processes"])
    assert len(raw.call("list_processes", {"limit": 1})["result"]["processes"]) == 1


def test_users_parses_utmp() -> None:
    rec = struct.pack(
        "=hxxi32s4s32s256shhiii16s20s",
        7, 1234, b"pts/0", b"ts/0", b"alice", b"10.0.0.1", 0, 0, 0, 1700000000, 500000, b"", b"",
    )  # fmt: skip
    dead = struct.pack(
        "=hxxi32s4s32s256shhiii16s20s", 8, 1, b"", b"", b"", b"", 0, 0, 0, 0, 0, b"", b""
    )
    parsed = users.parse_utmp(rec + dead + b"trailing")
    assert parsed == [
        {"user": "alice", "terminal": "pts/0", "host": "10.0.0.1", "login_time": 1700000000.5,
         "pid": 1234}
    ]  # fmt: skip


def test_get_users_and_time(raw: Raw) -> None:
    assert isinstance(raw.call("get_users")["result"]["users"], list)
    before = time.time()
    t = raw.call("get_time")["result"]
    assert before - 1 <= t["timestamp"] <= time.time() + 1
    assert isinstance(t["utc_offset_seconds"], int)


def test_set_time_validates(raw: Raw) -> None:
    assert raw.call("set_time", {"timestamp": -5})["error"]["data"]["field"] == "timestamp"
    assert raw.call("set_time", {"timestamp": "now"})["error"]["code"] == -32602


def test_power_replies_first_then_acts(agent: RunningAgent, raw: Raw) -> None:
    reply = raw.call("shutdown", {"timeout_seconds": 5})["result"]
    assert reply["initiated"] is True and "shutdown in 5 s" in reply["message"]
    assert agent.ctx.power.event.wait(10)
    argv, delay = agent.ctx.power.calls[0]
    assert delay == 5 and ("poweroff" in argv[-1] or argv[-1] == "poweroff")
    agent.ctx.power.event.clear()
    r = raw.call("reboot", {"force": True})["result"]
    assert r["initiated"] is True
    assert agent.ctx.power.event.wait(10)  # the action runs after the reply is written
    assert agent.ctx.power.calls[-1][0][-1] == "-f"


def test_service_name_is_validated(raw: Raw) -> None:
    for name in ("-rf", "a b", "../x"):
        reply = raw.call("service_status", {"name": name})
        assert reply["error"]["code"] in (-32602, -32000), name


@pytest.fixture
def fake_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pwd.struct_passwd:
    home = tmp_path / "home"
    home.mkdir()
    entry = pwd.struct_passwd(("kvmmt", "x", os.getuid(), os.getgid(), "", str(home), "/bin/sh"))
    real = pwd.getpwnam
    monkeypatch.setattr(sshkeys.pwd, "getpwnam", lambda n: entry if n == "kvmmt" else real(n))
    return entry


def test_ssh_keys_add_list_remove(raw: Raw, fake_user: pwd.struct_passwd) -> None:
    r = raw.call("ssh_authorized_keys", {"user": "kvmmt", "action": "add", "key": KEY})["result"]
    assert r == {"keys": [KEY], "changed": True}
    path = Path(fake_user.pw_dir) / ".ssh" / "authorized_keys"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    again = raw.call("ssh_authorized_keys", {"user": "kvmmt", "action": "add", "key": KEY})
    assert again["result"]["changed"] is False
    assert raw.call("ssh_authorized_keys", {"user": "kvmmt"})["result"]["keys"] == [KEY]
    r = raw.call("ssh_authorized_keys", {"user": "kvmmt", "action": "remove", "key": KEY})
    assert r["result"] == {"keys": [], "changed": True}


def test_ssh_keys_refuse_bad_input_and_symlinks(
    raw: Raw, fake_user: pwd.struct_passwd, tmp_path: Path
) -> None:
    bad = raw.call("ssh_authorized_keys", {"user": "kvmmt", "action": "add", "key": "hello"})
    assert bad["error"]["data"]["field"] == "key"
    two = raw.call(
        "ssh_authorized_keys", {"user": "kvmmt", "action": "add", "key": KEY + "\n" + KEY}
    )
    assert two["error"]["data"]["field"] == "key"
    assert raw.call("ssh_authorized_keys", {"user": "nobody-kvmm-x"})["error"]["code"] == -32002
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, Path(fake_user.pw_dir) / ".ssh")
    r = raw.call("ssh_authorized_keys", {"user": "kvmmt", "action": "add", "key": KEY})
    assert r["error"]["code"] == -32001
    assert list(elsewhere.iterdir()) == []
