"""The serial console over a WebSocket, against a real guest on qemu:///system
(issue 17, items 19 and 20): a console session is keyboard control of a VM and is
audited; a client closing its console is no ERROR in the log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import libvirt
import pytest
import websockets
from tests.kvmmanager.conftest import drop_vm
from tests.libvirtd_pools import DirPool

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.devices import Console, Serial
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
    return settings


def _ws_url(live_server: Any, path: str) -> str:
    return live_server.url.replace("http://", "ws://") + path


async def _session(url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers, open_timeout=60) as ws:
        await ws.send(b"\r")
        # The session is up once the server relays; the close comes from the client.
        await asyncio.sleep(0.5)


def test_console_session_is_audited_and_closing_logs_no_error(
    live_server: Any,
    libvirtd_conn: libvirt.virConnect,
    dir_pool: Callable[..., DirPool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = dir_pool("kvmm-t-con-").name  # a unique name, cleaned with the pool
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    serial = Serial(type="pty")
    serial.target_port = 0
    dom.devices.add(serial)
    dom.devices.add(Console(type="pty"))
    m = live_server.manager
    deadline = time.monotonic() + 60
    while not m.registry.get("local").connected:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        libvirtd_conn.createXML(dom.to_xml(), 0)
        url = _ws_url(live_server, f"/vms/local/{name}/console/serial")
        with caplog.at_level(logging.INFO):
            asyncio.run(_session(url, live_server.token))
            time.sleep(1)  # the server side of the closed session winds down
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], [(r.getMessage(), r.exc_text) for r in errors]
        page = m.audit.query(action="web.console_serial", target=f"local/{name}")
        assert [(e.username, e.target, e.result) for e in page.items] == [
            ("admin", f"local/{name}", "ok")
        ]
    finally:
        drop_vm(name)
