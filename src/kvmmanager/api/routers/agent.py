"""The guest agent of a VM: /api/hosts/{host}/vms/{vm}/agent/...

Roles: viewers read facts (GET); exec, files, power, freeze and admin methods need
operator; `settings.agent.allow` may grant a role more methods. Every endpoint checks the
method's allowance for the caller, on top of the app-wide rule that writes need operator.
Files of any size go through /files/content only (PUT streams the body up, GET streams
the file down, from an offset to resume): the one windowed transfer that the CLI and the
web UI use and that bench/ measures; the guest verifies with sha256.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from kvmmanager.api.deps import (
    CurrentUser,
    ManagerDep,
    large_body_route,
    owner_read,
    streaming_body,
)
from kvmmanager.api.schemas.agent import (
    ExecRequest,
    FileWrite,
    FreezeRequest,
    MethodOut,
    PowerRequest,
    SetTime,
    SshKeysRequest,
)
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.core.errors import InvalidInput, PermissionDenied
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.service import Principal
from kvmmanager_agent import protocol

router = APIRouter(
    prefix="/api/hosts/{host}/vms/{vm}/agent", tags=["agent"], responses=ERROR_RESPONSES
)


def _check(manager: Manager, who: Principal, method: str) -> None:
    if not manager.agents.allowed(who.role, method):
        need = protocol.METHODS[method].role
        raise PermissionDenied(f"agent method {method} needs the {need} role (you are {who.role})")


@dataclass(frozen=True)
class AgentOf:
    """The agent of the VM in the path, as the caller may use it: every method is checked
    against the caller's allowance before it is called."""

    manager: Manager
    who: Principal
    host: str
    vm: str

    @property
    def agents(self) -> AgentService:
        return self.manager.agents

    def check(self, method: str) -> None:
        _check(self.manager, self.who, method)

    async def call(self, method: str, params: Any = None) -> Any:
        self.check(method)
        return await self.agents.call(self.host, self.vm, method, params)


async def _agent_of(host: str, vm: str, manager: ManagerDep, who: CurrentUser) -> AgentOf:
    return AgentOf(manager, who, host, vm)


# The routes below that call a method take `agent: Agent` (host, vm and the caller in one);
# a route with more path parameters also names host and vm first, which keeps their order
# in the OpenAPI document.
Agent = Annotated[AgentOf, Depends(_agent_of)]


@router.get("/status", name="agent.status")
async def agent_status(host: str, vm: str, manager: ManagerDep) -> dict:
    return manager.agents.status(host, vm)


@router.get("/methods", name="agent.methods", response_model=list[MethodOut])
async def agent_methods(
    host: str,
    vm: str,
    manager: ManagerDep,
    who: CurrentUser,
) -> list[dict]:
    return [
        {"name": m.name, "capability": m.capability, "role": m.role,
         "allowed": manager.agents.allowed(who.role, m.name), "timeout_class": m.timeout,
         "description": m.description}
        for m in protocol.METHODS.values()
    ]  # fmt: skip


@router.get("/ping", name="agent.ping")
@router.post("/ping", name="agent.ping_post")
async def agent_ping(host: str, vm: str, manager: ManagerDep) -> dict:
    return await manager.agents.ping(host, vm)


@router.get("/info", name="agent.info")
async def agent_info(host: str, vm: str, manager: ManagerDep) -> dict:
    """Guest facts from whichever agent answers (our agent, else qemu-guest-agent)."""
    return (await manager.agents.guest_info(host, vm)).model_dump()


_FACTS = {
    "system": "get_system_info",
    "network": "get_network_info",
    "disks": "get_disk_usage",
    "metrics": "get_metrics",
    "users": "get_users",
    "time": "get_time",
    "agent-info": "get_agent_info",
}


