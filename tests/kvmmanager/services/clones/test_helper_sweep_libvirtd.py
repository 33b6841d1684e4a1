"""A clone's temporary snapshot (clones.CLONE_SNAPSHOT) left by a manager that died, and
whose job row is gone with it, is merged back by the next manager's start; one owned by
another LIVE manager process, or by a dead one of another database taken moments ago, is
left alone (services/clones/helper_sweep.py).

Real libvirtd (qemu:///system), two running qcow2 TCG domains of this test's own (idling
in SeaBIOS) in a dir pool of its own. The snapshots are taken through the snapshot
service with the owner tag a clone writes: one names a process that has exited (a
manager killed with kill -9 looks exactly so: its PID is gone), the other a process
that runs. Then a second Manager starts on the same data (no job row names them, so
there is nothing for the job undo to do: only the tag tells).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.libvirtd_pools import drop_pool, qcow2_domain_xml

from kvmmanager.core.config import Settings
from kvmmanager.services.clones.helper_sweep import CLONE_SNAPSHOT, data_id, owner_description
from kvmmanager.services.manager import Manager
from kvmmanager.virt.owner import Owner, process_start, this_process
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.volume import Volume

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
HOST = "local"
PREFIX = "kvmm-t-hsweep-"
MIB = 1 << 20


@pytest.fixture
def owners() -> Iterator[tuple[Owner, Owner]]:
    """(a live process of this machine, one that has exited), as snapshot owners."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = replace(this_process(), pid=sleeper.pid, start=process_start(sleeper.pid) or 0)
        dead = replace(this_process(), pid=gone.pid, start=process_start(gone.pid) or 0)
        gone.kill()
        gone.wait(30)
        yield live, dead
    finally:
        sleeper.kill()
        sleeper.wait(30)


@pytest.fixture
def lab() -> Iterator[dict[str, Any]]:
    """A dir pool and two running persistent domains, each on its own qcow2 volume."""
    conn = libvirt.open(URI)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/var/tmp"))
    path.chmod(0o755)
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    pool = conn.storagePoolCreateXML(Pool(type="dir", name=name, target_path=str(path)).to_xml(), 0)
    doms: dict[str, libvirt.virDomain] = {}
    try:
        for which in ("dead", "live", "foreign"):
            vol = pool.createXML(
                Volume(
                    name=f"{name}-{which}.qcow2", capacity=16 * MIB, target_format="qcow2"
                ).to_xml(),
                0,
            )
            dom = conn.defineXML(qcow2_domain_xml(f"{name}-{which}", vol.path()))
            doms[which] = dom
            dom.create()
        yield {"pool": name, "doms": doms, "dir": path}
    finally:
        for dom in doms.values():
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            except libvirt.libvirtError:
                pass
        conn.close()
        drop_pool(name, path)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
async def started(settings: Settings) -> AsyncIterator[list[Manager]]:
    made: list[Manager] = []
    yield made
    for m in made:
        await m.stop()


def _disk_source(dom: libvirt.virDomain) -> str:
    disk = Domain.from_xml(dom.XMLDesc(0)).devices.disks[0]
    return str(disk.source_file)


async def test_an_abandoned_clone_snapshot_is_merged_back_at_start_and_a_live_owners_is_kept(
    settings: Settings,
    lab: dict[str, Any],
    owners: tuple[Owner, Owner],
    started: list[Manager],
) -> None:
    live_owner, dead_owner = owners
    dead_dom, live_dom = lab["doms"]["dead"], lab["doms"]["live"]
    foreign_dom = lab["doms"]["foreign"]
    mine = data_id(settings.database_url)
    base = _disk_source(dead_dom)

    first = Manager(settings)
    started.append(first)
    await first.start()
    await first.registry.get(HOST).wait_connected(60)
    # Its own start sweep first: run after the snapshots below, it would take the
    # dead owner's itself (correctly, but then this test would not see the restart's).
    assert first.helper_sweep is not None
    async with asyncio.timeout(120):
        await first.helper_sweep
    tagged = (
        (dead_dom, dead_owner, mine),
        (live_dom, live_owner, mine),
        (foreign_dom, dead_owner, data_id("sqlite:///another/manager.db")),
    )
    for dom, owner, data in tagged:
        await first.snapshots.create(
            HOST,
            dom.UUIDString(),
            name=CLONE_SNAPSHOT,
            description=owner_description(data, owner),
            kind="external",
        )
    assert _disk_source(dead_dom) != base  # running on the overlay now
    await first.stop()
    started.remove(first)

    # The same database, but no job row recorded them: only the owner tag tells. A
    # manager on another database (other engineers' tests share this libvirtd) leaves
    # them alone for FOREIGN_GRACE_SECONDS: the owner's own restart may undo them.
    other = settings
    second = Manager(other)
    started.append(second)
    await second.start()
    assert second.helper_sweep is not None
    async with asyncio.timeout(120):
        swept = await second.helper_sweep
    assert swept[HOST] == [dead_dom.name()], swept
    assert dead_dom.snapshotNum(0) == 0
    assert _disk_source(dead_dom) == base  # merged back onto its own image
    assert dead_dom.isActive()
    # The live owner's snapshot is untouched; so is the dead owner's of another database,
    # taken moments ago: its own manager's restart may be about to undo it.
    assert live_dom.snapshotListNames(0) == [CLONE_SNAPSHOT]
    assert foreign_dom.snapshotListNames(0) == [CLONE_SNAPSHOT]
