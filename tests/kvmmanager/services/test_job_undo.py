"""What an interrupted job recorded is undone at the next start (test driver): newest
first, each outcome in the job's message and in an audit entry carrying the job id."""

from __future__ import annotations

import uuid
from typing import Any

import libvirt

from kvmmanager.db.models import Job
from kvmmanager.services import job_undo

POOL = "default-pool"


def _volume_xml(name: str) -> str:
    return (
        f"<volume><name>{name}</name><capacity unit='MiB'>1</capacity>"
        "<target><format type='raw'/></target></volume>"
    )


def _domain_xml(name: str, dom_uuid: str, disk: str) -> str:
    return (
        f"<domain type='test'><name>{name}</name><uuid>{dom_uuid}</uuid>"
        "<memory unit='MiB'>64</memory><os><type>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><source file='{disk}'/><target dev='vda'/></disk>"
        "</devices></domain>"
    )


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
        message = await job_undo.undo_job(m, job_undo.Interrupted(job_id, "local/x", records))
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
            m, job_undo.Interrupted(f"kvmm-t-chaos-{tag}", "local/x", [record])
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
    from kvmmanager.services.vm_spec import DiskSpec, VmSpec

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
