"""Host URIs are limited to the transports that reach a QEMU daemon (services/hosts/uris.py).

Before: `qemu+ext:///system?command=<program>` ran the program as the manager's user on
every connect and reconnect, and `test:///<file>` made the test driver parse any file the
manager could read and put its first line into the host status every viewer reads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings
from kvmmanager.db.models import Host
from kvmmanager.services.hosts.uris import check_host_uri
from kvmmanager.services.manager import Manager

SECRET = "kvmm-t-uri-secret-first-line"


def _marker_program(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    prog = tmp_path / "prog.sh"
    prog.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    prog.chmod(0o755)
    return prog, marker


def test_the_ext_transport_never_runs_a_program(client: TestClient, tmp_path: Path) -> None:
    prog, marker = _marker_program(tmp_path)
    r = client.post(
        "/api/hosts", json={"name": "kvmm-t-uri-ext", "uri": f"qemu+ext:///system?command={prog}"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "uri"
    assert "qemu+ext" in r.json()["error"]["message"]
    time.sleep(0.5)  # the old code connected in the background: give it the chance
    assert not marker.exists()
    assert [h["name"] for h in client.get("/api/hosts").json()] == ["local"]


def test_the_test_driver_reads_no_file_unless_enabled(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    settings.libvirt.allow_test_driver = False  # as on a real server
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\nsecond line\n")
    r = client.post("/api/hosts", json={"name": "kvmm-t-uri-file", "uri": f"test://{secret}"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "uri"
    assert "allow_test_driver" in r.json()["error"]["message"]
    time.sleep(0.5)
    assert SECRET not in client.get("/api/hosts").text


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://root@h/system?command=/tmp/x",
        "qemu+ssh://root@h/system?netcat=/tmp/x",
        "qemu+unix:///system?name=test:///etc/shadow",
        "qemu:///embed?root=/tmp/x",
        "qemu+ext:///system",
        "lxc:///system",
        "qemu+ssh://root@h/system#frag",
        "qemu+tls://h/system?no_verify=1&command=x",
    ],
)
def test_dangerous_uris_are_refused_naming_the_field(uri: str) -> None:
    with pytest.raises(Exception) as info:
        check_host_uri(uri)
    assert getattr(info.value, "field", None) == "uri", info.value


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu+ssh://root@node2.example:2222/system?keyfile=/k&no_tty=1",
        "qemu+tls://[fd00::2]/system",
        "qemu+tcp://10.0.0.2/system",
        "qemu+unix:///system?socket=/run/libvirt/virtqemud-sock",
    ],
)
def test_the_qemu_transports_are_accepted(uri: str) -> None:
    assert check_host_uri(uri) == uri


def test_test_driver_only_when_enabled() -> None:
    with pytest.raises(Exception, match="allow_test_driver"):
        check_host_uri("test:///default")
    assert check_host_uri("test:///default", allow_test_driver=True) == "test:///default"


async def test_a_stored_ext_host_is_not_connected_at_start(
    settings: Settings, tmp_path: Path
) -> None:
    prog, marker = _marker_program(tmp_path)
    m = Manager(settings)
    await m.start()
    await m.stop()
    with Manager(settings).db.begin() as s:  # a row written before the allow-list
        s.add(Host(name="kvmm-t-uri-old", uri=f"qemu+ext:///system?command={prog}"))
    again = Manager(settings)
    await again.start()
    try:
        await asyncio.sleep(0.5)  # the old code connected in the background
        assert not marker.exists()
        assert "kvmm-t-uri-old" not in again.registry
        # The admin can still remove the row it left behind.
        await again.hosts.remove("kvmm-t-uri-old")
    finally:
        await again.stop()
