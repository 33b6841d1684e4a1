"""StorageService on libvirt's test driver: pools, volumes, in-use checks, clone job.

`test:///default` keeps its state for the whole process, so every object here has a
unique kvmm-t-sto- name and is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import libvirt
import pytest
from lxml import etree

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.storage.specs import PoolSpec, VolumeSpec, validate_pool_spec
from kvmmanager.services.storage.xml import build_pool_xml, build_volume_xml
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.validate import validate_xml
from kvmmanager.virt.xml.volume import Volume

HOST = "local"


def _name(kind: str) -> str:
    return f"kvmm-t-sto-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def storage(manager: Any) -> Any:
    await manager.registry.get(HOST).wait_connected(30)
    return manager.storage


@pytest.fixture
async def pool(storage: Any) -> AsyncIterator[str]:
    name = _name("pool")
    await storage.define_pool(HOST, PoolSpec(name=name, target=f"/kvmm-t-sto/{name}"))
    try:
        yield name
    finally:
        with contextlib.suppress(NotFound):
            await storage.delete_pool(HOST, name, delete_volumes=True, force=True)


def _domain_xml(name: str, disk_path: str) -> str:
    dom = etree.Element("domain", type="test")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory").text = "65536"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type").text = "hvm"
    disk = etree.SubElement(etree.SubElement(dom, "devices"), "disk", type="file", device="disk")
    etree.SubElement(disk, "source", file=disk_path)
    etree.SubElement(disk, "target", dev="vda")
    return etree.tostring(dom, encoding="unicode")


@pytest.fixture
async def vm_using(manager: Any) -> AsyncIterator[Any]:
    """Factory: define a test-driver VM whose disk is `path`; waits for the inventory."""
    host = manager.registry.get(HOST)
    made: list[str] = []

    async def make(path: str) -> str:
        name = _name("vm")
        with manager.bus.subscribe(predicate=lambda e: e.kind == "domain.added") as sub:
            await host.run(lambda: host.conn.defineXML(_domain_xml(name, path)))
            made.append(name)
            async with asyncio.timeout(30):
                while not any(d.name == name for d in manager.inventory.domains(HOST)):
                    await sub.get()
        return name

    yield make
    for name in made:
        await host.run(lambda n=name: host.conn.lookupByName(n).undefine())


# ---- pools -------------------------------------------------------------------------


async def test_define_dir_pool_reports_capacity_and_state(storage: Any, pool: str) -> None:
    details = await storage.get_pool(HOST, pool)
    assert details.type == "dir"
    assert details.active and details.state == "running"
    assert details.autostart and details.persistent
    assert details.capacity > 0 and details.available <= details.capacity
    assert details.target == f"/kvmm-t-sto/{pool}"
    assert details.volumes == 0
    assert pool in [p.name for p in await storage.list_pools(HOST)]


async def test_define_pool_twice_is_a_conflict(storage: Any, pool: str) -> None:
    with pytest.raises(Conflict) as exc:
        await storage.define_pool(HOST, PoolSpec(name=pool, target="/kvmm-t-sto/other"))
    assert exc.value.field == "name"


async def test_define_without_start_leaves_it_inactive(storage: Any) -> None:
    name = _name("pool")
    spec = PoolSpec(name=name, target=f"/kvmm-t-sto/{name}", start=False, autostart=False)
    details = await storage.define_pool(HOST, spec)
    try:
        assert not details.active and details.state == "inactive" and not details.autostart
        assert details.volumes is None
    finally:
        await storage.delete_pool(HOST, name)
    with pytest.raises(NotFound):
        await storage.get_pool(HOST, name)


async def test_pool_actions_and_wrong_states(manager: Any, storage: Any, pool: str) -> None:
    with pytest.raises(Conflict):
        await storage.pool_action(HOST, pool, "start")
    with pytest.raises(Conflict):
        await storage.pool_action(HOST, pool, "build")
    assert (await storage.pool_action(HOST, pool, "refresh")).active
    assert not (await storage.pool_action(HOST, pool, "noautostart")).autostart
    # libvirt sends no event for autostart: the service keeps the inventory current.
    assert manager.inventory.pool(HOST, pool).autostart is False
    assert (await storage.pool_action(HOST, pool, "autostart")).autostart
    stopped = await storage.pool_action(HOST, pool, "stop")
    assert not stopped.active and stopped.state == "inactive"
    for action in ("stop", "refresh"):
        with pytest.raises(Conflict):
            await storage.pool_action(HOST, pool, action)
    with pytest.raises(Conflict):
        await storage.list_volumes(HOST, pool)
    assert (await storage.pool_action(HOST, pool, "start")).active


async def test_unknown_pool_and_action(storage: Any, pool: str) -> None:
    with pytest.raises(NotFound) as exc:
        await storage.get_pool(HOST, "kvmm-t-sto-missing")
    assert exc.value.field == "pool"
    with pytest.raises(NotFound):
        await storage.pool_action(HOST, "kvmm-t-sto-missing", "start")
    with pytest.raises(InvalidInput) as exc:
        await storage.pool_action(HOST, pool, "explode")
    assert exc.value.field == "action"


async def test_unknown_host_is_not_found(storage: Any) -> None:
    with pytest.raises(NotFound):
        await storage.list_pools("kvmm-t-sto-nohost")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "", "target": "/srv/x"}, "name"),
        ({"name": "a/b", "target": "/srv/x"}, "name"),
        ({"name": "bad\x01", "target": "/srv/x"}, "name"),
        ({"name": "x" * 65, "target": "/srv/x"}, "name"),
        ({"name": "-opt", "target": "/srv/x"}, "name"),
        ({"name": "p"}, "target"),
        ({"name": "p", "target": "relative/dir"}, "target"),
        ({"name": "p", "target": "/srv/../etc"}, "target"),
        ({"name": "p", "target": "/etc"}, "target"),
        ({"name": "p", "target": "/srv/x", "source_host": "nas"}, "source_host"),
        ({"name": "p", "type": "netfs", "target": "/mnt/x"}, "source_host"),
        ({"name": "p", "type": "netfs", "target": "/mnt/x", "source_host": "nas"}, "source_path"),
        ({"name": "p", "type": "logical", "source_devices": ["sdb"]}, "source_devices[0]"),
    ],
)
async def test_bad_pool_specs_name_the_field(storage: Any, spec: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        await storage.define_pool(HOST, PoolSpec(**spec))
    assert exc.value.field == field


# ---- volumes -----------------------------------------------------------------------


async def test_create_list_get_delete_volumes(storage: Any, pool: str) -> None:
    q = await storage.create_volume(HOST, pool, VolumeSpec(name="a.qcow2", capacity="1G"))
    assert (q.format, q.capacity, q.pool) == ("qcow2", 1 << 30, pool)
    r = await storage.create_volume(
        HOST, pool, VolumeSpec(name="b.raw", capacity=5 << 20, format="raw")
    )
    assert (r.format, r.capacity) == ("raw", 5 << 20)
    assert [v.name for v in await storage.list_volumes(HOST, pool)] == ["a.qcow2", "b.raw"]
    got = await storage.get_volume(HOST, pool, "a.qcow2")
    assert got.path.endswith("/a.qcow2") and got.used_by == []
    assert (await storage.get_pool(HOST, pool)).volumes == 2
    await storage.delete_volume(HOST, pool, "a.qcow2")
    with pytest.raises(NotFound) as exc:
        await storage.get_volume(HOST, pool, "a.qcow2")
    assert exc.value.field == "volume"


async def test_volume_with_backing_takes_its_capacity(storage: Any, pool: str) -> None:
    await storage.create_volume(HOST, pool, VolumeSpec(name="base.qcow2", capacity="2G"))
    spec = VolumeSpec(name="top.qcow2", backing={"volume": "base.qcow2"})
    top = await storage.create_volume(HOST, pool, spec)
    assert top.capacity == 2 << 30
    with pytest.raises(InvalidInput) as exc:
        await storage.create_volume(
            HOST, pool, VolumeSpec(name="x.qcow2", backing={"volume": "nope.qcow2"})
        )
    assert exc.value.field == "backing.volume"
    with pytest.raises(InvalidInput) as exc:
        await storage.create_volume(
            HOST, pool,
            VolumeSpec(name="y.qcow2", capacity="1G", backing={"volume": "base.qcow2"}),
        )  # fmt: skip
    assert exc.value.field == "capacity"


async def test_duplicate_volume_is_a_conflict(storage: Any, pool: str) -> None:
    await storage.create_volume(HOST, pool, VolumeSpec(name="d.qcow2", capacity="1M"))
    with pytest.raises(Conflict) as exc:
        await storage.create_volume(HOST, pool, VolumeSpec(name="d.qcow2", capacity="1M"))
    assert exc.value.field == "name"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "v", "capacity": -1}, "capacity"),
        ({"name": "v", "capacity": 0}, "capacity"),
        ({"name": "v", "capacity": "lots"}, "capacity"),
        ({"name": "v", "capacity": "1000T"}, "capacity"),
        ({"name": "v"}, "capacity"),
        ({"name": "../v", "capacity": "1G"}, "name"),
        ({"name": "", "capacity": "1G"}, "name"),
        ({"name": "v", "format": "raw", "backing": {"volume": "b"}}, "backing"),
    ],
)
async def test_bad_volume_specs_name_the_field(
    storage: Any, pool: str, spec: dict, field: str
) -> None:
    with pytest.raises(InvalidInput) as exc:
        await storage.create_volume(HOST, pool, VolumeSpec(**spec))
    assert exc.value.field == field


async def test_volume_used_by_a_vm_cannot_be_deleted(
    storage: Any, pool: str, vm_using: Any
) -> None:
    vol = await storage.create_volume(HOST, pool, VolumeSpec(name="disk.qcow2", capacity="1G"))
    vm = await vm_using(vol.path)
    assert storage.volume_path_in_use_by(HOST, vol.path) == [vm]
    assert storage.volume_path_in_use_by(HOST, vol.path, exclude=vm) == []
    assert (await storage.get_volume(HOST, pool, "disk.qcow2")).used_by == [vm]
    with pytest.raises(Conflict) as exc:
        await storage.delete_volume(HOST, pool, "disk.qcow2")
    assert vm in exc.value.message
    with pytest.raises(Conflict) as exc:
        await storage.delete_pool(HOST, pool, delete_volumes=True)
    assert vm in exc.value.message
    assert (await storage.get_pool(HOST, pool)).active


async def test_volume_under_a_running_vm_is_not_resized_or_overwritten(
    manager: Any, storage: Any, pool: str
) -> None:
    vol = await storage.create_volume(HOST, pool, VolumeSpec(name="run.raw", capacity="1M",
                                                             format="raw"))  # fmt: skip
    host = manager.registry.get(HOST)
    vm = _name("vm")
    with manager.bus.subscribe(predicate=lambda e: e.kind.startswith("domain.")) as sub:
        await host.run(lambda: host.conn.createXML(_domain_xml(vm, vol.path), 0))
        try:
            async with asyncio.timeout(30):
                while vm not in storage.volume_path_in_use_by(HOST, vol.path, running_only=True):
                    await sub.get()
            with pytest.raises(Conflict) as exc:
                await storage.resize_volume(HOST, pool, "run.raw", "2M")
            assert vm in exc.value.message
            with pytest.raises(Conflict) as exc:
                await storage.check_upload(HOST, pool, "run.raw", size=10, create=False,
                                           format="raw")  # fmt: skip
            assert vm in exc.value.message
        finally:
            await host.run(lambda: host.conn.lookupByName(vm).destroy())


async def test_clone_runs_as_a_job(manager: Any, storage: Any, pool: str) -> None:
    await storage.create_volume(HOST, pool, VolumeSpec(name="src.qcow2", capacity="1G"))
    job_id = await storage.clone_volume(HOST, pool, "src.qcow2", "copy.qcow2")
    async with asyncio.timeout(60):
        job = await manager.jobs.wait(job_id)
    assert job.state == "done", job.error
    assert job.kind == "volume.clone"
    assert job.result["name"] == "copy.qcow2" and job.result["capacity"] == 1 << 30
    assert "copy.qcow2" in [v.name for v in await storage.list_volumes(HOST, pool)]
    with pytest.raises(Conflict):
        await storage.clone_volume(HOST, pool, "src.qcow2", "copy.qcow2")
    with pytest.raises(NotFound):
        await storage.clone_volume(HOST, pool, "nope.qcow2", "other.qcow2")


async def test_delete_pool_with_volumes_removes_them(storage: Any) -> None:
    name = _name("pool")
    await storage.define_pool(HOST, PoolSpec(name=name, target=f"/kvmm-t-sto/{name}"))
    await storage.create_volume(HOST, name, VolumeSpec(name="v.qcow2", capacity="1M"))
    await storage.delete_pool(HOST, name, delete_volumes=True)
    conn = libvirt.open("test:///default")
    try:
        assert name not in [p.name() for p in conn.listAllStoragePools(0)]
    finally:
        conn.close()


# ---- every XML the storage code can write validates against libvirt's schema ----------


@pytest.mark.parametrize(
    "spec",
    [
        PoolSpec(name="d", target="/srv/kvmm-t-sto/d"),
        PoolSpec(name="vg", type="logical"),
        PoolSpec(name="vg2", type="logical", source_name="vmvg",
                 source_devices=["/dev/sdb", "/dev/sdc"]),
        PoolSpec(name="nfs", type="netfs", target="/mnt/nfs", source_host="nas.example",
                 source_path="/export/vm", source_format="nfs"),
        PoolSpec(name="smb", type="netfs", target="/mnt/smb", source_host="10.213.9.9",
                 source_path="share", source_format="cifs"),
        PoolSpec(name="auto", type="netfs", target="/mnt/a", source_host="nas",
                 source_path="/e"),
    ],
    ids=["dir", "logical", "logical-devices", "netfs-nfs", "netfs-cifs", "netfs-auto"],
)  # fmt: skip
def test_pool_xml_validates(spec: PoolSpec) -> None:
    xml = build_pool_xml(validate_pool_spec(spec))
    validate_xml(xml, "pool")
    model = Pool.from_xml(xml)
    assert (model.name, model.type) == (spec.name, spec.type)
    if spec.type == "logical":
        assert model.source_name == (spec.source_name or spec.name)
        assert model.source_devices == spec.source_devices
    if spec.type == "netfs":
        assert (model.source_host_name, model.source_dir) == (spec.source_host, spec.source_path)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("v.qcow2", 1 << 30, "qcow2"), {}),
        (("v.raw", 1 << 20, "raw"), {}),
        (("v.raw", 1 << 20, "raw"), {"preallocate": True}),
        (("top.qcow2", 1 << 30, "qcow2"), {"backing": ("/srv/base.qcow2", "qcow2")}),
        (("top2.qcow2", 1 << 30, "qcow2"), {"backing": ("/srv/base.raw", "raw")}),
    ],
    ids=["qcow2", "raw", "raw-preallocated", "backing-qcow2", "backing-raw"],
)
def test_volume_xml_validates(args: tuple, kwargs: dict) -> None:
    xml = build_volume_xml(*args, **kwargs)
    validate_xml(xml, "volume")
    model = Volume.from_xml(xml)
    assert (model.name, model.capacity, model.target_format) == args
    assert model.allocation == (args[1] if kwargs.get("preallocate") else 0)
    if "backing" in kwargs:
        assert (model.backing_path, model.backing_format) == kwargs["backing"]


async def test_cancelled_clone_leaves_no_copy(manager: Any, storage: Any, pool: str) -> None:
    await storage.create_volume(HOST, pool, VolumeSpec(name="src.qcow2", capacity="1G"))
    with manager.bus.subscribe(predicate=lambda e: e.kind == "job.progress") as sub:
        job_id = await storage.clone_volume(HOST, pool, "src.qcow2", "gone.qcow2")
        async with asyncio.timeout(60):
            # Cancel once the job runs, i.e. once the copy has been started.
            while (await sub.get()).data.get("state") != "running":
                pass
            manager.jobs.cancel(job_id)
            job = await manager.jobs.wait(job_id)
    # Whether the copy was still running or had already finished, it is deleted.
    assert job.state == "cancelled"
    assert [v.name for v in await storage.list_volumes(HOST, pool)] == ["src.qcow2"]
