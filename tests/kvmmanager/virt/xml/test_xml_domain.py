"""Domain, devices and metadata models: reading live XML, editing it, building new XML."""

from __future__ import annotations

import contextlib
import subprocess

import libvirt
import pytest
from lxml import etree

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.devices import (
    KVMM_AGENT_CHANNEL,
    QEMU_GA_CHANNEL,
    Channel,
    Disk,
    Graphics,
    Interface,
    parse_device,
)
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.metadata import NS_URI, ManagerMetadata


def test_reads_rich_domain(rich_domain_xml: str) -> None:
    dom = Domain.from_xml(rich_domain_xml)
    assert (dom.type, dom.name, dom.uuid) == ("kvm", "rich", "0f7c9a0e-4a3b-4c7e-9a61-3b8d2e1f0a11")
    assert dom.memory == 2 * 1024 * 1024  # GiB in the XML, KiB in Python
    assert dom.current_memory == 1536 * 1024
    assert (dom.vcpus, dom.vcpus_current, dom.online_vcpus) == (4, 2, 2)
    os_ = dom.os
    assert (os_.firmware, os_.os_type, os_.arch, os_.machine) == (
        "efi",
        "hvm",
        "x86_64",
        "pc-q35-7.2",
    )
    assert os_.loader == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
    assert (os_.loader_readonly, os_.loader_secure, os_.loader_type) == (True, True, "pflash")
    assert os_.nvram.endswith("rich_VARS.fd") and os_.nvram_template.endswith(".ms.fd")
    assert os_.boot_devices == ["hd", "cdrom"] and os_.is_uefi
    assert (dom.features.acpi, dom.features.apic, dom.features.pae) == (True, True, False)
    assert dom.features.smm is True
    assert (dom.cpu_mode, dom.clock_offset) == ("host-passthrough", "utc")
    assert (dom.on_poweroff, dom.on_reboot, dom.on_crash) == ("destroy", "restart", "destroy")

    devs = dom.devices
    assert devs.emulator == "/usr/bin/qemu-system-x86_64"
    root = devs.disk_by_target("vda")
    assert (root.type, root.source_pool, root.source_volume, root.driver_type) == (
        "volume",
        "default",
        "rich-root.qcow2",
        "qcow2",
    )
    assert (root.driver_cache, root.driver_discard, root.boot_order, root.alias) == (
        "none",
        "unmap",
        1,
        "ua-root",
    )
    cd = devs.cdroms()[0]
    assert cd.readonly and cd.has_media and cd.source_path.endswith("debian.iso")
    assert devs.by_alias("ua-root") == root
    nic = devs.interface_by_mac("52:54:00:AA:BB:CC")
    assert (nic.type, nic.source, nic.model) == ("network", "default", "virtio")
    assert devs.channel(QEMU_GA_CHANNEL).type == "unix"
    assert devs.channel(KVMM_AGENT_CHANNEL) is None
    assert [c.type for c in devs.controllers] == ["usb", "virtio-serial", "pci"]
    assert devs.controllers[0].ports == 15
    assert devs.serials[0].target_model == "isa-serial"
    assert devs.consoles[0].target_type == "serial"
    assert devs.graphics[0].type == "spice" and devs.graphics[0].listen_address is None
    assert (devs.tpms[0].model, devs.tpms[0].backend_version) == ("tpm-crb", "2.0")
    assert devs.videos[0].model_type == "virtio" and devs.videos[0].model_primary
    assert devs.inputs[0].type == "tablet"
    assert devs.memballoon.stats_period == 10
    assert devs.rngs[0].backend_path == "/dev/urandom"
    # <sound> and <redirdev> are not modelled: all() skips them, the XML keeps them.
    assert [d.TAG for d in devs.all()].count("disk") == 2
    assert "sound" not in [d.TAG for d in devs.all()]


def test_edit_keeps_everything_else(rich_domain_xml: str, canonical) -> None:
    dom = Domain.from_xml(rich_domain_xml)
    dom.title = "Rich VM"
    dom.vcpus_current = 3
    dom.memory = 4 * 1024 * 1024
    dom.devices.cdroms()[0].clear_source()
    dom.devices.add(Channel(type="unix", target_type="virtio", target_name=KVMM_AGENT_CHANNEL))
    dom.manager_metadata.tags = ["db", "prod"]
    edited = dom.to_xml()

    # Undo exactly those changes on the original by hand and compare whole documents.
    expected = etree.fromstring(rich_domain_xml.encode())
    title = etree.Element("title")
    title.text = "Rich VM"
    expected.find("uuid").addnext(title)
    expected.find("vcpu").set("current", "3")
    mem = expected.find("memory")
    mem.set("unit", "KiB")
    mem.text = str(4 * 1024 * 1024)
    cdrom = expected.find("devices/disk[@device='cdrom']")
    cdrom.remove(cdrom.find("source"))
    chan = etree.SubElement(etree.Element("x"), "channel", type="unix")
    etree.SubElement(chan, "target", type="virtio", name=KVMM_AGENT_CHANNEL)
    channels = expected.findall("devices/channel")
    channels[-1].addnext(chan)
    manager = etree.SubElement(
        expected.find("metadata"), f"{{{NS_URI}}}manager", nsmap={"kvmm": NS_URI}
    )
    tags = etree.SubElement(manager, f"{{{NS_URI}}}tags")
    for t in ("db", "prod"):
        etree.SubElement(tags, f"{{{NS_URI}}}tag").text = t
    assert canonical(edited) == canonical(etree.tostring(expected).decode())