def _fact_route(what: str, method: str) -> None:
    async def fact(agent: Agent) -> Any:
        agent.check(method)
        return await agent.agents.fact(agent.host, agent.vm, method)

    fact.__doc__ = f"`{method}`: {protocol.METHODS[method].description}"
    router.add_api_route(f"/{what}", fact, methods=["GET"], name=f"agent.{what.replace('-', '_')}")


for _what, _method in _FACTS.items():
    _fact_route(_what, _method)


@router.get("/processes", name="agent.processes")
async def agent_processes(agent: Agent, *, limit: int = Query(200, ge=1, le=5000)) -> Any:
    return await agent.call("list_processes", {"limit": limit})


@router.post("/time", name="agent.set_time")
async def agent_set_time(body: SetTime, agent: Agent) -> Any:
    return await agent.call("set_time", body.model_dump())


@router.get("/services/{name}", name="agent.service_status")
async def agent_service_status(host: str, vm: str, name: str, agent: Agent) -> Any:
    return await agent.call("service_status", {"name": name})


@router.post("/services/{name}/{action}", name="agent.service_action")
async def agent_service_action(host: str, vm: str, name: str, action: str, agent: Agent) -> Any:
    return await agent.call("service_action", {"name": name, "action": action})


@router.get("/ssh-keys", name="agent.ssh_keys")
async def agent_ssh_keys(agent: Agent, *, user: str = Query(min_length=1, max_length=64)) -> Any:
    return await agent.call("ssh_authorized_keys", {"user": user})


@router.post("/ssh-keys", name="agent.ssh_keys_change")
async def agent_ssh_keys_change(body: SshKeysRequest, agent: Agent) -> Any:
    """Add (the default action) or remove one public key."""
    return await agent.call("ssh_authorized_keys", body.model_dump())


@router.delete("/ssh-keys", name="agent.ssh_keys_remove")
async def agent_ssh_keys_remove(body: SshKeysRequest, agent: Agent) -> Any:
    """Remove one public key."""
    return await agent.call("ssh_authorized_keys", {**body.model_dump(), "action": "remove"})


@router.post("/reconnect", name="agent.reconnect")
async def agent_reconnect(host: str, vm: str, manager: ManagerDep) -> dict:
    """Drop the connection to the agent and sync afresh; calls in flight fail cleanly."""
    return await manager.agents.reconnect(host, vm)


@router.put("/files/content", name="agent.upload")
@streaming_body
async def agent_upload(
    request: Request, agent: Agent,
    *, path: str = Query(min_length=1, max_length=4096), resume: bool = False,
) -> Any:  # fmt: skip
    """Upload the raw request body (any size, streamed) to `path`; sha256-verified."""
    agent.check("file_write_chunk")
    return await agent.agents.upload_stream(agent.host, agent.vm, path, request.stream(), resume)


@router.get("/files/content", name="agent.download")
@owner_read
async def agent_download(
    agent: Agent, *, path: str = Query(min_length=1, max_length=4096),
    offset: int = Query(0, ge=0),
) -> StreamingResponse:  # fmt: skip
    """Download a guest file of any size as a raw byte stream, from `offset` (a resume).
    X-Size is the file's size at open; its sha256 is GET /files/stat?sha256=true."""
    agent.check("file_read_chunk")
    download = await agent.agents.download_stream(agent.host, agent.vm, path, offset)
    return StreamingResponse(
        download.chunks(),
        media_type="application/octet-stream",
        headers={"X-Size": str(download.size), "X-Offset": str(offset)},
    )


@router.post("/exec", name="agent.exec")
async def agent_exec(body: ExecRequest, agent: Agent) -> Any:
    """Run a command and wait: exit_code, stdout, stderr, execution_time_ms."""
    return await agent.call("exec_command", body.model_dump())


