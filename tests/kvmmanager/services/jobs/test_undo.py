"""What an interrupted job recorded is undone at the next start (test driver): newest
first, each outcome in the job's message and in an audit entry carrying the job id."""

from __future__ import annotations

import uuid
from typing import Any

import libvirt

from kvmmanager.db.models import Job
from kvmmanager.services.jobs import undo as job_undo
from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.snapshot import DomainSnapshot

POOL = "default-pool"


def _volume_xml(name: str) -> str:
    return build_volume_xml(name, 1024 * 1024, "raw")


def _domain_xml(name: str, dom_uuid: str, disk: str) -> str:
    dom = Domain(type="test", name=name, uuid=dom_uuid, memory=64 * 1024)
    dom.os.os_type = "hvm"
    dom.devices.add(Disk(type="file", device="disk", source_file=disk, target_dev="vda"))
    return dom.to_xml()


async def test_interrupted_clone_records_are_undone_newest_first(manager: Any) -> None:
    m = manager
    tag = uuid.uuid4().hex[:6]
    vol, never = f"kvmm-t-chaos-{tag}.raw", f"kvmm-t-chaos-{tag}-never.raw"
    name, dom_uuid = f"kvmm-t-chaos-{tag}", str(uuid.uuid4())
    h = m.registry.get("local")
    await h.wait_connected(30)

    def make(conn: libvirt.virConnect) -> None:
        path = conn.storagePoolLookupByName(POOL).createXML(_volume_xml(vol), 0).path()
        conn.defineXML(_domain_xml(name, dom_uuid, path)).create()

    await h.run(lambda: make(h.conn))
    await m.vms.refresh("local", dom_uuid)
    records = [
        {"action": "delete_volume", "host": "local", "pool": POOL, "volume": vol},
        {"action": "delete_volume", "host": "local", "pool": POOL, "volume": never},
        {"action": "undefine_domain", "host": "local", "uuid": dom_uuid, "name": name},
    ]
    job_id = f"kvmm-t-chaos-{tag}"
    with m.db.begin() as s:
        s.add(Job(id=job_id, kind="vm.clone", target=f"local/{name}", state="failed"))
    try:
        message = await job_undo.undo_job(
            m.jobs.undo_tools, job_undo.Interrupted(job_id, "local/x", records)
        )
    finally:

        def sweep(conn: libvirt.virConnect) -> None:
            for d in conn.listAllDomains():
                if d.name() == name:
                    if d.isActive():
                        d.destroy()
                    d.undefine()
            pool = conn.storagePoolLookupByName(POOL)
            for v in pool.listAllVolumes():
                if v.name() in (vol, never):
                    v.delete(0)

        await h.run(lambda: sweep(h.conn))
    # The VM (recorded last) went first, so its disk was free to delete.
    assert message == (
        f"its half-made vm {name}: removed; "
        f"volume {POOL}/{never}: not there (never created); volume {POOL}/{vol}: removed"
    )
    assert await h.run(lambda: name not in [d.name() for d in h.conn.listAllDomains()])
    assert all(d.uuid != dom_uuid for d in m.inventory.domains("local"))
    page = m.audit.query(job_id=job_id)
    assert [(e.action, e.username, e.result) for e in page.items] == [
        ("jobs.undo_interrupted", None, "ok")
    ]
    assert len(page.items[0].params["undone"]) == 3


