"""VM export and import as libvirt domain XML.

Export hands out the persistent definition (with the project's `<metadata>`, never the
VNC password). Import defines such an XML on any host: a name already taken is renamed
(`web1` -> `web1-2`), a UUID already taken is replaced, networks and pools can be
remapped, and `new_identity` gives the copy a new UUID and new MAC addresses. Every
network and volume the VM refers to must exist on the target host, so the import fails
up front, naming the disk or NIC, instead of defining a VM that cannot start.

    xml = await manager.export.export_xml("local", "web1")
    res = await manager.export.import_xml("kvm2", xml, ImportOptions(new_identity=True))

Bundles (XML plus disk volumes) are in `portability/bundle.py`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import libvirt

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.portability import bundle as bundles
from kvmmanager.services.portability.import_plan import (
    ImportOptions,
    ImportPlan,
    plan_import,
    refuse_shared_disks,
)
from kvmmanager.services.storage.service import StorageService
from kvmmanager.services.storage.transfer import MAX_UPLOAD_BYTES
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.registry import HostRegistry

log = logging.getLogger(__name__)

_BUNDLE_ID = re.compile(r"^[0-9a-f]{32}$")


def _define(conn: libvirt.virConnect, plan: ImportPlan) -> str:
    return str(conn.defineXML(plan.xml).UUIDString())


class ExportService:
    def __init__(
        self,
        settings: Settings,
        registry: HostRegistry,
        ownership: OwnershipService,
        vms: VmService,
        storage: StorageService,
    ) -> None:
        """`settings`: where bundles go (fleet.exports_dir, else data_dir/exports) and
        where uploads wait (data_dir/imports)."""
        self._settings = settings
        self._registry = registry
        self._ownership = ownership
        self._vms = vms
        self._storage = storage

    async def export_xml(self, host: str, vm: str) -> str:
        """The persistent definition (the live one for a transient VM), without secrets."""

        def fn(dom: libvirt.virDomain) -> str:
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() else 0
            return str(dom.XMLDesc(flags))

        return await self._vms.run_on(host, vm, fn, kind="read")

    async def import_xml(
        self, host: str, xml: str, opts: ImportOptions | None = None
    ) -> dict[str, Any]:
        """Define `xml` on `host`; returns the VM plus what was changed on the way."""
        opts = opts or ImportOptions()
        for label, mapping in (("network_map", opts.network_map), ("pool_map", opts.pool_map)):
            if not all(isinstance(k, str) and k and isinstance(v, str) and v
                       for k, v in mapping.items()):  # fmt: skip
                raise InvalidInput(f"{label} maps names to names", field=label)

        plan = await self._vms.run(host, lambda conn: plan_import(conn, xml, opts), kind="read")
        if opts.principal is not None:
            # An import names volumes like a VM create does: another user's disk is
            # theirs (it was read, cloned and deleted through an imported VM).
            self._ownership.check_volumes(opts.principal, host, list(plan.volumes))
        await self._vms.run(host, lambda conn: refuse_shared_disks(conn, plan, opts), kind="read")
        uuid = await self._vms.run(host, lambda conn: _define(conn, plan), kind="lifecycle")
        info = await self._vms.refresh(host, uuid)
        log.info("imported vm %s on %s (renamed from %s)", plan.name, host, plan.renamed_from)
        return self.result(info, plan)

    # ---- bundles (XML + disks), see portability/bundle.py ------------------------------------

    def bundle_dir(self) -> Path:
        shared = self._settings.fleet.exports_dir
        path = Path(shared) if shared else Path(self._settings.data_dir) / "exports"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def bundle_path(self, bundle_id: str) -> Path:
        if not _BUNDLE_ID.fullmatch(bundle_id or ""):
            raise InvalidInput("bundle id must be 32 hex digits", field="bundle_id")
        directory = self.bundle_dir()
        path = directory / f"{bundle_id}.tar.gz"
        if not path.is_file():
            if self._ownership.recorded_bundle(bundle_id):
                # Its row is in the shared database, its file is not here: another
                # instance wrote it into a directory this one does not read.
                raise NotFound(
                    f"bundle '{bundle_id}' was made through another manager instance and "
                    f"its file is not in this instance's exports directory ({directory}): "
                    "instances sharing a database need fleet.exports_dir set to one "
                    "directory they all reach",
                    field="bundle_id",
                )
            raise NotFound(f"bundle '{bundle_id}' not found", field="bundle_id")
        return path

    async def check_exportable(self, host: str, vm: str) -> None:
        """What the bundle job would refuse at once, refused before it is accepted: a
        host not connected (503), a VM unknown (404) or running (409)."""

        def shut_off(dom: libvirt.virDomain) -> None:
            if dom.isActive():
                raise Conflict(
                    f"vm '{dom.name()}' is running: shut it down to export a consistent copy",
                    field="vm",
                )

        await self._vms.run_on(host, vm, shut_off, kind="read")

    async def export_bundle(
        self,
        host: str,
        vm: str,
        progress: Callable[..., Any] | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Write the VM's bundle into the manager's data directory; returns its id. The
        bundle is `owner`'s (services/users/ownership.py): only they and admins download or
        delete it."""
        bundle_id = uuidlib.uuid4().hex
        dest = self.bundle_dir() / f"{bundle_id}.tar.gz"
        # Recorded before the file exists: it is never downloadable without its owner.
        await asyncio.to_thread(self._ownership.record_bundle, bundle_id, owner)
        try:
            res = await bundles.export_bundle(self._vms, self._registry, host, vm, dest, progress)
        except BaseException:
            await asyncio.to_thread(self._ownership.forget_bundle, bundle_id)
            raise
        return {"bundle_id": bundle_id, "bytes": res["bytes"], "manifest": res["manifest"]}

    async def receive_bundle(self, chunks: AsyncIterator[bytes]) -> Path:
        """Store an uploaded bundle in the data directory (the caller deletes it)."""
        incoming = Path(self._settings.data_dir) / "imports"
        await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True, mode=0o700)
        path = incoming / f"{uuidlib.uuid4().hex}.tar.gz"
        fh = await asyncio.to_thread(open, path, "wb")
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise InvalidInput(
                        f"a bundle is at most {MAX_UPLOAD_BYTES} bytes", field="body"
                    )
                await asyncio.to_thread(fh.write, chunk)
        except BaseException:
            fh.close()
            path.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(fh.close)
        if size == 0:
            path.unlink(missing_ok=True)
            raise InvalidInput("the request body (the bundle) is empty", field="body")
        return path

    async def check_bundle(self, path: Path) -> dict[str, Any]:
        """The bundle's manifest; InvalidInput (field `bundle`) when it is not one."""
        manifest, _xml = await asyncio.to_thread(bundles.read_manifest, path)
        return manifest

    def delete_bundle(self, bundle_id: str) -> None:
        self.bundle_path(bundle_id).unlink(missing_ok=True)
        self._ownership.forget_bundle(bundle_id)

    async def import_bundle(
        self,
        host: str,
        path: Path,
        pool: str,
        opts: ImportOptions | None = None,
        progress: Callable[..., Any] | None = None,
    ) -> dict[str, Any]:
        self._registry.get(host)
        return await bundles.import_bundle(
            self._vms,
            self._registry,
            self._storage,
            self.import_xml,
            host,
            path,
            pool,
            opts or ImportOptions(),
            progress,
        )

    @staticmethod
    def result(info: Any, plan: ImportPlan) -> dict[str, Any]:
        return {
            "vm": info.to_dict(),
            "renamed_from": plan.renamed_from,
            "new_uuid": plan.new_uuid,
            "warnings": plan.warnings,
        }