@router.post("/exec/stream", name="agent.exec_stream")
async def agent_exec_stream(body: ExecRequest, agent: Agent) -> StreamingResponse:
    """Run a command, streaming NDJSON: {"stream": "stdout"|"stderr", "data": text} lines,
    then {"exit_code": n, "timed_out": bool}."""
    params = body.model_dump(exclude={"capture_output", "input"})
    started = await agent.call("exec_start", params)

    async def lines() -> AsyncIterator[bytes]:
        while True:
            r = await agent.agents.call(
                agent.host, agent.vm, "exec_poll", {"handle": started["handle"], "wait_seconds": 1}
            )
            for stream in ("stdout", "stderr"):
                data = base64.b64decode(r[stream])
                if data:
                    text = data.decode("utf-8", "replace")
                    yield json.dumps({"stream": stream, "data": text}).encode() + b"\n"
            if r["exited"]:
                done = {"exit_code": r["exit_code"], "timed_out": r["timed_out"]}
                yield json.dumps(done).encode() + b"\n"
                return
            await asyncio.sleep(0)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/files", name="agent.file_read")
@owner_read
async def agent_file_read(
    agent: Agent, *, path: str = Query(min_length=1, max_length=4096),
    encoding: str = Query("utf8", pattern="^(utf8|base64)$"),
) -> Any:  # fmt: skip
    return await agent.call("file_read", {"path": path, "encoding": encoding})


@router.put("/files", name="agent.file_write")
@router.post("/files", name="agent.file_write_post")
@large_body_route(f"PUT {router.prefix}/files/content?path=... (the raw bytes as the body)")
async def agent_file_write(body: FileWrite, agent: Agent) -> Any:
    """Write a small file from JSON (within server.max_body_bytes, 1 MiB by default);
    larger files go as the raw body of PUT /files/content, streamed and sha256-verified."""
    agent.check("file_write")
    return await agent.agents.file_write(agent.host, agent.vm, body.model_dump())


@router.get("/files/stat", name="agent.file_stat")
@owner_read
async def agent_file_stat(
    agent: Agent, *, path: str = Query(min_length=1, max_length=4096), sha256: bool = False
) -> Any:
    return await agent.call("file_stat", {"path": path, "sha256": sha256})


async def _power(agent: AgentOf, action: str, body: PowerRequest | None) -> Any:
    agent.check(action)
    b = body or PowerRequest()
    return await agent.agents.power(agent.host, agent.vm, action, b.timeout_seconds, b.force)


@router.post("/shutdown", name="agent.shutdown")
async def agent_shutdown(agent: Agent, *, body: PowerRequest | None = None) -> Any:
    return await _power(agent, "shutdown", body)


@router.post("/reboot", name="agent.reboot")
async def agent_reboot(agent: Agent, *, body: PowerRequest | None = None) -> Any:
    return await _power(agent, "reboot", body)


@router.get("/fsfreeze", name="agent.fsfreeze_status")
async def agent_fsfreeze_status(agent: Agent) -> Any:
    agent.check("fsfreeze_status")
    return await agent.agents.fsfreeze(agent.host, agent.vm, "status")


@router.post("/fsfreeze/{action}", name="agent.fsfreeze")
async def agent_fsfreeze(
    host: str, vm: str, action: str, agent: Agent, *, body: FreezeRequest | None = None
) -> Any:
    """freeze (thawed automatically after timeout_seconds) or thaw."""
    if action not in ("freeze", "thaw"):
        raise InvalidInput("action must be freeze or thaw", field="action")
    agent.check(f"fsfreeze_{action}")
    thaw_after = (body or FreezeRequest()).timeout_seconds
    return await agent.agents.fsfreeze(host, vm, action, thaw_after)


@router.post("/call/{method}", name="agent.call")
async def agent_call(
    host: str, vm: str, method: str, agent: Agent, *, params: dict[str, Any] | None = None
) -> Any:
    """Any protocol method by name, with its parameters as the JSON body."""
    if method not in protocol.METHODS or method == "sync":
        raise InvalidInput(f"unknown agent method '{method}'", field="method")
    return await agent.call(method, params)
