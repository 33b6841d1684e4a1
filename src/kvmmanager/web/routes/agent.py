"""The guest-agent parts of the VM page: guest facts, status, install, exec, power.

Everything goes through AgentService (our agent, or qemu-guest-agent through libvirt when
only that one answers) and IsoService for installing; guest output is untrusted and is
rendered as escaped text only.
"""

from __future__ import annotations

import shlex
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.core.errors import AgentUnavailable, InvalidInput, KvmmError, PermissionDenied
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.service import Principal
from kvmmanager.web.templating import render, toast_headers

router = APIRouter(include_in_schema=False)


def _allowed(manager: Manager, user: Principal, method: str) -> bool:
    return bool(manager.agents.allowed(user.role, method))


def _require(manager: Manager, user: Principal, method: str) -> None:
    if not _allowed(manager, user, method):
        raise PermissionDenied(f"role {user.role!r} may not call the agent's {method}")


@router.get("/vms/{host}/{vm}/guest", name="web.vm_guest", response_class=HTMLResponse)
async def guest_facts(request: Request, host: str, vm: str, manager: ManagerDep) -> HTMLResponse:
    try:
        info = await manager.agents.guest_info(host, vm)
        error = ""
    except KvmmError as e:
        info, error = None, e.message
    return render(request, "vms/_guest.html", guest=info, error=error)


@router.get("/vms/{host}/{vm}/agent", name="web.vm_agent", response_class=HTMLResponse)
def agent_tab(
    request: Request,
    host: str,
    vm: str,
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    return render(
        request,
        "vms/_agent.html",
        vm=manager.vms.get(host, vm),
        status=manager.agents.status(host, vm),
        can_exec=_allowed(manager, user, "exec_command"),
        can_files=_allowed(manager, user, "file_write_chunk"),
        can_power=_allowed(manager, user, "shutdown"),
    )


@router.post("/vms/{host}/{vm}/agent/install", name="web.vm_agent_install")
async def install_agent(
    request: Request,
    host: str,
    vm: str,
    *,
    replace_cd: Annotated[bool, Form()] = False,
    manager: ManagerDep,
) -> HTMLResponse:
    result = await manager.iso.install_agent(host, vm, replace_cd=replace_cd)
    return render(
        request,
        "vms/_agent_installed.html",
        headers=toast_headers("Guest agent ISO attached"),
        result=result,
    )


@router.post("/vms/{host}/{vm}/agent/exec", name="web.vm_agent_exec")
async def agent_exec(
    request: Request,
    host: str,
    vm: str,
    command: Annotated[str, Form()],
    *,
    timeout_seconds: Annotated[int, Form()] = 30,
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    _require(manager, user, "exec_command")
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise InvalidInput(f"cannot split the command line: {e}", field="command") from None
    if not argv:
        raise InvalidInput("type a command", field="command")
    result = await manager.agents.call(
        host,
        vm,
        "exec_command",
        {
            "command": argv[0],
            "args": argv[1:],
            "timeout_seconds": timeout_seconds,
            "capture_output": True,
        },
    )
    return render(request, "vms/_exec_result.html", argv=argv, result=result)


@router.post("/vms/{host}/{vm}/agent/power/{action}", name="web.vm_agent_power")
async def agent_power(
    host: str,
    vm: str,
    action: str,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    _require(manager, user, "shutdown" if action == "shutdown" else "reboot")
    try:
        result = await manager.agents.power(host, vm, action)
    except AgentUnavailable as e:
        return Response(status_code=503, headers=toast_headers(e.message, "error"))
    message = result.get("message") or f"{action} requested through the {result['source']} agent"
    return Response(status_code=204, headers=toast_headers(message))
