"""AgentService: per-VM agent connections, their status, and one guest-info model.

- One AgentClient per (host, VM uuid), opened on first use: through the channel's unix
  socket when the host is local and the socket is reachable (faster), else through
  libvirt's virDomainOpenChannel stream (remote hosts, no socket permissions needed).
- Status: the inventory knows from libvirt whether the guest opened our port; this
  service refines it (connecting / connected / unresponsive) via
  Inventory.set_agent_status, which publishes `domain.agent`. When the port opens we
  probe (sync) in the background; when it closes or the VM stops we drop the client.
- Guest facts come from our agent when it is there, else from qemu-guest-agent through
  libvirt; both produce the same GuestInfo (with `source`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
from typing import Any

from kvmmanager.agent import qga
from kvmmanager.agent import transfer as agent_transfer
from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.models import GuestInfo, guest_info_from_kvmm
from kvmmanager.agent.transports import LibvirtStreamTransport, Transport, UnixTransport
from kvmmanager.core.config import AgentSettings
from kvmmanager.core.errors import (
    AgentUnavailable,
    Conflict,
    GuestError,
    InvalidInput,
    KvmmError,
    NotFound,
)
from kvmmanager.services.users.service import ROLE_RANK
from kvmmanager.virt.connection import is_remote_uri
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.devices import KVMM_AGENT_CHANNEL
from kvmmanager.virt.xml.domain import Domain
from kvmmanager_agent import protocol

log = logging.getLogger(__name__)

MAX_PARALLEL_PROBES = 8


class AgentService:
    def __init__(
        self, settings: AgentSettings, bus: EventBus, inventory: Inventory, registry: HostRegistry
    ) -> None:
        self._inventory = inventory
        self._registry = registry
        self.settings = settings
        self._clients: dict[tuple[str, str], AgentClient] = {}
        self._loops: dict[tuple[str, str], asyncio.AbstractEventLoop] = {}
        self._probes: set[asyncio.Task[Any]] = set()
        self._probe_slots = asyncio.Semaphore(MAX_PARALLEL_PROBES)
        bus.add_listener(self._on_event)

    # -- permissions ----------------------------------------------------------------

    def allowed(self, role: str, method: str) -> bool:
        """May `role` call `method`? Its capability's least role, or settings.agent.allow."""
        spec = protocol.METHODS.get(method)
        if spec is None or role not in ROLE_RANK:
            return False
        if ROLE_RANK[role] >= ROLE_RANK[spec.role]:
            return True
        return any(
            method in self.settings.allow.get(r, [])
            for r, rank in ROLE_RANK.items()
            if rank <= ROLE_RANK[role]
        )

    # -- connections ----------------------------------------------------------------

    def _domain(self, host: str, vm: str) -> Any:
        return self._registry.domain(host, vm)

    async def _opener(self, host: str, uuid: str) -> Transport:
        conn = self._registry.get(host)
        if self.settings.prefer_unix_socket and not is_remote_uri(conn.uri):
            path = await self._socket_path(conn, uuid)
            if path and os.access(path, os.R_OK | os.W_OK):
                # No fallback to libvirt's stream once the socket is usable: when the
                # connect fails it is because QEMU's one-client port is busy (its listen
                # backlog is full), and libvirtd would then block in connect() while holding
                # the domain's locks, which hangs the whole daemon (seen with libvirt 9.0).
                return await UnixTransport.open(path)
        return await LibvirtStreamTransport.open(conn, uuid, KVMM_AGENT_CHANNEL)

    async def _socket_path(self, conn: Any, uuid: str) -> str | None:
        def read() -> str:
            return conn.conn.lookupByUUIDString(uuid).XMLDesc(0)

        try:
            xml = await conn.run(read, kind="read", op="domain XML")
        except KvmmError:
            return None
        channel = Domain.from_xml(xml).devices.channel(KVMM_AGENT_CHANNEL)
        return channel.source_path if channel is not None and channel.type == "unix" else None

    def client(self, host: str, vm: str) -> AgentClient:
        info = self._domain(host, vm)
        key = (host, info.uuid)
        c = self._clients.get(key)
        loop = asyncio.get_running_loop()
        if c is not None and self._loops.get(key) is not loop:
            # A client's reader task lives on the loop that opened it; a caller on
            # another loop (tests, a second server thread) gets its own connection,
            # and the old one is cut (a channel serves one host connection at a time).
            c.abandon()
            c = None
        if c is None:
            c = AgentClient(
                lambda: self._opener(host, info.uuid),
                name=f"{host}/{info.name}",
                max_reply_bytes=self.settings.max_reply_bytes,
                max_request_bytes=self.settings.max_line_bytes,
                timeouts={
                    "short": self.settings.ping_timeout_seconds,
                    "normal": self.settings.request_timeout_seconds,
                    "long": self.settings.exec_timeout_seconds,
                },
                on_status=lambda s: self._client_status(host, info.uuid, s),
            )
            self._clients[key] = c
            self._loops[key] = loop
        return c

    def _client_status(self, host: str, uuid: str, status: str) -> None:
        if status not in ("connecting", "connected", "unresponsive"):
            return
        with contextlib.suppress(KvmmError):  # the VM vanished meanwhile
            self._inventory.set_agent_status(host, uuid, status)

    async def drop(self, host: str, uuid: str) -> None:
        c = self._clients.pop((host, uuid), None)
        loop = self._loops.pop((host, uuid), None)
        if c is not None and loop is asyncio.get_running_loop():
            await c.close()

    async def stop(self) -> None:
        for task in list(self._probes):
            task.cancel()
        for key in list(self._clients):
            await self.drop(*key)

    # -- events ---------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """Bus listener (runs inline on publish: only schedules work)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        key = (event.host, event.subject)
        if event.kind == "domain.removed" or (
            event.kind == "domain.lifecycle" and event.data.get("state") not in ("running", None)
        ):
            if key in self._clients:
                self._spawn(loop, self.drop(*key))
        elif event.kind == "domain.agent" and event.data.get("channel") == "kvmm":
            status = event.data.get("status")
            if status == "absent" and key in self._clients:
                self._spawn(loop, self.drop(*key))
            elif status == "connected" and key not in self._clients:
                self._spawn(loop, self._probe(*key))

    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        task = loop.create_task(coro)
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, host: str, uuid: str) -> None:
        async with self._probe_slots:
            try:
                c = self.client(host, uuid)
                await c.ensure_ready()
                c.agent_info = await c.call("get_agent_info")
            except KvmmError as exc:
                log.info("agent probe %s/%s: %s", host, uuid, exc.message)

    # -- calls ----------------------------------------------------------------------

    def _require_kvmm(self, host: str, vm: str) -> Any:
        info = self._domain(host, vm)
        if info.state != "running":
            raise Conflict(f"VM '{info.name}' is not running", field="vm")
        if info.agent_status == "absent":
            raise AgentUnavailable(
                f"the kvmmanager agent is not running in VM '{info.name}'", field="vm"
            )
        return info

    async def call(
        self, host: str, vm: str, method: str, params: dict[str, Any] | None = None
    ) -> Any:
        if method not in protocol.METHODS:
            raise InvalidInput(f"unknown agent method '{method}'", field="method")
        self._require_kvmm(host, vm)
        return await self.client(host, vm).call(method, params)

    def status(self, host: str, vm: str) -> dict[str, Any]:
        info = self._domain(host, vm)
        c = self._clients.get((host, info.uuid))
        return {
            "vm": info.name,
            "uuid": info.uuid,
            "agent_status": info.agent_status,
            "qga_status": info.qga_status,
            "transport": c.transport_kind if c is not None else None,
            "agent_info": c.agent_info if c is not None else None,
        }

    def _qga_available(self, info: Any) -> bool:
        return info.state == "running" and info.qga_status == "connected"

    async def _qga(self, host: str, vm: str, fn: Any, *args: Any) -> Any:
        info = self._domain(host, vm)
        if not self._qga_available(info):
            raise AgentUnavailable(f"no guest agent answers in VM '{info.name}'", field="vm")
        conn = self._registry.get(host)

        def run() -> Any:
            return fn(conn.conn.lookupByUUIDString(info.uuid), *args)

        return await conn.run(run, vm=info.uuid)

    def _use_kvmm(self, host: str, vm: str) -> bool:
        info = self._domain(host, vm)
        if info.state != "running":
            return False
        if info.agent_status in ("connected", "connecting"):
            return True
        # An agent marked unresponsive (it was restarted while the client re-synced,
        # say) is tried again when no qemu-ga could answer instead: the call reconnects
        # and re-syncs. Failing over to a qemu-ga that is not there would keep it
        # unresponsive forever, since only a call to it brings it back.
        return info.agent_status == "unresponsive" and not self._qga_available(info)

    async def guest_info(self, host: str, vm: str) -> GuestInfo:
        if self._use_kvmm(host, vm):
            c = self.client(host, vm)
            agent, system, network, disks, users, clock = await asyncio.gather(
                c.call("get_agent_info"),
                c.call("get_system_info"),
                c.call("get_network_info"),
                c.call("get_disk_usage"),
                c.call("get_users"),
                c.call("get_time"),
            )
            c.agent_info = agent
            return guest_info_from_kvmm(agent, system, network, disks, users, clock)
        return await self._qga(host, vm, qga.guest_info)

    async def ping(self, host: str, vm: str) -> dict[str, Any]:
        if self._use_kvmm(host, vm):
            return {"source": "kvmm", **(await self.call(host, vm, "ping"))}
        ok = await self._qga(host, vm, qga.ping)
        return {"source": "qga", "pong": bool(ok)}

    async def power(
        self, host: str, vm: str, action: str, delay: int = 0, force: bool = False
    ) -> dict[str, Any]:
        if action not in ("shutdown", "reboot"):
            raise InvalidInput("action must be shutdown or reboot", field="action")
        if self._use_kvmm(host, vm):
            r = await self.call(host, vm, action, {"timeout_seconds": delay, "force": force})
            return {"source": "kvmm", **r}
        await self._qga(host, vm, qga.shutdown if action == "shutdown" else qga.reboot)
        return {"source": "qga", "initiated": True, "message": f"{action} requested via qemu-ga"}

    async def fsfreeze(self, host: str, vm: str, action: str, thaw_after: float = 60) -> Any:
        if action not in ("freeze", "thaw", "status"):
            raise InvalidInput("action must be freeze, thaw or status", field="action")
        if self._use_kvmm(host, vm):
            params = {"timeout_seconds": thaw_after} if action == "freeze" else None
            return {"source": "kvmm", **(await self.call(host, vm, f"fsfreeze_{action}", params))}
        if action == "status":
            raise AgentUnavailable("fsfreeze status needs the kvmmanager agent", field="vm")
        n = await self._qga(host, vm, qga.fsfreeze if action == "freeze" else qga.fsthaw)
        return {"source": "qga", ("frozen" if action == "freeze" else "thawed"): n}

    # Facts qemu-ga can give too, in our agent's result shape (plus `source`).
    QGA_FACTS = ("get_system_info", "get_network_info", "get_disk_usage", "get_users", "get_time")

    async def fact(self, host: str, vm: str, method: str) -> dict[str, Any]:
        if self._use_kvmm(host, vm) or method not in self.QGA_FACTS:
            return {"source": "kvmm", **(await self.call(host, vm, method))}
        gi = await self._qga(host, vm, qga.guest_info)
        if method == "get_network_info":
            body: dict[str, Any] = {"interfaces": [i.model_dump() for i in gi.interfaces]}
        elif method == "get_disk_usage":
            body = {"filesystems": [f.model_dump() for f in gi.filesystems]}
        elif method == "get_users":
            body = {"users": [u.model_dump() for u in gi.users]}
        elif method == "get_time":
            body = {"timestamp": gi.guest_time, "timezone": gi.timezone}
        else:
            body = gi.model_dump(
                include={"os_name", "os_version", "os_id", "kernel_version", "hostname",
                         "architecture", "timezone", "cpu_count", "total_memory_kb"}
            )  # fmt: skip
            body["os_type"] = "linux" if gi.kernel_version else None
            # The agent protocol's types: integer uptime_seconds, the float in `uptime`.
            up = gi.uptime_seconds
            body["uptime_seconds"] = None if up is None else int(up)
            body["uptime"] = up
        return {"source": "qga", **body}

    async def file_write(self, host: str, vm: str, params: dict[str, Any]) -> dict[str, Any]:
        """file_write, transparently chunked when the request would not fit in one line.

        The simple call's 10 MB cap stays; above the agent's line limit (1 MiB by default)
        the same bytes go through file_open / file_write_chunk / file_close."""
        raw = params["content"].encode() if params.get("encoding", "utf8") == "utf8" else None
        if raw is None:
            try:
                raw = base64.b64decode(params["content"], validate=True)
            except ValueError:
                raise InvalidInput("content is not valid base64", field="content") from None
        if len(raw) > protocol.MAX_SIMPLE_FILE_BYTES:
            raise InvalidInput(
                f"content exceeds the {protocol.MAX_SIMPLE_FILE_BYTES} byte limit of file_write;"
                " use the chunked transfer",
                field="content",
            )
        c = self.client(host, vm)
        if len(params["content"]) + 1024 <= c.max_request_bytes:
            return await self.call(host, vm, "file_write", params)
        self._require_kvmm(host, vm)
        opened = await c.call(
            "file_open",
            {"path": params["path"], "mode": "w", "create_dirs": params.get("create_dirs"),
             "permissions": params.get("permissions")},
        )  # fmt: skip
        writer = agent_transfer.ChunkWriter(c, opened, 0)
        try:
            await writer.write(raw)
            await writer.finish()
        except BaseException:
            await writer.settle()
            await agent_transfer.abort_write(c, opened["handle"])
            raise
        await c.call("file_close", {"handle": opened["handle"]})
        return {"bytes_written": len(raw), "path": params["path"]}

    async def reconnect(self, host: str, vm: str) -> dict[str, Any]:
        """Drop the connection to the agent and sync afresh (pending calls fail cleanly)."""
        info = self._require_kvmm(host, vm)
        await self.drop(host, info.uuid)
        c = self.client(host, vm)
        await c.ensure_ready()
        c.agent_info = await c.call("get_agent_info")
        return self.status(host, vm)

    async def upload_stream(
        self, host: str, vm: str, path: str, chunks: Any, resume: bool = False
    ) -> dict[str, Any]:
        """Write an async stream of bytes (the whole file) to a guest file: raw chunks,
        several in flight (agent/transfer.py's ChunkWriter). With `resume` the guest keeps
        what an interrupted upload left aside and the stream's first bytes up to there
        are only hashed, not sent again, so the sha256 check covers the whole file."""
        self._require_kvmm(host, vm)
        c = self.client(host, vm)
        opened = await c.call("file_open", {"path": path, "mode": "w", "resume": resume})
        handle, offset = opened["handle"], int(opened["size_bytes"]) if resume else 0
        digest = hashlib.sha256()
        skip = offset
        writer = agent_transfer.ChunkWriter(c, opened, offset)
        try:
            async for part in chunks:
                digest.update(part)
                if skip:
                    if len(part) <= skip:
                        skip -= len(part)
                        continue
                    part, skip = part[skip:], 0
                await writer.write(part)
            if skip:
                raise InvalidInput(
                    f"the guest already holds {offset} bytes of {path}, more than the "
                    "upload: cannot resume (upload without resume)",
                    field="resume",
                )
            offset = await writer.finish()
        except (NotFound, AgentUnavailable) as exc:
            await writer.settle()
            offset = writer.offset
            if isinstance(exc, NotFound) and exc.field != "handle":
                raise
            # The agent went away mid-transfer (killed, restarted: its handle died with
            # it), or does not answer. A handle still open is closed without the rename.
            await agent_transfer.abort_write(c, handle)
            raise AgentUnavailable(
                f"the guest agent lost the transfer of {path} after {offset} bytes "
                f"({exc.message}); the guest's file is unchanged and the bytes so far are "
                "kept aside: upload again with resume=true to continue",
                field="path",
            ) from None
        except BaseException:
            # The guest's file stays as it was; the bytes so far wait aside for a resume.
            await writer.settle()
            await agent_transfer.abort_write(c, handle)
            raise
        closed = await c.call("file_close", {"handle": handle})
        if closed["sha256"] != digest.hexdigest():
            raise GuestError(f"upload of {path} failed verification (sha256 differs)")
        return {"path": path, "size_bytes": closed["size_bytes"], "sha256": closed["sha256"]}

    async def download_stream(
        self, host: str, vm: str, path: str, offset: int = 0
    ) -> agent_transfer.Download:
        """A guest file as a stream of bytes from `offset` (a resume): the windowed
        download of agent/transfer.py, several reads in flight."""
        self._require_kvmm(host, vm)
        return await agent_transfer.open_download(self.client(host, vm), path, offset=offset)
