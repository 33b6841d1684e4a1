"""Temporary snapshots the manager takes (a running VM's clone copies its disks under
`clones.CLONE_SNAPSHOT`) carry their owner process in the snapshot's description
(virt/owner.py: machine, boot, PID and the PID's start time). At start, once each host is
connected, and after the interrupted jobs' own undo (services/jobs/undo.py), the manager
merges back every such snapshot whose owner provably belongs to nobody alive: a manager
killed mid-clone whose job row is gone too (a lost database) still has its snapshot
removed. The tag also names the owner's database (`data=`): a manager on another
database leaves a dead owner's snapshot alone for FOREIGN_GRACE_SECONDS after it was
taken, since the owner's own restart is about to undo it through its job row and must
find it there (several managers and test runs share one libvirtd). A snapshot of another
live manager, of another machine or boot, or without an owner tag (older versions, a
user's snapshot of that name) is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from kvmmanager.core.errors import KvmmError
from kvmmanager.virt.owner import Owner, is_abandoned, this_process
from kvmmanager.virt.registry import HostRegistry

log = logging.getLogger(__name__)

OWNER_MARK = "kvmm-helper owner="
DATA_MARK = " data="
FOREIGN_GRACE_SECONDS = 600.0
CLONE_SNAPSHOT = "kvmm-clone-source"
CONNECT_WAIT_SECONDS = 120.0


def data_id(database_url: str) -> str:
    """A short stable name of a manager's database (not the URL: it may hold a password)."""
    return hashlib.sha256(database_url.encode()).hexdigest()[:8]


def owner_description(data: str, owner: Owner | None = None) -> str:
    """The description a temporary snapshot is taken with: its owner process and the
    owner's database (`data_id`)."""
    return f"{OWNER_MARK}{(owner or this_process()).tag}{DATA_MARK}{data}"


def parse_description(description: str | None) -> tuple[Owner | None, str]:
    """(owner, data id) from a snapshot's description; (None, "") when untagged."""
    if not description or not description.startswith(OWNER_MARK):
        return None, ""
    tag, _, data = description.removeprefix(OWNER_MARK).strip().partition(DATA_MARK.strip())
    return Owner.parse(tag.strip()), data.strip()


@dataclass(frozen=True)
class Leftover:
    uuid: str
    vm: str
    owner: Owner


def _element(xml: str, tag: str) -> str | None:
    # One top-level element's text, read without a full parse of the (long) XML.
    start = xml.find(f"<{tag}>")
    if start < 0:
        return None
    end = xml.find(f"</{tag}>", start)
    return html.unescape(xml[start + len(tag) + 2 : end]) if end > 0 else None


def find_leftovers(conn: libvirt.virConnect, data: str, in_use: set[str]) -> list[Leftover]:
    """Domains holding a clone snapshot whose owner is provably gone (blocking). `data`:
    this manager's database id; `in_use`: UUIDs of domains this process clones now."""
    found = []
    now = time.time()
    for dom in conn.listAllDomains(0):
        try:
            xml = dom.snapshotLookupByName(CLONE_SNAPSHOT, 0).getXMLDesc(0)
            uuid, name = dom.UUIDString(), dom.name()
        except libvirt.libvirtError:
            continue  # no such snapshot, or the domain went away meanwhile
        owner, owner_data = parse_description(_element(xml, "description"))
        if owner is None or not is_abandoned(owner, in_use=uuid in in_use):
            continue
        if owner_data != data:
            taken = _element(xml, "creationTime")
            if taken is None or not taken.isdigit():
                continue
            if now - int(taken) < FOREIGN_GRACE_SECONDS:
                continue  # its owner's restart may be about to undo it
        found.append(Leftover(uuid, name, owner))
    return found


@dataclass(frozen=True)
class Sweeper:
    """What a sweep needs of the manager (passed in: services do not import the Manager)."""

    registry: HostRegistry
    data: str  # this manager's database id (data_id)
    # (host, vm uuid, snapshot name): merges the snapshot back, as the clone would have.
    delete_snapshot: Callable[[str, str, str], Awaitable[Any]]
    # UUIDs of the host's VMs this process is cloning under a snapshot right now.
    in_use: Callable[[str], set[str]]
    # Resolves once the interrupted jobs' undo (which may hold the same snapshots) ran.
    undo_finished: Callable[[], Awaitable[None]]

    async def sweep_host(self, host: str) -> list[str]:
        """Merge back this host's abandoned clone snapshots; returns the VMs cleaned."""
        hc = self.registry.get(host)
        in_use = self.in_use(host)
        leftovers = await hc.run(
            lambda: find_leftovers(hc.conn, self.data, in_use),
            kind="read",
            op="find abandoned snapshots",
        )
        cleaned = []
        for left in leftovers:
            try:
                await self.delete_snapshot(host, left.uuid, CLONE_SNAPSHOT)
            except KvmmError as exc:
                log.warning(
                    "host %s: abandoned snapshot %s of vm %s (owner %s) not removed: %s",
                    host, CLONE_SNAPSHOT, left.vm, left.owner.tag, exc.message,
                )  # fmt: skip
                continue
            log.info(
                "host %s: removed abandoned snapshot %s of vm %s (owner %s gone)",
                host, CLONE_SNAPSHOT, left.vm, left.owner.tag,
            )  # fmt: skip
            cleaned.append(left.vm)
        return cleaned

    async def at_start(self) -> dict[str, list[str]]:
        """Once the interrupted jobs are undone: each host, once connected, swept."""
        await self.undo_finished()
        out: dict[str, list[str]] = {}

        async def one(host: str) -> None:
            # A host that never connects is swept at the next start.
            with contextlib.suppress(KvmmError, TimeoutError):
                await self.registry.get(host).wait_connected(CONNECT_WAIT_SECONDS)
                out[host] = await self.sweep_host(host)

        # Concurrently: one host that stays down must not hold back the others.
        await asyncio.gather(*(one(hc.name) for hc in self.registry.all()))
        return out
