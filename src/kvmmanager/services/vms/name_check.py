"""A new VM's name checked with the names it brings along, while the user types: the
create form asks on every (debounced) keystroke, before anything is submitted.

The rules are the create's own (`vm_spec.validate_name`, `default_volume_name`): a name
that passes here passes the create, unless someone takes it meanwhile. What is asked of
the host is one bounded read: is a domain of that name defined, and which volumes does
the chosen pool hold.

    names = new_volume_names("web1", source="iso", new_disk=True)     # ["web1.qcow2"]
    check = await check_new_name(manager.vms, "local", "web1", "default", names)
    check.problem   # None, or what is wrong, said in the form's words
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.storage.xml import active_pool
from kvmmanager.services.vms.service import VmService
from kvmmanager.services.vms.spec import (
    NAME_MAX,
    SEED_SUFFIX,
    default_volume_name,
    validate_name,
)


@dataclass(frozen=True, slots=True)
class NameCheck:
    name: str
    problem: str | None = None
    # The volumes the create would make in `pool`, named after the VM.
    volumes: tuple[str, ...] = ()
    pool: str | None = None


def new_volume_names(name: str, source: str, new_disk: bool) -> list[str]:
    """The volumes a create names after the VM: a cloud image's linked disk and seed
    (as services/cloudinit/seed.py names them), else the new disk's."""
    if source == "cloud":
        return [f"{name}-disk0.qcow2", f"{name}{SEED_SUFFIX}"]
    return [default_volume_name(name, 0)] if new_disk else []


@dataclass(frozen=True, slots=True)
class _Taken:
    domain: bool
    volumes: frozenset[str]


def _taken(conn: libvirt.virConnect, name: str, pool: str | None) -> _Taken:
    try:
        conn.lookupByName(name)
        domain = True
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        domain = False
    volumes = frozenset(active_pool(conn, pool).listVolumes()) if pool else frozenset()
    return _Taken(domain, volumes)


async def check_new_name(
    vms: VmService, host: str, name: str, pool: str | None, volumes: list[str]
) -> NameCheck:
    """Is `name` free and valid for a new VM on `host` that makes `volumes` in `pool`?
    Bad input is a NameCheck with its problem, never an exception."""
    made = tuple(volumes) if pool else ()

    def refused(problem: str) -> NameCheck:
        return NameCheck(name, problem, made, pool)

    try:
        validate_name(name)
    except InvalidInput as exc:
        return refused(exc.message[0].upper() + exc.message[1:])
    for volume in made:
        if len(volume) > NAME_MAX:
            longest = NAME_MAX - (len(volume) - len(name))
            return refused(
                f"Too long for a VM with a new disk: its volume would be named '{volume}', "
                f"over {NAME_MAX} characters (at most {longest} for the name)"
            )
    taken = await vms.run(host, _taken, name, pool if made else None, kind="read")
    if taken.domain:
        return refused(f"A VM named '{name}' already exists on {host}")
    for volume in made:
        if volume in taken.volumes:
            return refused(
                f"The volume '{volume}' this VM would make already exists in pool '{pool}': "
                "pick another name (or import that volume as the install source)"
            )
    return NameCheck(name, None, made, pool)