def test_untouched_parse_keeps_layout(rich_domain_xml: str, canonical) -> None:
    """Parsing and writing back changes nothing but lxml's quoting (and, for the namespace
    declaration, attribute position): indentation and element order stay."""
    out = Domain.from_xml(rich_domain_xml).to_xml()
    assert out.splitlines()[1:] == [
        line.replace("'", '"') for line in rich_domain_xml.strip().splitlines()[1:]
    ]
    assert canonical(out) == canonical(rich_domain_xml)


def test_test_driver_domain_round_trip() -> None:
    conn = libvirt.open("test:///default")
    try:
        xml = conn.lookupByName("test").XMLDesc(0)
    finally:
        conn.close()
    dom = Domain.from_xml(xml)
    assert (dom.id, dom.name, dom.vcpus, dom.memory) == (1, "test", 2, 8388608)
    assert dom.devices.interfaces[0].mac_address == "aa:bb:cc:dd:ee:ff"
    assert dom.to_xml() == xml.strip().replace("'", '"')  # byte for byte but for quotes
    dom.description = "edited"
    assert Domain.from_xml(dom.to_xml()).description == "edited"


def _node_document(dom: Domain) -> bytes:
    """A test-driver node file (`<node>` wrapper document) holding a copy of `dom`."""
    root = etree.Element("node")
    root.append(etree.fromstring(dom.to_xml().encode()))
    return etree.tostring(root)


def test_virsh_second_client_sees_model_edit(tmp_path) -> None:
    """A domain defined from model XML in a test-driver file reads back identically."""
    dom = Domain(type="test", name="kvmm-t-xml-virsh", memory=65536, vcpus=1)
    dom.os.os_type = "hvm"
    dom.devices.add(Disk(type="file", device="disk", source_file="/x.img", target_dev="vda"))
    node = tmp_path / "node.xml"
    node.write_bytes(_node_document(dom))
    out = subprocess.run(
        ["virsh", "-c", f"test://{node}", "dumpxml", "kvmm-t-xml-virsh"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    back = Domain.from_xml(out)
    assert back.devices.disk_by_target("vda").source_file == "/x.img"
    assert back.memory == 65536


def test_metadata_keeps_foreign_apps(rich_domain_xml: str) -> None:
    dom = Domain.from_xml(rich_domain_xml)
    meta = dom.manager_metadata
    assert meta.tags == [] and meta.owner is None and not meta.exists
    meta.owner = "alice"
    meta.created_by = "kvm-manager"
    meta.agent_quiesce = "never"
    meta.agent_enabled = True
    xml = dom.to_xml()
    assert 'libosinfo:os id="http://debian.org/debian/12"' in xml
    assert '<app:flag value="1"/>' in xml
    again = Domain.from_xml(xml).manager_metadata
    assert (again.owner, again.created_by, again.agent_quiesce, again.agent_enabled) == (
        "alice",
        "kvm-manager",
        "never",
        True,
    )
    with pytest.raises(InvalidInput) as err:
        again.agent_quiesce = "sometimes"
    assert err.value.field == "agent_quiesce"


def test_metadata_api_form_round_trip(tmp_path) -> None:
    """The element form libvirt's metadata API uses, against a private test driver."""
    dom = Domain(type="test", name="kvmm-t-xml-meta", memory=65536, vcpus=1)
    dom.os.os_type = "hvm"
    node = tmp_path / "node.xml"
    node.write_bytes(_node_document(dom))
    conn = libvirt.open(f"test://{node}")
    try:
        vm = conn.lookupByName("kvmm-t-xml-meta")
        meta = ManagerMetadata(owner="bob")
        meta.tags = ["x", "y"]
        vm.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            meta.to_metadata_api(),
            "kvmm",
            NS_URI,
            libvirt.VIR_DOMAIN_AFFECT_CURRENT,
        )
        back = ManagerMetadata.from_metadata_api(
            vm.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS_URI)
        )
        assert (back.owner, back.tags) == ("bob", ["x", "y"])
        via_domain = Domain.from_xml(vm.XMLDesc(0)).manager_metadata
        assert (via_domain.owner, via_domain.tags) == ("bob", ["x", "y"])
    finally:
        conn.close()


