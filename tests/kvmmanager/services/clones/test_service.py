"""Clones and templates on libvirt's test driver: full and linked clones get a new name,
UUID and MACs and their own volumes; running sources, linked clones of non-templates,
name clashes and bad input are refused naming the field; a failed clone leaves nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import libvirt
import pytest
from tests.testdriver_cleanup import purge

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError
from kvmmanager.services.clones import service as clones_mod
from kvmmanager.services.vms.spec import DiskSpec, NicSpec, VmSpec
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.vm_metadata import VmMetadata
from kvmmanager.virt.xml.volume import Volume

POOL = "default-pool"
PREFIX = "kvmm-t-clone-"


def _name() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def source(manager: Any) -> Any:
    hc = manager.registry.get("local")
    await hc.wait_connected(30)
    name = _name()
    spec = VmSpec(
        name=name,
        memory_mib=128,
        disks=[DiskSpec(pool=POOL, size_gib=1)],
        nics=[NicSpec(network="default")],
    )
    await manager.vms.create("local", spec)
    try:
        yield name
    finally:
        await asyncio.to_thread(purge, PREFIX)


async def _xml(manager: Any, name: str) -> Domain:
    return Domain.from_xml(await manager.vms.xml("local", name, inactive=True))


async def _volumes(manager: Any) -> list[str]:
    hc = manager.registry.get("local")
    return await hc.run(lambda: sorted(hc.conn.storagePoolLookupByName(POOL).listVolumes()))


async def test_full_clone_has_its_own_identity_and_disks(manager: Any, source: str) -> None:
    new = _name()
    result = await manager.clones.clone("local", source, new, created_by="alice")
    src, dst = await _xml(manager, source), await _xml(manager, new)
    assert result["name"] == new and result["mode"] == "full" and result["source"] == source
    assert dst.uuid == result["uuid"] != src.uuid
    assert dst.devices.interfaces[0].mac_address != src.devices.interfaces[0].mac_address
    assert dst.devices.interfaces[0].source_network == "default"
    src_disk = src.devices.disk_by_target("vda").source_file
    new_disk = dst.devices.disk_by_target("vda").source_file
    assert new_disk != src_disk and new_disk == result["volumes"][0]
    assert new_disk.rsplit("/", 1)[1].startswith(new)
    assert result["consistency"] == {"level": "offline"}
    meta = VmMetadata(dst.manager_metadata.element)
    assert (meta.cloned_from, meta.cloned_from_name, meta.clone_kind) == (src.uuid, source, "full")
    assert meta.created_by == "alice" and not meta.template
    # The clone shows up in the inventory right away.
    assert manager.vms.get("local", new).uuid == result["uuid"]


async def test_refusals(manager: Any, source: str) -> None:
    svc = manager.clones
    with pytest.raises(Conflict) as e:
        await svc.clone("local", source, source)
    assert e.value.field == "name"
    with pytest.raises(InvalidInput) as e:
        await svc.clone("local", source, "bad/name")
    assert e.value.field == "name"
    with pytest.raises(InvalidInput) as e:
        await svc.clone("local", source, _name(), mode="deep")
    assert e.value.field == "mode"
    with pytest.raises(InvalidInput) as e:
        await svc.clone("local", source, _name(), consistent="hope")
    assert e.value.field == "consistent"
    with pytest.raises(Conflict, match="not a template") as e:
        await svc.clone("local", source, _name(), mode="linked")
    assert e.value.field == "mode"
    # A volume already named like the clone's disk: refused before anything is made.
    new = _name()
    hc = manager.registry.get("local")
    taken = f"{new}-vda.qcow2"
    src_vol = (await _xml(manager, source)).devices.disk_by_target("vda").source_file
    clash = src_vol.rsplit("/", 1)[1].replace(source, new, 1)
    for vol_name in {taken, clash}:
        xml = Volume(name=vol_name, capacity=1024 * 1024, target_format="qcow2").to_xml()
        await hc.run(lambda x=xml: hc.conn.storagePoolLookupByName(POOL).createXML(x, 0))
    with pytest.raises(Conflict, match="already exists") as e:
        await svc.clone("local", source, new)
    assert e.value.field == "name"
    await manager.vms.action("local", source, "start")
    with pytest.raises(Conflict, match="consistent='snapshot'") as e:
        await svc.clone("local", source, _name())
    assert e.value.field == "vm"


async def test_failed_clone_removes_its_volumes(
    manager: Any, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await _volumes(manager)

    def broken(conn: libvirt.virConnect, xml: str, start: bool) -> str:
        raise KvmmError("define failed on purpose")

    monkeypatch.setattr(clones_mod, "_define", broken)
    with pytest.raises(KvmmError, match="on purpose"):
        await manager.clones.clone("local", source, _name())
    assert await _volumes(manager) == before


async def test_clone_job_reports_progress(manager: Any, source: str) -> None:
    new = _name()
    events: list[Any] = []
    with manager.bus.subscribe(predicate=lambda e: e.kind.startswith("job.")) as sub:
        job_id = await manager.clones.start("local", source, new)
        job = await manager.jobs.wait(job_id)
        while not sub._queue.empty():
            events.append(sub._queue.get_nowait())
    assert job.state == "done", job.error
    assert job.result["name"] == new
    progress = [e for e in events if e.kind == "job.progress" and e.subject == job_id]
    assert progress and progress[-1].data["done"] == progress[-1].data["total"]


async def test_templates_and_linked_clones(manager: Any, source: str) -> None:
    tpl = manager.templates
    marked = await tpl.mark("local", source)
    assert marked["template"] and marked["linked_clones"] == []
    assert [t["name"] for t in await tpl.list("local")] == [source]
    new = _name()
    job = await manager.jobs.wait(await tpl.deploy("local", source, new))
    assert job.state == "done", job.error
    assert job.result["mode"] == "linked"
    hc = manager.registry.get("local")
    path = job.result["volumes"][0]
    vol = await hc.run(lambda: Volume.from_xml(hc.conn.storageVolLookupByPath(path).XMLDesc(0)))
    src_disk = (await _xml(manager, source)).devices.disk_by_target("vda").source_file
    assert vol.backing_path == src_disk and vol.target_format == "qcow2"
    assert (await tpl.get("local", source))["linked_clones"] == [new]
    # The template cannot stop being one while a linked clone depends on it.
    with pytest.raises(Conflict, match="backs linked clones"):
        await tpl.mark("local", source, False)
    with pytest.raises(Conflict, match="not a template") as e:
        await tpl.deploy("local", new, _name())
    assert e.value.field == "template"
    full = await manager.jobs.wait(await tpl.deploy("local", source, _name(), mode="full"))
    assert full.state == "done" and full.result["mode"] == "full"
    # A template is never started, and its disks are never deleted under a linked clone.
    with pytest.raises(Conflict, match="is a template"):
        await manager.vms.action("local", source, "start")
    with pytest.raises(Conflict, match="backs linked clones") as e:
        await manager.vms.delete("local", source, remove_volumes=True)
    assert e.value.field == "remove_volumes"
    await manager.vms.delete("local", new, remove_volumes=True)
    unmarked = await tpl.mark("local", source, False)
    assert not unmarked["template"]
    assert await tpl.list("local") == []
