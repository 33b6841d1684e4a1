"""Migration pre-flight on two test-driver hosts: every reason a migration cannot work is
refused before anything moves, naming the field (the test driver cannot migrate, so the
move itself is not exercised here)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from kvmmanager.core.errors import Conflict, HostUnavailable, InvalidInput, NotFound, Unsupported
from kvmmanager.services.storage.specs import PoolSpec
from kvmmanager.services.storage.xml import build_pool_xml, build_volume_xml
from kvmmanager.virt.xml.devices import Disk, Interface
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.network import IP, Network

PREFIX = "kvmm-t-clone-mig-"


def net_xml(name: str, bridge: str, n: int) -> str:
    """A NAT network (libvirt's default forward mode) on 192.168.<n>.0/24."""
    net = Network(name=name, bridge_name=bridge, forward_mode="nat")
    net.add(IP(address=f"192.168.{n}.1", netmask="255.255.255.0"))
    return net.to_xml()


def dom_xml(name: str, disk: str | None = None) -> str:
    """A 64 MiB test-driver VM; with `disk`, a virtio disk of that file and a NIC on the
    network 'default'."""
    dom = Domain(type="test", name=name, memory=65536)
    dom.os.os_type = "hvm"
    if disk is not None:
        dom.devices.add(
            Disk(
                type="file", device="disk", source_file=disk, target_dev="vda", target_bus="virtio"
            )
        )
        dom.devices.add(Interface(type="network", source_network="default"))
    return dom.to_xml()


def node(tmp_path: Path, label: str, *parts: str) -> str:
    """A test-driver host of its own: a `<node>` document holding `parts` (XML of
    networks, pools, domains...)."""
    root = etree.Element("node")
    root.extend(etree.fromstring(part) for part in parts)
    f = tmp_path / f"{label}.xml"
    etree.ElementTree(root).write(str(f))
    return f"test://{f}"


@pytest.fixture
async def vm(manager: Any) -> Any:
    hc = manager.registry.get("local")
    await hc.wait_connected(30)
    name = f"{PREFIX}{uuid.uuid4().hex[:6]}"

    def make() -> str:
        conn = hc.conn
        pool = conn.storagePoolLookupByName("default-pool")
        vol = pool.createXML(build_volume_xml(f"{name}.qcow2", 1048576, "raw"), 0)
        conn.defineXML(dom_xml(name, disk=vol.path()))
        return vol.path()

    path = await hc.run(make)
    try:
        yield name, path
    finally:

        def cleanup() -> None:
            d = hc.conn.lookupByName(name)
            if d.isActive():
                d.destroy()
            d.undefine()
            hc.conn.storageVolLookupByPath(path).delete(0)

        await hc.run(cleanup)


async def _add(manager: Any, name: str, uri: str) -> None:
    await manager.registry.add(name, uri)
    await manager.registry.get(name).wait_connected(30)


async def test_preflight_refusals(manager: Any, vm: Any, tmp_path: Path) -> None:
    name, disk = vm
    mig = manager.migration
    pool_dir = str(Path(disk).parent)
    await _add(manager, "same", "test:///default")
    await _add(manager, "nonet", node(tmp_path, "nonet"))
    await _add(manager, "nopool", node(tmp_path, "nopool", net_xml("default", "vb1", 201)))
    await _add(
        manager,
        "ok",
        node(
            tmp_path,
            "ok",
            net_xml("default", "vb2", 202),
            build_pool_xml(PoolSpec(name="images", target=pool_dir)),
        ),
    )
    await _add(
        manager,
        "taken",
        node(tmp_path, "taken", net_xml("default", "vb3", 203), dom_xml(name)),
    )

    with pytest.raises(NotFound) as e:
        await mig.check("local", name, "nowhere")
    assert e.value.field == "host"
    with pytest.raises(InvalidInput, match="same machine") as e:
        await mig.check("local", name, "same")
    assert e.value.field == "target"
    with pytest.raises(Conflict, match="not running") as e:
        await mig.check("local", name, "ok")
    assert e.value.field == "live"
    with pytest.raises(Unsupported, match="definition only") as e:
        await mig.check("local", name, "ok", live=False, copy_storage=True)
    await manager.vms.action("local", name, "start")
    with pytest.raises(Conflict, match="running: migrate it live"):
        await mig.check("local", name, "ok", live=False)
    with pytest.raises(Conflict, match="network 'default' does not exist") as e:
        await mig.check("local", name, "nonet")
    assert e.value.field == "target"
    with pytest.raises(Conflict, match="local to 'local'") as e:
        await mig.check("local", name, "nopool")
    assert e.value.field == "copy_storage"
    with pytest.raises(Conflict, match="no active pool") as e:
        await mig.check("local", name, "nopool", copy_storage=True)
    assert e.value.field == "target"
    with pytest.raises(Conflict, match="already has a vm") as e:
        await mig.check("local", name, "taken", copy_storage=True)
    with pytest.raises(Unsupported, match="post-copy"):
        await mig.check("local", name, "ok", copy_storage=True, post_copy=True)

    plan = await mig.check("local", name, "ok", copy_storage=True, auto_converge=True)
    assert plan["copy_disks"] == [disk] and plan["live"] and plan["to"] == "ok"
    flags = plan["flags"]
    for flag in ("LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE", "NON_SHARED_DISK"):
        assert flags & getattr(libvirt, f"VIR_MIGRATE_{flag}")
    assert flags & libvirt.VIR_MIGRATE_AUTO_CONVERGE
    assert not flags & libvirt.VIR_MIGRATE_POSTCOPY


def test_migration_routes(client: Any, client_as: Any, tmp_path: Path) -> None:
    """The REST routes answer the same pre-flight (409/422 naming the field); viewers
    cannot migrate."""
    import time

    mgr = client.app.state.manager
    deadline = time.monotonic() + 30
    while not mgr.registry.get("local").connected:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    name = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(dom_xml(name)).create()
        r = client.post("/api/hosts", json={"name": "kvmm-t-mig2", "uri": node(tmp_path, "n2")})
        assert r.status_code == 201, r.text
        while mgr.registry.get("kvmm-t-mig2").status != "connected":
            assert time.monotonic() < deadline + 30
            time.sleep(0.05)
        base = f"/api/hosts/local/vms/{name}"
        r = client.post(f"{base}/migration/check", json={"target": "kvmm-t-mig2"})
        assert r.status_code == 200, r.text
        assert r.json()["to"] == "kvmm-t-mig2" and r.json()["from"] == "local"
        r = client.post(f"{base}/migration/check", json={"target": "local"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "target"
        r = client.post(f"{base}/migrate", json={"target": "kvmm-t-mig2", "live": False})
        assert r.status_code == 409 and r.json()["error"]["field"] == "live"
        viewer = client_as("viewer")
        assert viewer.post(f"{base}/migrate", json={"target": "kvmm-t-mig2"}).status_code == 403
    finally:
        d = conn.lookupByName(name)
        d.destroy()
        d.undefine()
        conn.close()


async def test_a_target_host_not_connected_is_refused_at_once_naming_it(manager) -> None:
    """A target that stopped answering (here: its connection stopped) gets the migration
    check refused without waiting for it, saying that nothing was sent."""
    target = await manager.registry.add("kvmm-t-mig-gone", "test:///default")
    await target.wait_connected(30)
    await target.stop()
    with pytest.raises(HostUnavailable) as info:
        await manager.migration.check("local", "test", "kvmm-t-mig-gone")
    msg = info.value.message
    assert "host 'kvmm-t-mig-gone' is disconnected" in msg, msg
    assert "migration check was not sent" in msg, msg
