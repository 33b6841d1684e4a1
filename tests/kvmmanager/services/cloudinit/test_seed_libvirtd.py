"""Cloud-init provisioning against the real libvirtd (qemu:///system): a VM defined from
an image volume with a linked disk at the requested size and the seed ISO (uploaded
through libvirt) in its CD-ROM drive; refusals and failures leave no volume behind."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pycdlib
import pytest
import yaml

from kvmmanager.core.errors import Conflict, InvalidInput
from kvmmanager.services.cloudinit import seed as ci
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.volume import Volume

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
PREFIX = "kvmm-t-clone-ci-"


def ssh_key() -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", os.urandom(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} alice@laptop"


def spec() -> ci.CloudInitSpec:
    user = ci.CloudUser(name="alice", ssh_authorized_keys=[ssh_key()])
    return ci.CloudInitSpec(hostname="web1", users=[user], install_agent=False)


@pytest.fixture
def settings(settings):
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def lab() -> Iterator[dict[str, Any]]:
    conn = libvirt.open(URI)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/var/tmp"))
    path.chmod(0o755)
    name = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    pool = conn.storagePoolCreateXML(Pool(type="dir", name=name, target_path=str(path)).to_xml(), 0)
    pool.createXML(
        Volume(name="image.qcow2", capacity=2 * 1024**3, target_format="qcow2").to_xml(), 0
    )
    try:
        yield {"conn": conn, "pool": pool, "name": name}
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(name):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        pool.refresh(0)
        for v in pool.listAllVolumes():
            v.delete(0)
        pool.destroy()
        shutil.rmtree(path, ignore_errors=True)
        conn.close()


def volumes(lab: dict[str, Any]) -> list[str]:
    lab["pool"].refresh(0)
    return sorted(lab["pool"].listVolumes())


def read_iso_file(path: str, name: str) -> bytes:
    import io

    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
        return buf.getvalue()
    finally:
        iso.close()


async def test_provision_defines_the_vm_with_disk_and_seed(
    manager: Any, lab: dict[str, Any]
) -> None:
    await manager.registry.get("local").wait_connected(60)
    name = f"{lab['name']}-vm"
    r = await manager.cloudinit.provision(
        "local", name=name, pool=lab["name"], image="image.qcow2", size_gib=4, spec=spec(),
        start=False,
    )  # fmt: skip
    assert r["disk"] == f"{name}-disk0.qcow2" and r["seed"] == f"{name}-seed.iso"
    disk = Volume.from_xml(lab["pool"].storageVolLookupByName(r["disk"]).XMLDesc(0))
    assert disk.capacity == 4 * 1024**3 and disk.backing_path.endswith("image.qcow2")
    seed = lab["pool"].storageVolLookupByName(r["seed"]).path()
    meta = read_iso_file(seed, "meta-data").decode()
    assert r["instance_id"] in meta and "web1" in meta
    assert b"alice" in read_iso_file(seed, "user-data")
    xml = Domain.from_xml(lab["conn"].lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert xml.devices.disks[0].source_file == disk.target_path
    assert [c.source_file for c in xml.devices.cdroms()] == [seed]

    with pytest.raises(Conflict) as e:
        await manager.cloudinit.provision(
            "local", name=name, pool=lab["name"], image="image.qcow2", size_gib=4, spec=spec()
        )
    assert e.value.field == "name"


async def test_refusals_and_failures_leave_nothing(manager: Any, lab: dict[str, Any]) -> None:
    await manager.registry.get("local").wait_connected(60)
    before = volumes(lab)
    with pytest.raises(InvalidInput, match="smaller than the image") as e:
        await manager.cloudinit.provision(
            "local", name=f"{lab['name']}-a", pool=lab["name"], image="image.qcow2",
            size_gib=1, spec=spec(),
        )  # fmt: skip
    assert e.value.field == "size_gib"
    # A network that does not exist fails the VM definition: disk and seed go again.
    with pytest.raises(Exception, match="kvmm-t-no-such-net"):
        await manager.cloudinit.provision(
            "local", name=f"{lab['name']}-b", pool=lab["name"], image="image.qcow2",
            size_gib=4, spec=spec(), network="kvmm-t-no-such-net",
        )  # fmt: skip
    assert volumes(lab) == before
    assert not [d for d in lab["conn"].listAllDomains() if d.name().startswith(lab["name"])]


async def test_clone_gets_a_new_seed_and_identity(manager: Any, lab: dict[str, Any]) -> None:
    """A clone of a cloud-init VM: its own seed with a new instance-id, its name as the
    hostname, a machine-id reset, the same users; the source's seed is untouched."""
    await manager.registry.get("local").wait_connected(60)
    name, new = f"{lab['name']}-src", f"{lab['name']}-cl_1"
    r = await manager.cloudinit.provision(
        "local", name=name, pool=lab["name"], image="image.qcow2", size_gib=2, spec=spec(),
        start=False,
    )  # fmt: skip
    source_seed = lab["pool"].storageVolLookupByName(r["seed"]).path()
    source_meta = read_iso_file(source_seed, "meta-data")
    res = await manager.clones.clone("local", name, new, mode="full")
    assert res["identity"] == "cloud-init"
    seed = lab["pool"].storageVolLookupByName(f"{new}-seed.iso").path()
    meta = read_iso_file(seed, "meta-data").decode()
    assert r["instance_id"] not in meta and f"{lab['name']}-cl-1" in meta  # a DNS label
    ud = yaml.safe_load(read_iso_file(seed, "user-data"))
    assert ud["runcmd"][0] == ["sh", "-c", ci.RESET_MACHINE_ID]
    assert ud["users"][1]["name"] == "alice"
    assert read_iso_file(source_seed, "meta-data") == source_meta
    xml = Domain.from_xml(lab["conn"].lookupByName(new).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert [c.source_file for c in xml.devices.cdroms()] == [seed]