async def test_a_volume_another_vm_uses_is_left_in_place(manager: Any) -> None:
    m = manager
    tag = uuid.uuid4().hex[:6]
    vol, name, dom_uuid = f"kvmm-t-chaos-{tag}.raw", f"kvmm-t-chaos-{tag}", str(uuid.uuid4())
    h = m.registry.get("local")
    await h.wait_connected(30)

    def make(conn: libvirt.virConnect) -> None:
        path = conn.storagePoolLookupByName(POOL).createXML(_volume_xml(vol), 0).path()
        conn.defineXML(_domain_xml(name, dom_uuid, path))

    await h.run(lambda: make(h.conn))
    with m.db.begin() as s:
        s.add(Job(id=f"kvmm-t-chaos-{tag}", kind="vm.clone", target="local/x", state="failed"))
    try:
        await m.vms.refresh("local", dom_uuid)
        record = {"action": "delete_volume", "host": "local", "pool": POOL, "volume": vol}
        message = await job_undo.undo_job(
            m.jobs.undo_tools, job_undo.Interrupted(f"kvmm-t-chaos-{tag}", "local/x", [record])
        )
        assert message.endswith(f"volume {POOL}/{vol}: left in place: used by VM(s) {name}")
        page = m.audit.query(job_id=f"kvmm-t-chaos-{tag}")
        assert [(e.result, e.error_code) for e in page.items] == [("error", "undo_incomplete")]
    finally:

        def sweep(conn: libvirt.virConnect) -> None:
            conn.lookupByUUIDString(dom_uuid).undefine()
            conn.storagePoolLookupByName(POOL).storageVolLookupByName(vol).delete(0)

        await h.run(lambda: sweep(h.conn))


class _Recorder:
    """A progress callback that also takes undo records, like JobProgress."""

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []

    def __call__(self, *args: Any) -> None:
        pass

    def undo_on_interrupt(self, action: str, **args: str) -> None:
        self.records.append({"action": action, **args})


async def test_a_vm_create_records_its_volumes_then_its_own_uuid(manager: Any) -> None:
    from kvmmanager.services.vms.spec import DiskSpec, VmSpec

    m = manager
    name = f"kvmm-t-chaos-{uuid.uuid4().hex[:6]}"
    h = m.registry.get("local")
    await h.wait_connected(30)
    spec = VmSpec(
        name=name,
        memory_mib=64,
        disks=[DiskSpec(pool=POOL, size_gib=0.01), DiskSpec(pool=POOL, size_gib=0.01)],
    )
    rec = _Recorder()
    try:
        res = await m.vms.create("local", spec, rec)
    finally:

        def sweep(conn: libvirt.virConnect) -> None:
            for d in conn.listAllDomains():
                if d.name() == name:
                    d.undefine()
            for v in conn.storagePoolLookupByName(POOL).listAllVolumes():
                if v.name().startswith(name):
                    v.delete(0)

        await h.run(lambda: sweep(h.conn))
    assert rec.records == [
        {"action": "delete_volume", "pool": POOL, "volume": f"{name}.qcow2"},
        {"action": "delete_volume", "pool": POOL, "volume": f"{name}-1.qcow2"},
        {"action": "undefine_domain", "uuid": res["vm"].uuid, "name": name},
    ]


async def test_a_clone_snapshot_is_deleted_after_the_clone_s_own_records(manager: Any) -> None:
    """The test driver has no external snapshots: an internal one under the clone's name
    stands in (the merge of an external one is test_job_undo_libvirtd.py). Recorded
    first, the snapshot is undone last; a VM without it, or gone, is said so."""
    from kvmmanager.services.clones.service import CLONE_SNAPSHOT

    m = manager
    tag = uuid.uuid4().hex[:6]
    name, dom_uuid = f"kvmm-t-chaos-{tag}", str(uuid.uuid4())
    bare, bare_uuid = f"kvmm-t-chaos-{tag}-bare", str(uuid.uuid4())
    gone_uuid = str(uuid.uuid4())
    h = m.registry.get("local")
    await h.wait_connected(30)

    def make(conn: libvirt.virConnect) -> None:
        dom = conn.defineXML(_domain_xml(name, dom_uuid, "/guest/diskimage1"))
        dom.create()
        dom.snapshotCreateXML(DomainSnapshot(name=CLONE_SNAPSHOT).to_xml())
        conn.defineXML(_domain_xml(bare, bare_uuid, "/guest/diskimage1"))

    def snap(vm: str, vm_uuid: str) -> dict[str, str]:
        return {
            "action": "delete_snapshot", "host": "local", "uuid": vm_uuid,
            "name": CLONE_SNAPSHOT, "vm": vm,
        }  # fmt: skip

    await h.run(lambda: make(h.conn))
    records = [
        snap(name, dom_uuid),
        snap(bare, bare_uuid),
        snap("deleted-meanwhile", gone_uuid),
        {"action": "delete_volume", "host": "local", "pool": POOL, "volume": f"{name}.raw"},
    ]
    job_id = f"kvmm-t-chaos-{tag}"
    with m.db.begin() as s:
        s.add(Job(id=job_id, kind="vm.clone", target=f"local/{name}", state="failed"))
    try:
        message = await job_undo.undo_job(
            m.jobs.undo_tools, job_undo.Interrupted(job_id, "local/x", records)
        )
        left = await h.run(lambda: h.conn.lookupByUUIDString(dom_uuid).snapshotListNames())
        assert await h.run(lambda: h.conn.lookupByUUIDString(dom_uuid).isActive())
    finally:

        def sweep(conn: libvirt.virConnect) -> None:
            for d in conn.listAllDomains():
                if d.name() in (name, bare):
                    if d.isActive():
                        d.destroy()
                    d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

        await h.run(lambda: sweep(h.conn))
    assert message == (
        f"its half-made volume {POOL}/{name}.raw: not there (never created); "
        f"snapshot {CLONE_SNAPSHOT} of vm deleted-meanwhile: not there (its vm is gone); "
        f"snapshot {CLONE_SNAPSHOT} of vm {bare}: not there (never created); "
        f"snapshot {CLONE_SNAPSHOT} of vm {name}: removed (internal)"
    )
    assert left == []
    page = m.audit.query(job_id=job_id)
    assert [(e.action, e.result) for e in page.items] == [("jobs.undo_interrupted", "ok")]


