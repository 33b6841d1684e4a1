"""Hosts: /api/hosts. Viewers read; adding and removing a host needs admin (it decides
which machines the manager drives, with what credentials)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, status

from kvmmanager.api.deps import ADMIN_ONLY, ManagerDep, no_content
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.hosts import (
    CapabilitiesOut,
    DomainCapabilitiesOut,
    HostCreate,
    HostInfoOut,
    HostOut,
)

router = APIRouter(prefix="/api/hosts", tags=["hosts"], responses=ERROR_RESPONSES)


@router.get("", name="hosts.list", response_model=list[HostOut])
async def list_hosts(manager: ManagerDep) -> list[dict[str, Any]]:
    return await manager.hosts.list()


@router.post(
    "",
    name="hosts.create",
    response_model=HostOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=ADMIN_ONLY,
)
async def add_host(body: HostCreate, manager: ManagerDep) -> dict[str, Any]:
    """Store the host and start connecting in the background: the answer's status is
    usually `connecting`; watch `GET /api/hosts/{host}` or the `host.status` events."""
    return await manager.hosts.add(body.name, body.uri)


@router.get("/{host}", name="hosts.get", response_model=HostOut)
async def get_host(host: str, manager: ManagerDep) -> dict[str, Any]:
    return await manager.hosts.get(host)


@router.delete(
    "/{host}",
    name="hosts.delete",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=ADMIN_ONLY,
)
async def remove_host(host: str, manager: ManagerDep) -> Response:
    """Forget the host; its VMs, pools and networks stay untouched in libvirt."""
    await manager.hosts.remove(host)
    return no_content()


@router.get("/{host}/info", name="hosts.info", response_model=HostInfoOut)
async def host_info(host: str, manager: ManagerDep) -> dict[str, Any]:
    """Node info, libvirt and hypervisor versions, and whether guests get KVM or TCG."""
    return await manager.hosts.info(host)


@router.get("/{host}/capabilities", name="hosts.capabilities", response_model=CapabilitiesOut)
async def host_capabilities(host: str, manager: ManagerDep) -> dict[str, Any]:
    return await manager.hosts.capabilities(host)


@router.get(
    "/{host}/domain-capabilities",
    name="hosts.domain_capabilities",
    response_model=DomainCapabilitiesOut,
)
async def host_domain_capabilities(
    host: str,
    *,
    arch: str | None = Query(default=None, max_length=32),
    machine: str | None = Query(default=None, max_length=64),
    domain_type: str | None = Query(default=None, pattern="^(kvm|qemu)$"),
    manager: ManagerDep,
) -> dict[str, Any]:
    """Firmware, TPM, devices and CPU modes for new guests (default: the domain type the
    host's accelerator verdict gives, on the host's default machine)."""
    return await manager.hosts.domain_capabilities(host, arch, machine, domain_type)
