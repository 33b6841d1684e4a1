"""Consoles over WebSockets: VNC for noVNC, and the serial console for xterm.js.

Both go through libvirt, never to QEMU directly: the serial console is a libvirt stream
(`virDomainOpenConsole`, so it works for remote hosts too), and VNC is a socket libvirt
hands over (`virDomainOpenGraphicsFD` with SKIPAUTH, so the VNC password never leaves the
server). openGraphicsFD passes a file descriptor and so only works for a host on this
machine; for a remote host the page says so instead of opening a dead console.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import libvirt
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from kvmmanager.api.deps import ManagerDep, check_vm_owner, current_user
from kvmmanager.core.errors import Conflict, KvmmError, PermissionDenied, Unsupported
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.audit import AuditRecord
from kvmmanager.services.vms.builder import lookup

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

CHUNK = 64 * 1024


def _require_operator(ws: WebSocket) -> None:
    # A console is keyboard control of the guest: operators only (and only the owner's,
    # or an unowned VM), as for power actions.
    principal = current_user(ws)
    if not principal.has_role("operator"):
        raise PermissionDenied(f"the console needs the operator role (you are {principal.role})")
    check_vm_owner(ws, principal)


async def _audit(ws: WebSocket, manager: Manager, kind: str, host: str, vm: str, err: Any) -> None:
    """One audit entry per console session (keyboard control of a VM) a user opened or
    failed to open; refused anonymous handshakes never get here (no log to fill)."""
    client = ws.scope.get("client")
    rec = AuditRecord(
        action=f"web.console_{kind}",
        username=current_user(ws).username,
        target=f"{host}/{vm}",
        remote_addr=client[0] if client else None,
        params={"console": kind},
        result="ok" if err is None else "error",
        status=101 if err is None else err.status,
        error_code=None if err is None else err.code,
    )
    try:
        await asyncio.to_thread(manager.audit.record, rec)
    except Exception:
        log.exception("could not write the audit entry for the %s console of %s", kind, vm)


def _is_local(uri: str) -> bool:
    scheme = uri.split(":", 1)[0]
    return "+" not in scheme or scheme.endswith("+unix")


@router.websocket("/vms/{host}/{vm}/console/vnc")
async def vnc_console(ws: WebSocket, host: str, vm: str, manager: ManagerDep) -> None:
    _require_operator(ws)
    hc = manager.registry.get(host)
    if not _is_local(hc.uri):
        raise Unsupported(
            f"the VNC console of host '{host}' is not reachable from here: libvirt hands over "
            "graphics sockets only to local clients; use the serial console"
        )

    def open_fd() -> int:
        dom = lookup(hc.conn, host, vm)
        if not dom.isActive():
            raise Conflict(f"vm '{vm}' is not running")
        return dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)

    try:
        fd = await hc.run(open_fd)
    except KvmmError as exc:
        await _audit(ws, manager, "vnc", host, vm, exc)
        raise
    await _audit(ws, manager, "vnc", host, vm, None)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    await ws.accept(subprotocol="binary" if "binary" in ws.scope.get("subprotocols", []) else None)
    reader, writer = await asyncio.open_connection(sock=sock)

    async def to_browser() -> None:
        while data := await reader.read(CHUNK):
            await ws.send_bytes(data)

    async def to_vnc() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    await _pump(ws, to_browser(), to_vnc())
    writer.close()


@router.websocket("/vms/{host}/{vm}/console/serial")
async def serial_console(ws: WebSocket, host: str, vm: str, manager: ManagerDep) -> None:
    _require_operator(ws)
    hc = manager.registry.get(host)
    loop = asyncio.get_running_loop()
    incoming: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)

    def open_stream() -> libvirt.virStream:
        dom = lookup(hc.conn, host, vm)
        if not dom.isActive():
            raise Conflict(f"vm '{vm}' is not running")
        stream = hc.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        return stream

    try:
        stream = await hc.run(open_stream)
    except KvmmError as exc:
        await _audit(ws, manager, "serial", host, vm, exc)
        raise
    await _audit(ws, manager, "serial", host, vm, None)

    def on_event(st: libvirt.virStream, events: int, _opaque: object) -> None:
        # Runs on libvirt's event thread: drain what is there without blocking, and hand
        # it to this request's loop.
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            _offer(None)
            return
        while True:
            try:
                data = st.recv(CHUNK)
            except libvirt.libvirtError:
                _offer(None)
                return
            if data == -2:  # would block
                return
            if not data:
                _offer(None)
                return
            _offer(data)

    def _offer(item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the request's loop is gone: nobody reads
            loop.call_soon_threadsafe(_put, item)

    def _put(item: bytes | None) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            incoming.put_nowait(item)  # a browser that stops reading loses output, not the host

    stream.eventAddCallback(
        libvirt.VIR_STREAM_EVENT_READABLE
        | libvirt.VIR_STREAM_EVENT_ERROR
        | libvirt.VIR_STREAM_EVENT_HANGUP,
        on_event,
        None,
    )
    await ws.accept()

    async def to_browser() -> None:
        while (data := await incoming.get()) is not None:
            await ws.send_bytes(data)

    async def to_guest() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            while data:
                sent = stream.send(data)
                if sent == -2:
                    await asyncio.sleep(0.01)  # the guest's buffer is full: back off briefly
                    continue
                data = data[sent:]

    try:
        await _pump(ws, to_browser(), to_guest())
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            await loop.run_in_executor(None, stream.abort)


async def _pump(ws: WebSocket, *directions: object) -> None:
    """Run both directions until either ends, then close the socket cleanly."""
    tasks = [asyncio.ensure_future(d) for d in directions]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            exc = task.exception()
            if exc and not isinstance(exc, WebSocketDisconnect | ConnectionError | KvmmError):
                log.warning("console connection ended with %r", exc)
    finally:
        # The client may have gone first (closing its tab is the normal end): nothing to
        # close then, and no error.
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close()