async def test_a_running_vm_clone_records_its_snapshot_before_taking_it(
    manager: Any, monkeypatch: Any
) -> None:
    """Order of the records of a clone of a running VM: the snapshot before it is taken,
    then each volume, then the definition. The test driver cannot take the external
    snapshot, so the snapshot service is replaced by one that checks the record exists."""
    from kvmmanager.services.clones.service import CLONE_SNAPSHOT
    from kvmmanager.services.vms.spec import DiskSpec, VmSpec

    m = manager
    source, new = f"kvmm-t-chaos-{uuid.uuid4().hex[:6]}", f"kvmm-t-chaos-{uuid.uuid4().hex[:6]}"
    h = m.registry.get("local")
    await h.wait_connected(30)
    made = await m.vms.create(
        "local", VmSpec(name=source, memory_mib=64, disks=[DiskSpec(pool=POOL, size_gib=0.01)])
    )
    src_uuid = made["vm"].uuid
    rec = _Recorder()
    calls: list[tuple[str, int]] = []

    async def create(host: str, vm: str, **kw: Any) -> dict[str, Any]:
        assert (vm, kw["name"], kw["kind"]) == (src_uuid, CLONE_SNAPSHOT, "external")
        calls.append(("create", len(rec.records)))
        return {"consistency": {"level": "crash-consistent"}}

    async def delete(host: str, vm: str, name: str) -> dict[str, Any]:
        calls.append(("delete", len(rec.records)))
        return {"merge": "block-commit"}

    monkeypatch.setattr(m.snapshots, "create", create)
    monkeypatch.setattr(m.snapshots, "delete", delete)
    try:
        await m.vms.action("local", source, "start")
        res = await m.clones.clone("local", source, new, consistent="snapshot", progress=rec)
    finally:

        def sweep(conn: libvirt.virConnect) -> None:
            for d in conn.listAllDomains():
                if d.name() in (source, new):
                    if d.isActive():
                        d.destroy()
                    d.undefine()
            for v in conn.storagePoolLookupByName(POOL).listAllVolumes():
                if v.name().startswith((source, new)):
                    v.delete(0)

        await h.run(lambda: sweep(h.conn))
    assert rec.records == [
        {"action": "delete_snapshot", "host": "local", "uuid": src_uuid,
         "name": CLONE_SNAPSHOT, "vm": source},
        {"action": "delete_volume", "host": "local", "pool": POOL, "volume": f"{new}.qcow2"},
        {"action": "undefine_domain", "host": "local", "uuid": res["uuid"], "name": new},
    ]  # fmt: skip
    # Taken once the record was in (1 record), merged back after all three.
    assert calls == [("create", 1), ("delete", 3)]