def test_graphics_listen_kept_in_step() -> None:
    live = Graphics.from_xml(
        "<graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>"
        "<listen type='address' address='127.0.0.1'/></graphics>"
    )
    assert live.listen_address == "127.0.0.1" and live.port == 5900 and live.autoport
    live.listen_address = "0.0.0.0"
    assert live.to_xml().count("0.0.0.0") == 2
    live.listen_address = None
    assert live.to_xml(pretty=False) == '<graphics type="vnc" port="5900" autoport="yes"/>'


def test_vnc_password_limit() -> None:
    gfx = Graphics(type="vnc", passwd="12345678")
    with pytest.raises(InvalidInput) as err:
        gfx.passwd = "123456789"
    assert err.value.field == "passwd" and "8" in err.value.message
    Graphics(type="spice", passwd="a-longer-spice-password")


def test_channel_state_is_read_only() -> None:
    chan = Channel.from_xml(
        "<channel type='unix'><source mode='bind' path='/run/x.sock'/>"
        "<target type='virtio' name='org.kvmmanager.agent.0' state='connected'/></channel>"
    )
    assert chan.connected is True and chan.source_path == "/run/x.sock"
    with pytest.raises(InvalidInput):
        chan.target_state = "disconnected"
    assert Channel(type="unix").connected is None


def test_interface_mac_validation() -> None:
    nic = Interface(type="bridge", source_bridge="br0", mac_address="52:54:00:AB:CD:EF")
    assert nic.mac_address == "52:54:00:ab:cd:ef" and nic.source == "br0"
    with pytest.raises(InvalidInput) as err:
        nic.mac_address = "52:54:00"
    assert err.value.field == "mac_address"


def test_parse_device_and_remove() -> None:
    disk = parse_device("<disk type='block' device='disk'><source dev='/dev/sdb'/></disk>")
    assert isinstance(disk, Disk) and disk.source_path == "/dev/sdb"
    with pytest.raises(InvalidInput):
        parse_device("<shmem/>")  # a device no model covers
    dom = Domain(type="qemu", name="a")
    dom.devices.add(disk)
    assert dom.devices.disks == [disk]
    dom.devices.remove(disk)
    assert dom.devices.disks == []


def test_new_domain_device_order() -> None:
    dom = Domain(type="qemu", name="order")
    dom.devices.add(Graphics(type="vnc"))
    dom.devices.add(Channel(type="unix", target_type="virtio", target_name=QEMU_GA_CHANNEL))
    dom.devices.add(Disk(type="file", device="disk", source_file="/a", target_dev="vda"))
    dom.devices.emulator = "/usr/bin/qemu-system-x86_64"
    tags = [el.tag for el in etree.fromstring(dom.to_xml().encode()).find("devices")]
    assert tags == ["emulator", "disk", "channel", "graphics"]


@pytest.mark.libvirtd
def test_real_libvirtd_edit_round_trip(canonical) -> None:
    """Edit libvirt's own XML (full of elements libvirt added) through the models, redefine,
    then undo the edits the same way: libvirt ends up with the very same document."""
    name = "kvmm-t-xml-roundtrip"
    dom = Domain(type="qemu", name=name, memory=131072, current_memory=131072, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "q35"
    dom.devices.add(
        Disk(type="file", device="cdrom", target_dev="sda", target_bus="sata", readonly=True)
    )
    dom.devices.add(Channel(type="unix", target_type="virtio", target_name=KVMM_AGENT_CHANNEL))
    dom.devices.add(Graphics(type="vnc", autoport=True, listen_address="127.0.0.1"))
    conn = libvirt.open("qemu:///system")
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    try:
        vm = conn.defineXML(dom.to_xml())
        # libvirt sorts the controllers it added itself on the next define: settle that first
        # with an untouched parse-and-redefine (which must itself change nothing else).
        first = vm.XMLDesc(flags)
        vm = conn.defineXML(Domain.from_xml(first).to_xml())
        before = vm.XMLDesc(flags)
        assert len(before) == len(first)

        edited = Domain.from_xml(before)
        edited.title = "Round trip"
        edited.vcpus = 2
        edited.manager_metadata.tags = ["a", "b"]
        edited.devices.cdroms()[0].source_file = "/var/lib/libvirt/images/kvmm-t-xml.iso"
        edited.devices.graphics[0].passwd = "pw123456"
        vm = conn.defineXML(edited.to_xml())
        after = Domain.from_xml(vm.XMLDesc(flags))
        assert (after.title, after.vcpus, after.manager_metadata.tags) == (
            "Round trip",
            2,
            ["a", "b"],
        )
        assert after.devices.cdroms()[0].source_file.endswith("kvmm-t-xml.iso")
        assert after.devices.graphics[0].passwd == "pw123456"

        after.title = None
        after.vcpus = 1
        after.manager_metadata = None
        after.devices.cdroms()[0].clear_source()
        after.devices.graphics[0].passwd = None
        vm = conn.defineXML(after.to_xml())
        assert canonical(vm.XMLDesc(flags)) == canonical(before)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).undefine()
        conn.close()
