"""Templates: VMs marked in their `<metadata>` (`<kvmm:template enabled='yes'/>`) as the
frozen source of linked and full clones.

A template is shut off and not autostarted while marked; it cannot stop being a
template while linked clones use its disks (they would be corrupted the moment it wrote
to them). `virt.clone_links.check_startable` is the guard a start path calls (the VM
service owns start).

    await manager.templates.mark("local", "debian12")               # VM -> template
    await manager.templates.list("local")                           # [{name, uuid, ...}]
    job = await manager.templates.deploy("local", "debian12", "web3", mode="linked", user=u)
    await manager.templates.mark("local", "debian12", False)       # refused while clones exist
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from kvmmanager.core.errors import Conflict
from kvmmanager.services.clones.service import CloneService
from kvmmanager.services.vms.builder import lookup
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.clone_links import is_template, linked_clones, read_metadata
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.metadata import NS_PREFIX, NS_URI

T = TypeVar("T")
RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED)


def _describe(host: str, dom: libvirt.virDomain) -> dict[str, Any]:
    meta = read_metadata(dom)
    return {
        "host": host,
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "template": bool(meta.template),
        "description": _description(dom),
        "linked_clones": linked_clones(dom.connect(), dom.UUIDString()),
    }


def _description(dom: libvirt.virDomain) -> str | None:
    try:
        text: str | None = dom.metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None, 0)
        return text
    except libvirt.libvirtError:
        return None


class TemplateService:
    def __init__(self, registry: HostRegistry, clones: CloneService) -> None:
        self._registry = registry
        self._clones = clones

    async def _run(
        self,
        host: str,
        fn: Callable[[libvirt.virConnect], T],
        kind: CallKind | None = None,
        vm: str | None = None,
    ) -> T:
        hc = self._registry.get(host)
        return await hc.run(lambda: fn(hc.conn), kind=kind, op=op_name(fn), vm=vm)

    async def list(self, host: str) -> list[dict[str, Any]]:
        def fn(conn: libvirt.virConnect) -> list[dict[str, Any]]:
            doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
            return sorted(
                (_describe(host, d) for d in doms if is_template(d)), key=lambda t: t["name"]
            )

        return await self._run(host, fn, kind="read")

    async def get(self, host: str, vm: str) -> dict[str, Any]:
        return await self._run(
            host, lambda conn: _describe(host, lookup(conn, host, vm)), kind="read", vm=vm
        )

    async def mark(self, host: str, vm: str, enabled: bool = True) -> dict[str, Any]:
        """Make the VM a template (shut off, autostart off), or a VM again."""

        def fn(conn: libvirt.virConnect) -> dict[str, Any]:
            dom = lookup(conn, host, vm)
            if not dom.isPersistent():
                raise Conflict(
                    f"vm '{dom.name()}' is transient: it cannot be a template", field="vm"
                )
            if enabled and dom.state()[0] in RUNNING:
                raise Conflict(
                    f"vm '{dom.name()}' is running: shut it down before making it a template",
                    field="vm",
                )
            if not enabled:
                clones = linked_clones(conn, dom.UUIDString())
                if clones:
                    raise Conflict(
                        f"template '{dom.name()}' backs linked clones ({', '.join(clones)}): "
                        "it stays a template while they exist",
                        field="vm",
                    )
            meta = read_metadata(dom)
            meta.template = True if enabled else None
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                meta.to_metadata_api(),
                NS_PREFIX,
                NS_URI,
                libvirt.VIR_DOMAIN_AFFECT_CONFIG,
            )
            if enabled and dom.autostart():
                dom.setAutostart(0)
            return _describe(host, dom)

        return await self._run(host, fn, vm=vm)

    async def deploy(
        self,
        host: str,
        template: str,
        new_name: str,
        *,
        mode: str = "linked",
        start: bool = False,
        user: Any = None,
    ) -> str:
        """A new VM from the template as a `vm.clone` job (linked by default)."""

        def check(conn: libvirt.virConnect) -> None:
            dom = lookup(conn, host, template)
            if not is_template(dom):
                raise Conflict(f"vm '{dom.name()}' is not a template", field="template")

        await self._run(host, check, kind="read")
        return await self._clones.start(host, template, new_name, mode=mode, start=start, user=user)
