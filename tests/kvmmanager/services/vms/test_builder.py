"""Spec validation and spec -> domain XML, validated by libvirt's own schema."""

from __future__ import annotations

import itertools

import pytest

from kvmmanager.core.errors import InvalidInput, Unsupported
from kvmmanager.services.vms.builder import BuildInputs, DiskPlan, build_domain, disk_target
from kvmmanager.services.vms.spec import (
    AGENT_CHANNEL,
    QGA_CHANNEL,
    DiskSpec,
    HostFacts,
    InstallSource,
    NicSpec,
    VmSpec,
    validate_spec,
)
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml

FACTS = HostFacts(
    max_vcpus=4,
    memory_mib=8192,
    pools={"default", "isos"},
    networks={"default"},
    uefi=True,
    secure_boot=True,
    tpm=True,
    volumes={"default": {"base.qcow2"}, "isos": {"debian.iso"}},
)

INSTALLS = [
    InstallSource(kind="blank"),
    InstallSource(kind="iso", pool="isos", volume="debian.iso"),
    InstallSource(kind="import", pool="default", volume="base.qcow2"),
    InstallSource(kind="kernel", kernel="/boot/vmlinuz", initrd="/boot/initrd", cmdline="quiet"),
]
FIRMWARE = [("bios", False, False), ("uefi", False, False), ("uefi", True, True)]
NICS = [[], [NicSpec(network="default")], [NicSpec(bridge="br0", mac="52:54:00:aa:bb:cc")]]


def _spec(**kw: object) -> VmSpec:
    return VmSpec(**{"name": "kvmm-t-vm-a", **kw})


@pytest.mark.parametrize(
    ("install", "firmware", "nics", "domain_type"),
    list(itertools.product(INSTALLS, FIRMWARE, NICS, ["kvm", "qemu"])),
)
def test_matrix_builds_schema_valid_xml(install, firmware, nics, domain_type):
    fw, secure, tpm = firmware
    spec = _spec(
        install=install, firmware=fw, secure_boot=secure, tpm=tpm, nics=nics,
        vcpus=2, memory_mib=256, tags=["web", "prod"], description="a test vm", owner="alice",
        disks=[DiskSpec(pool="default", size_gib=1), DiskSpec(pool="default", volume="base.qcow2")],
    )  # fmt: skip
    validate_spec(spec, FACTS)
    disks = [DiskPlan("/pool/a.qcow2", "qcow2", "virtio"), DiskPlan("/pool/b.raw", "raw", "sata")]
    cdrom = "/isos/debian.iso" if install.kind == "iso" else None
    xml = build_domain(spec, BuildInputs(domain_type, "x86_64", disks, cdrom)).to_xml()
    validate_xml(xml, "domain")

    dom = Domain.from_xml(xml)
    assert dom.type == domain_type
    assert dom.memory == 256 * 1024 and dom.vcpus == 2
    names = sorted(c.target_name for c in dom.devices.channels)
    assert names == sorted([AGENT_CHANNEL, QGA_CHANNEL])
    cdroms = dom.devices.cdroms()
    assert len(cdroms) == 1 and cdroms[0].source_file == cdrom
    assert [d.target_dev for d in dom.devices.disks if d.device == "disk"] == ["vda", "sda"]
    gfx = dom.devices.graphics[0]
    # A unix socket in the domain's own directory, never a TCP port.
    assert gfx.type == "vnc" and gfx.listen_socket and gfx.port is None and len(gfx.passwd) == 8
    assert dom.devices.serials and dom.devices.consoles and dom.devices.rngs
    assert dom.devices.memballoon.model == "virtio"
    assert [c.type for c in dom.devices.controllers] == ["virtio-serial"]
    assert dom.manager_metadata.tags == ["web", "prod"]
    assert dom.manager_metadata.owner == "alice"
    assert (dom.os.firmware == "efi") == (fw == "uefi")
    assert bool(dom.devices.tpms) == tpm
    # Per-device boot order only: libvirt refuses it mixed with <os><boot dev>.
    assert dom.os.boot_devices == []
    booted = {d.target_dev: d.boot_order for d in dom.devices.disks}
    cd = cdroms[0].target_dev
    if install.kind == "kernel":
        assert dom.os.kernel == "/boot/vmlinuz" and dom.os.cmdline == "quiet"
        assert set(booted.values()) == {None}
    elif install.kind == "iso":
        assert booted == {cd: 1, "vda": 2, "sda": 3}
    else:
        assert booted == {"vda": 1, "sda": 2, cd: 3}
    assert len(dom.devices.interfaces) == len(nics)


def test_pxe_boots_the_network_first_and_needs_a_nic():
    with pytest.raises(InvalidInput, match="PXE boots from the network") as e:
        validate_spec(_spec(install=InstallSource(kind="pxe")), FACTS)
    assert e.value.field == "nics"
    spec = _spec(install=InstallSource(kind="pxe"), nics=[NicSpec(network="default")])
    validate_spec(spec, FACTS)
    disks = [DiskPlan("/pool/a.qcow2", "qcow2", "virtio")]
    xml = build_domain(spec, BuildInputs("qemu", "x86_64", disks)).to_xml()
    validate_xml(xml, "domain")
    dom = Domain.from_xml(xml)
    assert dom.os.boot_devices == []
    assert [i.boot_order for i in dom.devices.interfaces] == [1]
    assert {d.target_dev: d.boot_order for d in dom.devices.disks} == {"vda": 2, "hdc": None}


