"""A clone of a running VM killed while copying (real libvirtd, qemu:///system): its
source is left on the temporary external snapshot (clones.CLONE_SNAPSHOT). The job row
holds the `delete_snapshot` record the clone wrote before taking it; the next start of
the manager merges the overlay back (block commit and pivot while the VM runs; whatever
snapshots.delete does for a VM shut off meanwhile) and the snapshot is gone.

The domain has no OS: it idles in SeaBIOS, which is enough for block jobs."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.libvirtd_pools import qcow2_domain_xml

from kvmmanager.core.config import Settings
from kvmmanager.db.models import Job
from kvmmanager.services.clones.service import CLONE_SNAPSHOT
from kvmmanager.services.manager import Manager
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.volume import Volume

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
PREFIX = "kvmm-t-undo-"
MIB = 1024 * 1024
UNDO_DEADLINE = 120.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def lab(libvirtd_cleanup: Any) -> Iterator[dict[str, Any]]:
    """A dir pool with one qcow2 volume (0x5a at 0..64k) and a persistent qemu domain."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/var/tmp"))
    path.chmod(0o755)
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    conn = libvirt.open(URI)
    try:
        pool = conn.storagePoolCreateXML(
            Pool(type="dir", name=name, target_path=str(path)).to_xml(), 0
        )
        vol = pool.createXML(
            Volume(name=f"{name}.qcow2", capacity=16 * MIB, target_format="qcow2").to_xml(), 0
        )
        qemu_io(vol.path(), "write -P 0x5a 0 64k")
        d = conn.defineXML(qcow2_domain_xml(name, vol.path()))
        yield {"name": name, "uuid": d.UUIDString(), "base": vol.path(), "dir": path}
    finally:
        conn.close()
        # Over fresh connections: libvirtd may have been restarted meanwhile.
        _drop_snapshot_metadata(name)
        libvirtd_cleanup.drop_vm(name)
        libvirtd_cleanup.drop_pool(name, path)


def _drop_snapshot_metadata(name: str) -> None:
    """A snapshot left by a failed run would make undefine refuse the VM."""
    try:
        c = libvirt.open(URI)
    except libvirt.libvirtError:
        return
    try:
        d = c.lookupByName(name)
        if d.isActive():
            d.destroy()
        d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    except libvirt.libvirtError:
        pass
    finally:
        c.close()


def qemu_io(path: str, cmd: str) -> None:
    r = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", cmd, path], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout + r.stderr


def _disk_source(dom: libvirt.virDomain, flags: int = 0) -> str:
    disk = Domain.from_xml(dom.XMLDesc(flags)).devices.disk_by_target("vda")
    assert disk is not None and disk.source_file
    return disk.source_file


async def _job_message(m: Manager, job_id: str) -> str:
    """The job's error message once the restart has undone what it recorded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UNDO_DEADLINE
    while True:
        message = m.jobs.get(job_id).error["message"]
        if message != "the server restarted" or loop.time() > deadline:
            return message
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("running", [True, False], ids=["running", "shut-off-meanwhile"])
async def test_restart_merges_the_snapshot_of_an_interrupted_clone_back(
    settings: Settings, lab: dict[str, Any], running: bool
) -> None:
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByUUIDString(lab["uuid"])
        dom.create()
        # The clone's first steps, up to the copy it was killed in: the record (what
        # JobProgress.undo_on_interrupt writes into the job row), then the snapshot,
        # taken through the same service call.
        first = Manager(settings)
        await first.start()
        try:
            await first.registry.get("local").wait_connected(60)
            job_id = str(uuid.uuid4())
            record = {
                "action": "delete_snapshot", "host": "local", "uuid": lab["uuid"],
                "name": CLONE_SNAPSHOT, "vm": lab["name"],
            }  # fmt: skip
            with first.db.begin() as s:
                s.add(
                    Job(
                        id=job_id,
                        kind="vm.clone",
                        target=f"local/{lab['name']}",
                        state="running",
                        result={"undo": [record]},
                    )
                )
            snap = await first.snapshots.create(
                "local", lab["uuid"], name=CLONE_SNAPSHOT, kind="external"
            )
            assert snap["kind"] == "external"
        finally:
            await first.stop()  # the job row stays `running`, as after a kill -9
        overlay = _disk_source(dom)
        assert overlay != lab["base"] and await asyncio.to_thread(Path(overlay).exists)
        assert [s.getName() for s in dom.listAllSnapshots()] == [CLONE_SNAPSHOT]
        if not running:
            dom.destroy()

        second = Manager(settings)
        await second.start()
        try:
            message = await _job_message(second, job_id)
            job = second.jobs.get(job_id)
            audit = second.audit.query(job_id=job_id).items
        finally:
            await second.stop()

        removed = (
            f"the server restarted; its half-made snapshot {CLONE_SNAPSHOT} of vm "
            f"{lab['name']}: removed"
        )
        # A VM shut off meanwhile: libvirt's offline commit, or its fallback (see
        # snapshots._delete), whichever libvirt can do for it.
        merges = ["block-commit"] if running else ["offline-commit", "block-commit (paused start)"]
        assert message in [f"{removed} ({how})" for how in merges], message
        assert (job.state, job.error["code"]) == ("failed", "interrupted")
        assert [(e.action, e.result) for e in audit] == [("jobs.undo_interrupted", "ok")]
        # libvirt: the snapshot is gone, the VM is on its original image again (live and
        # in its definition), in the state it was left in, and the overlay file is gone.
        assert dom.listAllSnapshots() == []
        assert dom.isActive() == running
        assert _disk_source(dom) == lab["base"]
        assert _disk_source(dom, libvirt.VIR_DOMAIN_XML_INACTIVE) == lab["base"]
        assert sorted(p.name for p in lab["dir"].iterdir()) == [Path(lab["base"]).name]
        if running:
            dom.destroy()
        qemu_io(lab["base"], "read -P 0x5a 0 64k")
    finally:
        conn.close()
