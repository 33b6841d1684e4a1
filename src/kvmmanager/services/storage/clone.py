"""Volume clone as a job: libvirt's createXMLFrom, with progress read from the new
volume's allocation while the copy runs.

libvirt cannot interrupt a copy: a cancelled (or otherwise failed) clone waits for the
copy to end and then deletes the new volume, so no half-made clone remains.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.jobs.service import JobProgress
from kvmmanager.services.storage import image_probe
from kvmmanager.services.storage.calls import StorageCalls
from kvmmanager.services.storage.specs import POOL_NAME_MAX, VOLUME_NAME_MAX, check_name
from kvmmanager.services.storage.xml import (
    VolumeDetails,
    active_pool,
    build_volume_xml,
    lookup_volume,
    volume_details,
    volume_exists,
)
from kvmmanager.services.users.service import Principal

# How often a clone job reads the new volume's allocation to report progress.
CLONE_POLL_SECONDS = 0.5
CLONE_FORMATS = ("qcow2", "raw")


async def start_clone(
    storage: StorageCalls,
    host: str,
    pool: str,
    name: str,
    new_name: str,
    *,
    target_pool: str | None = None,
    format: str | None = None,
    user: Any = None,
) -> str:
    """Check the arguments now (404/409/422), then copy as a `volume.clone` job."""
    check_name(new_name, "name", VOLUME_NAME_MAX)
    if format is not None and format not in CLONE_FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(CLONE_FORMATS)}", field="format")
    dest_pool = target_pool or pool
    check_name(dest_pool, "target_pool", POOL_NAME_MAX)
    source = await storage.get_volume(host, pool, name)

    def check_target(conn: libvirt.virConnect) -> None:
        if volume_exists(active_pool(conn, dest_pool), new_name):
            raise Conflict(
                f"volume '{new_name}' already exists in pool '{dest_pool}'", field="name"
            )

    await storage._call(host, check_target, kind="read")

    def check_chain(conn: libvirt.virConnect) -> str | None:
        # libvirtd reads the whole chain with root's rights while it copies: a backing
        # file outside the pools would end up, readable, in the new volume.
        return image_probe.chain_refusal(conn, lookup_volume(active_pool(conn, pool), name))

    refusal = await storage._call(host, check_chain)
    if refusal:
        raise InvalidInput(f"volume '{name}' cannot be cloned: {refusal}", field="volume")
    xml = build_volume_xml(new_name, source.capacity, format or source.format or "raw")
    total = max(source.allocation, 1)

    def create(conn: libvirt.virConnect) -> VolumeDetails:
        src = lookup_volume(active_pool(conn, pool), name)
        return volume_details(dest_pool, active_pool(conn, dest_pool).createXMLFrom(xml, src, 0))

    def allocation(conn: libvirt.virConnect) -> int | None:
        try:
            return int(lookup_volume(active_pool(conn, dest_pool), new_name).info()[2])
        except (NotFound, libvirt.libvirtError):
            return None  # not visible yet

    async def run(progress: JobProgress) -> dict[str, Any]:
        # Should the server die mid-copy, the next start deletes the half-made clone.
        progress.undo_on_interrupt("delete_volume", host=host, pool=dest_pool, volume=new_name)
        # The copy is the cloner's before it exists (services/users/ownership.py).
        storage.ownership.record_new_volume(
            user if isinstance(user, Principal) else None, host, dest_pool, new_name
        )
        task = asyncio.ensure_future(storage._call(host, create, kind="job"))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=CLONE_POLL_SECONDS)
                if not task.done():
                    done = await storage._call(host, allocation, kind="read")
                    progress(min(done or 0, total), total, f"cloning {name}")
            details = task.result()
            progress(total, total, "done")
        except BaseException:
            await asyncio.shield(_discard(storage, host, task, dest_pool, new_name))
            raise
        await storage.sync_pool(host, dest_pool)
        details.used_by = storage.volume_path_in_use_by(host, details.path)
        return details.to_dict()

    return storage.jobs.start("volume.clone", f"{host}/{pool}/{name}", run, user, host=host)


async def _discard(
    storage: StorageCalls, host: str, task: asyncio.Future[Any], pool: str, name: str
) -> None:
    """Wait for the copy to end; if it made the volume, delete it."""
    with contextlib.suppress(BaseException):
        await task
    if task.cancelled() or task.exception() is not None:
        return
    with contextlib.suppress(Exception):
        await storage._call(
            host,
            lambda conn: lookup_volume(active_pool(conn, pool), name).delete(0),
            kind="lifecycle",
        )