def test_iso_install_boots_the_install_cd_by_device_not_the_first_cdrom():
    """Issue 15: with <boot dev='cdrom'/> SeaBIOS booted the agent ISO's drive (hda, added
    beside the install CD on hdc) and never the installer. The install CD now carries
    boot order 1 itself, so a drive added later (no order) is never tried first."""
    spec = _spec(install=InstallSource(kind="iso", pool="isos", volume="debian.iso"))
    disks = [DiskPlan("/pool/a.qcow2", "qcow2", "virtio")]
    xml = build_domain(spec, BuildInputs("qemu", "x86_64", disks, "/isos/debian.iso")).to_xml()
    validate_xml(xml, "domain")
    dom = Domain.from_xml(xml)
    assert "<boot dev" not in xml
    (cd,) = dom.devices.cdroms()
    assert (cd.source_file, cd.boot_order) == ("/isos/debian.iso", 1)
    assert dom.devices.disk_by_target("vda").boot_order == 2


def test_each_vm_gets_its_own_vnc_password():
    spec = _spec()
    a = build_domain(spec, BuildInputs("qemu", "x86_64", []))
    b = build_domain(spec, BuildInputs("qemu", "x86_64", []))
    assert a.devices.graphics[0].passwd != b.devices.graphics[0].passwd


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "required"),
        ("a" * 65, "longer"),
        ("a/b", "'/'"),
        ("a\nb", "control"),
        ("a\x00b", "control"),
        ("-lead", "start with"),
        ("sp ace", "letters"),
    ],
)
def test_bad_names_name_the_field(name, why):
    with pytest.raises(InvalidInput) as exc:
        validate_spec(_spec(name=name), FACTS)
    assert exc.value.field == "name"
    assert why in exc.value.message


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": 5}, "vcpus"),
        ({"memory_mib": 15}, "memory_mib"),
        ({"memory_mib": 8193}, "memory_mib"),
        ({"memory_mib": -1}, "memory_mib"),
        ({"disks": [DiskSpec(pool="nope", size_gib=1)]}, "disks[0].pool"),
        ({"disks": [DiskSpec(pool="default", size_gib=-1)]}, "disks[0].size_gib"),
        ({"disks": [DiskSpec(pool="default", size_gib=0)]}, "disks[0].size_gib"),
        ({"disks": [DiskSpec(pool="default", size_gib=1e9)]}, "disks[0].size_gib"),
        ({"disks": [DiskSpec(pool="default")]}, "disks[0].size_gib"),
        ({"disks": [DiskSpec(pool="default", volume="missing")]}, "disks[0].volume"),
        ({"disks": [DiskSpec(pool="default", size_gib=1, name="base.qcow2")]}, "disks[0].name"),
        (
            {
                "disks": [
                    DiskSpec(pool="default", size_gib=1),
                    DiskSpec(pool="default", size_gib=1, name="kvmm-t-vm-a.qcow2"),
                ]
            },
            "disks[1].name",
        ),
        ({"nics": [NicSpec(network="nope")]}, "nics[0].network"),
        ({"nics": [NicSpec()]}, "nics[0].network"),
        ({"nics": [NicSpec(network="default", bridge="br0")]}, "nics[0].network"),
        ({"nics": [NicSpec(bridge="br/0")]}, "nics[0].bridge"),
        ({"nics": [NicSpec(network="default", mac="zz")]}, "nics[0].mac"),
        ({"nics": [NicSpec(network="default", mac="01:00:00:00:00:01")]}, "nics[0].mac"),
        ({"install": InstallSource(kind="iso", pool="isos")}, "install.volume"),
        ({"install": InstallSource(kind="iso", pool="nope", volume="x")}, "install.pool"),
        ({"install": InstallSource(kind="import", pool="isos", volume="x")}, "install.volume"),
        ({"install": InstallSource(kind="kernel")}, "install.kernel"),
        ({"install": InstallSource(kind="kernel", kernel="rel/k")}, "install.kernel"),
        (
            {"install": InstallSource(kind="kernel", kernel="/k", cmdline="a\x1bb")},
            "install.cmdline",
        ),
        ({"tags": ["ok", "not ok"]}, "tags[1]"),
        ({"description": "x" * 5000}, "description"),
        ({"owner": "a/b"}, "owner"),
        ({"secure_boot": True}, "secure_boot"),
    ],
)
def test_bad_input_names_the_field(kw, field):
    with pytest.raises(InvalidInput) as exc:
        validate_spec(_spec(**kw), FACTS)
    assert exc.value.field == field


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"firmware": "uefi"}, "firmware"),
        ({"tpm": True}, "tpm"),
    ],
)
def test_unoffered_features_are_unsupported(kw, field):
    bare = HostFacts(max_vcpus=4, memory_mib=8192, pools=set(), networks=set())
    with pytest.raises(Unsupported) as exc:
        validate_spec(_spec(**kw), bare)
    assert exc.value.field == field


def test_secure_boot_needs_offered_secure_firmware():
    no_sb = HostFacts(max_vcpus=4, memory_mib=8192, pools=set(), networks=set(), uefi=True)
    with pytest.raises(Unsupported) as exc:
        validate_spec(_spec(firmware="uefi", secure_boot=True), no_sb)
    assert exc.value.field == "secure_boot"


def test_disk_targets():
    assert [disk_target("virtio", i) for i in (0, 1, 25, 26, 27)] == [
        "vda", "vdb", "vdz", "vdaa", "vdab",
    ]  # fmt: skip
    assert disk_target("ide", 2) == "hdc"
    assert disk_target("sata", 0) == "sda"
