"""Every XML the models can produce validates against libvirt's schemas (virt-xml-validate).

The matrix below builds documents through the model API only. A coverage test then proves
that every settable property of every model class was set in at least one document, so a
property added later without a case here fails the suite.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmmanager.virt.xml import devices as devices_pkg
from kvmmanager.virt.xml import domain as domain_mod
from kvmmanager.virt.xml import metadata as metadata_mod
from kvmmanager.virt.xml import network as network_mod
from kvmmanager.virt.xml import pool as pool_mod
from kvmmanager.virt.xml import volume as volume_mod
from kvmmanager.virt.xml.base import (
    XMLChild,
    XMLChildList,
    XMLObject,
    XMLProperty,
    XMLValueList,
)
from kvmmanager.virt.xml.capabilities import DomainCapabilities
from kvmmanager.virt.xml.devices import (
    KVMM_AGENT_CHANNEL,
    QEMU_GA_CHANNEL,
    Channel,
    Console,
    Controller,
    Disk,
    Graphics,
    Hostdev,
    Input,
    Interface,
    MemBalloon,
    Redirdev,
    Rng,
    Serial,
    Tpm,
    Video,
    chardev,
    disk,
    graphics,
    interface,
    misc,
)
from kvmmanager.virt.xml.devices.interface import PortForward, PortRange
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.network import IP, DhcpHost, DhcpRange, Network
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.validate import (
    SchemaValidationError,
    validate_xml,
    validator_available,
)
from kvmmanager.virt.xml.volume import Volume


def test_validator_is_installed() -> None:
    """Never skip schema validation silently: a machine without it fails here, by name."""
    assert validator_available(), "install libvirt-clients and libxml2-utils (xmllint)"


GiB = 1024**3


# ----------------------------------------------------------------------------- domains


def _base_domain(name: str, *, dom_type: str = "kvm") -> Domain:
    dom = Domain(type=dom_type, name=f"kvmm-t-xml-{name}")
    dom.memory = dom.current_memory = 1024 * 1024
    dom.vcpus = 2
    dom.os.os_type = "hvm"
    dom.os.arch = "x86_64"
    dom.os.machine = "q35"
    dom.features.acpi = dom.features.apic = True
    dom.clock_offset = "utc"
    dom.on_poweroff, dom.on_reboot, dom.on_crash = "destroy", "restart", "destroy"
    dom.devices.emulator = "/usr/bin/qemu-system-x86_64"
    return dom


def _agent_channels(dom: Domain) -> None:
    dom.devices.add(Controller(type="virtio-serial", index=0, ports=16))
    dom.devices.add(Channel(type="unix", target_type="virtio", target_name=KVMM_AGENT_CHANNEL))
    dom.devices.add(
        Channel(
            type="unix",
            source_mode="bind",
            source_path="/var/lib/libvirt/qemu/channel/target/qga.sock",
            target_type="virtio",
            target_name=QEMU_GA_CHANNEL,
            alias="ua-qga",
        )
    )


def bios_domain() -> Domain:
    """BIOS VM with every disk kind, NIC kind, console, VNC with password."""
    dom = _base_domain("bios")
    dom.uuid = "4b7d2f0a-0c1e-4b9e-8a53-2c3d4e5f6a7b"
    dom.title = "A BIOS machine"
    dom.description = "built by the schema matrix"
    meta = dom.manager_metadata
    meta.tags = ["web", "prod"]
    meta.owner = "alice"
    meta.created_by = "kvm-manager"
    meta.agent_enabled = True
    meta.agent_quiesce = "auto"
    dom.vcpus, dom.vcpus_current = 4, 2
    dom.os.machine = "pc"
    dom.os.boot_devices = ["cdrom", "hd", "network"]
    dom.os.bootmenu = True
    dom.features.pae = True
    dom.features.vmport = False
    dom.cpu_mode = "host-passthrough"
    devs = dom.devices
    devs.add(
        Disk(
            type="file",
            device="disk",
            driver_name="qemu",
            driver_type="qcow2",
            driver_cache="none",
            driver_discard="unmap",
            source_file="/var/lib/libvirt/images/bios.qcow2",
            target_dev="vda",
            target_bus="virtio",
            boot_order=None,
            serial="ROOT-0001",
            alias="ua-root",
        )
    )
    devs.add(
        Disk(
            type="block",
            device="disk",
            driver_name="qemu",
            driver_type="raw",
            source_dev="/dev/vg0/data",
            target_dev="vdb",
            target_bus="virtio",
            shareable=True,
        )
    )
    devs.add(
        Disk(
            type="volume",
            device="disk",
            driver_name="qemu",
            driver_type="qcow2",
            source_pool="default",
            source_volume="bios-extra.qcow2",
            target_dev="vdc",
            target_bus="virtio",
        )
    )
    devs.add(
        Disk(
            type="network",
            device="disk",
            driver_name="qemu",
            driver_type="raw",
            source_protocol="nbd",
            source_name="export1",
            source_host_name="nbd.example.org",
            source_host_port=10809,
            target_dev="vdd",
            target_bus="virtio",
        )
    )
    empty = Disk(type="file", device="cdrom", target_dev="sda", target_bus="sata", readonly=True)
    devs.add(empty)
    devs.add(
        Disk(
            type="file",
            device="cdrom",
            driver_name="qemu",
            driver_type="raw",
            source_file="/var/lib/libvirt/images/debian.iso",
            target_dev="sdb",
            target_bus="sata",
            readonly=True,
        )
    )
    devs.add(Controller(type="usb", index=0, model="qemu-xhci", alias="ua-usb"))
    devs.add(
        Interface(
            type="network",
            source_network="default",
            mac_address="52:54:00:00:00:01",
            model="virtio",
            link_state="up",
            alias="ua-net0",
        )
    )
    devs.add(Interface(type="bridge", source_bridge="br0", model="virtio", target_dev="vnet7"))
    devs.add(Interface(type="direct", source_dev="eth0", source_mode="bridge", model="e1000e"))
    devs.add(Serial(type="pty", target_type="isa-serial", target_port=0, target_model="isa-serial"))
    devs.add(Console(type="pty", target_type="serial", target_port=0))
    devs.add(
        Serial(
            type="unix",
            source_mode="bind",
            source_path="/run/kvmm-t-xml-serial1.sock",
            target_type="isa-serial",
            target_port=1,
            alias="ua-serial1",
        )
    )
    devs.add(
        Console(
            type="unix",
            source_mode="bind",
            source_path="/run/kvmm-t-xml-console1.sock",
            target_type="virtio",
            target_port=1,
            alias="ua-console1",
        )
    )
    _agent_channels(dom)
    devs.add(Input(type="tablet", bus="usb", alias="ua-tablet"))
    devs.add(
        Graphics(
            type="vnc",
            port=-1,
            autoport=True,
            websocket=-1,
            listen_address="127.0.0.1",
            passwd="s3cr3t-p",
            keymap="en-us",
        )
    )
    devs.add(
        Video(
            model_type="virtio", model_heads=1, model_vram=16384, model_primary=True, alias="ua-vid"
        )
    )
    devs.memballoon = MemBalloon(model="virtio", stats_period=10, alias="ua-balloon")
    devs.add(
        Rng(
            model="virtio",
            backend_model="random",
            backend_path="/dev/urandom",
            rate_bytes=1024,
            rate_period=1000,
            alias="ua-rng",
        )
    )
    return dom


def uefi_tpm_domain() -> Domain:
    """UEFI chosen by libvirt (firmware autoselection) with Secure Boot, SMM, TPM 2.0, SPICE
    and per-device boot order (libvirt refuses those together with <os><boot dev=...>)."""
    dom = _base_domain("uefi")
    dom.os.firmware = "efi"
    dom.os.secure_boot = True
    dom.features.smm = True
    dom.cpu_mode = "host-model"
    dom.devices.add(
        Disk(
            type="volume",
            device="disk",
            source_pool="default",
            source_volume="uefi.qcow2",
            target_dev="vda",
            target_bus="virtio",
            boot_order=2,
        )
    )
    dom.devices.add(Interface(type="network", source_network="default", boot_order=1))
    _agent_channels(dom)
    dom.devices.add(
        Tpm(model="tpm-crb", backend_type="emulator", backend_version="2.0", alias="ua-tpm")
    )
    dom.devices.add(Graphics(type="spice", autoport=True, listen_address="127.0.0.1"))
    dom.devices.add(Video(model_type="qxl"))
    dom.devices.add(Redirdev(bus="usb", type="spicevmc", alias="ua-redir0"))
    return dom


def passthrough_domain() -> Domain:
    """Host devices given to the guest: a PCI function (managed) and USB devices by
    vendor/product and by bus/device."""
    dom = _base_domain("passthrough")
    gpu = Hostdev.pci(0, 0x3B, 0, 1)
    gpu.alias = "ua-gpu"
    dom.devices.add(gpu)
    dom.devices.add(Hostdev.usb_by_id("0x0781", "0x5567"))
    dom.devices.add(Hostdev.usb_by_address(1, 4))
    _agent_channels(dom)
    return dom


def passt_domain() -> Domain:
    """A user-mode (passt) NIC with port forwards. Schema only: libvirt 9.0's schema has
    passt, but its parser here refuses `<backend type='passt'>` (see docs/operations.md)."""
    dom = _base_domain("passt")
    nic = Interface(type="user", backend_type="passt", model="virtio")
    ssh = PortForward(proto="tcp", address="127.0.0.1")
    ssh.add(PortRange(start=2222, to=22))
    udp = PortForward(proto="udp", dev="eth0")
    udp.add(PortRange(start=5000, end=5010))
    udp.add(PortRange(start=5005, exclude=True))
    nic.add(ssh)
    nic.add(udp)
    dom.devices.add(nic)
    # A SPICE ticket as the live XML carries it (fixed ports, TLS port, expiry).
    dom.devices.add(
        Graphics(
            type="spice",
            autoport=False,
            port=5930,
            tls_port=5931,
            passwd="t1cket",
            passwd_valid_to="2030-01-01T00:00:00",
        )
    )
    # VNC on a unix socket libvirt creates (the product's browser console display).
    dom.devices.add(Graphics(type="vnc", listen_socket=True, passwd="s0cket-p"))
    _agent_channels(dom)
    return dom


def uefi_manual_domain() -> Domain:
    """UEFI with an explicit Secure Boot loader and NVRAM template (no autoselection)."""
    dom = _base_domain("uefi-manual")
    dom.os.loader = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
    dom.os.loader_readonly = True
    dom.os.loader_secure = True
    dom.os.loader_type = "pflash"
    dom.os.nvram = "/var/lib/libvirt/qemu/nvram/kvmm-t-xml-uefi-manual_VARS.fd"
    dom.os.nvram_template = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    dom.features.smm = True
    _agent_channels(dom)
    return dom


def kernel_boot_domain() -> Domain:
    """Direct kernel boot under TCG, the cheapest test guest."""
    dom = _base_domain("kernel", dom_type="qemu")
    dom.os.kernel = "/var/lib/kvmm/vmlinuz"
    dom.os.initrd = "/var/lib/kvmm/initrd.img"
    dom.os.cmdline = "console=ttyS0 quiet"
    dom.devices.add(Serial(type="pty"))
    dom.devices.add(Console(type="pty", target_type="serial"))
    _agent_channels(dom)
    dom.devices.memballoon = MemBalloon(model="none")
    return dom


def edited_rich_domain(data_dir: Path) -> Domain:
    """A parsed domain full of unknown elements, edited through the models."""
    dom = Domain.from_xml((data_dir / "rich-domain.xml").read_text())
    dom.title = "edited"
    dom.devices.cdroms()[0].clear_source()
    dom.devices.add(Channel(type="unix", target_type="virtio", target_name=KVMM_AGENT_CHANNEL))
    dom.manager_metadata.tags = ["x"]
    dom.os.boot_devices = []
    dom.features.acpi = False
    return dom


def live_channel_domain() -> Domain:
    """The live form of a channel carries state='connected' (read-only in the model)."""
    dom = kernel_boot_domain()
    chan = dom.devices.channel(KVMM_AGENT_CHANNEL)
    chan.element.find("target").set("state", "connected")  # what libvirt reports
    assert chan.connected is True
    return dom


# ---------------------------------------------------------------------------- networks


def nat_network() -> Network:
    net = Network(name="kvmm-t-xml-nat", uuid="6f1c2e3d-4b5a-4c6d-8e7f-9a0b1c2d3e4f")
    net.forward_mode = "nat"
    net.forward_dev = "eth0"
    net.bridge_name, net.bridge_stp, net.bridge_delay = "virbr50", True, 0
    net.mtu = 1500
    net.mac_address = "52:54:00:50:00:01"
    net.domain_name, net.domain_local_only = "lab.example", True
    ip = net.add(IP(family="ipv4", address="192.168.150.1", netmask="255.255.255.0"))
    ip.add(DhcpRange(start="192.168.150.100", end="192.168.150.200"))
    ip.add(DhcpHost(mac="52:54:00:00:00:10", name="db", ip="192.168.150.10"))
    net.add(IP(family="ipv6", address="fd00:150::1", prefix=64))
    return net


def route_network() -> Network:
    net = Network(name="kvmm-t-xml-route", forward_mode="route", bridge_name="virbr51")
    ip = net.add(IP(address="10.51.0.1", prefix=24))
    ip.add(DhcpRange(start="10.51.0.50", end="10.51.0.99"))
    return net


def open_network() -> Network:
    net = Network(name="kvmm-t-xml-open", forward_mode="open", bridge_name="virbr52")
    net.add(IP(address="10.52.0.1", prefix=24))
    return net


def isolated_network() -> Network:
    net = Network(name="kvmm-t-xml-isolated", forward_mode="nat", bridge_name="virbr53")
    net.forward_mode = "none"
    assert net.isolated
    ip = net.add(IP(address="10.53.0.1", netmask="255.255.255.0"))
    ip.add(DhcpRange(start="10.53.0.10", end="10.53.0.20"))
    ip.add(DhcpHost(mac="52:54:00:00:00:53", ip="10.53.0.5"))
    return net


# ------------------------------------------------------------------------ pools, volumes


def dir_pool() -> Pool:
    return Pool(
        type="dir",
        name="kvmm-t-xml-dir",
        uuid="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        target_path="/var/lib/kvmm-t-xml-dir",
        target_mode="0711",
        target_owner=0,
        target_group=0,
    )


def logical_pool() -> Pool:
    pool = Pool(type="logical", name="kvmm-t-xml-vg", source_name="kvmmvg", source_format="lvm2")
    pool.source_devices = ["/dev/sdb", "/dev/sdc"]
    pool.target_path = "/dev/kvmmvg"
    return pool


def netfs_pool() -> Pool:
    pool = Pool(type="netfs", name="kvmm-t-xml-nfs", source_host_name="nas.example.org")
    pool.source_host_port = 2049
    pool.source_dir = "/export/vms"
    pool.source_format = "nfs"
    pool.target_path = "/mnt/kvmm-t-xml-nfs"
    return pool


def fs_pool() -> Pool:
    pool = Pool(type="fs", name="kvmm-t-xml-fs", source_format="ext4", target_path="/mnt/fs")
    pool.source_device = "/dev/sdd1"
    return pool


def qcow2_volume() -> Volume:
    return Volume(
        type="file",
        name="kvmm-t-xml-a.qcow2",
        key="/var/lib/libvirt/images/kvmm-t-xml-a.qcow2",
        capacity=20 * GiB,
        allocation=0,
        target_path="/var/lib/libvirt/images/kvmm-t-xml-a.qcow2",
        target_format="qcow2",
        compat="1.1",
        target_mode="0600",
        target_owner=107,
        target_group=107,
    )


def raw_volume() -> Volume:
    return Volume(name="kvmm-t-xml-b.img", capacity=GiB, target_format="raw")


def backed_volume() -> Volume:
    vol = Volume(name="kvmm-t-xml-c.qcow2", capacity=20 * GiB, target_format="qcow2")
    vol.backing_path = "/var/lib/libvirt/images/kvmm-t-xml-a.qcow2"
    vol.backing_format = "qcow2"
    return vol


def iso_volume() -> Volume:
    return Volume(name="kvmm-t-xml-agent.iso", capacity=2 * 1024**2, target_format="iso")


DOMAINS = [
    bios_domain,
    uefi_tpm_domain,
    uefi_manual_domain,
    kernel_boot_domain,
    live_channel_domain,
    passthrough_domain,
]
# Validated against libvirt's schema, not defined in the real libvirtd (see each builder).
SCHEMA_ONLY_DOMAINS = [passt_domain]
NETWORKS = [nat_network, route_network, open_network, isolated_network]
POOLS = [dir_pool, logical_pool, netfs_pool, fs_pool]
VOLUMES = [qcow2_volume, raw_volume, backed_volume, iso_volume]
CASES = (
    [(f.__name__, "domain", f) for f in DOMAINS + SCHEMA_ONLY_DOMAINS]
    + [(f.__name__, "network", f) for f in NETWORKS]
    + [(f.__name__, "pool", f) for f in POOLS]
    + [(f.__name__, "vol", f) for f in VOLUMES]
)


@pytest.mark.parametrize(("kind", "build"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_built_xml_validates(kind: str, build) -> None:
    validate_xml(build().to_xml(), kind)


def test_edited_live_xml_validates(data_dir: Path) -> None:
    validate_xml(edited_rich_domain(data_dir).to_xml(), "domain")


def test_reparsed_and_reedited_xml_validates() -> None:
    """Parsing our own output and removing things keeps it valid."""
    dom = Domain.from_xml(bios_domain().to_xml())
    for disk_ in dom.devices.disks[1:]:
        dom.devices.remove(disk_)
    dom.devices.graphics[0].listen_address = None
    dom.manager_metadata.tags = None
    dom.vcpus_current = None
    validate_xml(dom.to_xml(), "domain")
    net = Network.from_xml(nat_network().to_xml())
    ip = net.ipv4()
    for host in ip.dhcp_hosts:
        ip.remove(host)
    net.forward_mode = "route"
    validate_xml(net.to_xml(), "network")


def test_captured_capabilities_validate(data_dir: Path) -> None:
    validate_xml((data_dir / "test-capabilities.xml").read_text(), "capabilities")
    for name in ("domcaps-kvm-q35.xml", "domcaps-qemu.xml"):
        validate_xml((data_dir / name).read_text(), "domaincaps")


def test_invalid_xml_is_reported() -> None:
    dom = Domain(type="kvm", name="kvmm-t-xml-broken")
    dom.element.append(etree.Element("nonsense"))  # the models themselves refuse to do this
    with pytest.raises(SchemaValidationError) as err:
        validate_xml(dom.to_xml(), "domain")
    assert err.value.field == "domain"
    assert "validate" in err.value.message
    with pytest.raises(Exception, match="unknown schema kind"):
        validate_xml("<x/>", "nonsense")


# ----------------------------------------------------------------- property coverage


MODEL_MODULES = [domain_mod, metadata_mod, network_mod, pool_mod, volume_mod, devices_pkg]
MODEL_MODULES += [chardev, disk, graphics, interface, misc]


def _model_classes() -> set[type[XMLObject]]:
    found = set()
    for mod in MODEL_MODULES:
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, XMLObject) and obj.TAG and obj.__module__.startswith(mod.__name__):
                found.add(obj)
    return found


def _settable(cls: type[XMLObject]) -> Iterator[str]:
    for desc in cls._DESCRIPTORS:
        if desc.name.startswith("_") or getattr(desc, "readonly", False):
            continue
        if isinstance(desc, XMLProperty | XMLValueList):
            yield desc.name


def _walk(obj: XMLObject, seen: set[tuple[type, str]], classes: set[type]) -> None:
    classes.add(type(obj))
    for desc in type(obj)._DESCRIPTORS:
        value = getattr(obj, desc.name)
        if isinstance(desc, XMLChild):
            if value.exists:
                _walk(value, seen, classes)
        elif isinstance(desc, XMLChildList):
            for item in value:
                _walk(item, seen, classes)
        elif value not in (None, []) and not (getattr(desc, "present", False) and not value):
            seen.add((type(obj), desc.name))


def test_every_property_is_exercised(data_dir: Path) -> None:
    seen: set[tuple[type, str]] = set()
    classes: set[type] = set()
    for _, _, build in CASES:
        _walk(build(), seen, classes)
    expected = {(cls, name) for cls in _model_classes() for name in _settable(cls)}
    assert _model_classes() <= classes, "model classes never built by the matrix"
    missing = sorted(f"{cls.__name__}.{name}" for cls, name in expected - seen)
    assert not missing, f"properties never set in the schema matrix: {missing}"


# ------------------------------------------------------ acceptance by the real libvirtd


@pytest.fixture
def system_conn() -> Iterator[libvirt.virConnect]:
    conn = libvirt.open("qemu:///system")
    yield conn
    conn.close()


def _undefine_domain(conn: libvirt.virConnect, name: str) -> None:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)


@pytest.mark.libvirtd
@pytest.mark.parametrize("build", DOMAINS, ids=[f.__name__ for f in DOMAINS])
def test_libvirtd_accepts_domains(system_conn, build) -> None:
    """libvirt's own parser (stricter than the schema) takes the XML and gives the same
    model values back; its output parses and validates too."""
    built = build()
    dcaps = DomainCapabilities.from_xml(
        system_conn.getDomainCapabilities(None, "x86_64", built.os.machine, built.type, 0)
    )
    if not dcaps.supports_tpm():
        # No swtpm on this host: the product would not offer a TPM either.
        for tpm in built.devices.tpms:
            built.devices.remove(tpm)
    _undefine_domain(system_conn, built.name)
    try:
        system_conn.defineXML(built.to_xml())
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
        xml = system_conn.lookupByName(built.name).XMLDesc(flags)
        validate_xml(xml, "domain")
        back = Domain.from_xml(xml)
        assert (back.name, back.memory, back.vcpus) == (built.name, built.memory, built.vcpus)
        assert back.manager_metadata.tags == built.manager_metadata.tags
        assert back.devices.channel(KVMM_AGENT_CHANNEL) is not None
        assert back.devices.channel(QEMU_GA_CHANNEL) is not None
        assert [d.target_dev for d in back.devices.disks] == [
            d.target_dev for d in built.devices.disks
        ]
        for mine, theirs in zip(built.devices.graphics, back.devices.graphics, strict=True):
            assert (theirs.type, theirs.listen_address, theirs.passwd) == (
                mine.type,
                mine.listen_address,
                mine.passwd,
            )
    finally:
        _undefine_domain(system_conn, built.name)


@pytest.mark.libvirtd
@pytest.mark.parametrize("build", NETWORKS, ids=[f.__name__ for f in NETWORKS])
def test_libvirtd_accepts_networks(system_conn, build) -> None:
    built = build()
    net = system_conn.networkDefineXML(built.to_xml())
    try:
        back = Network.from_xml(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
        assert (back.name, back.forward_mode) == (built.name, built.forward_mode)
        assert [ip.address for ip in back.ips] == [ip.address for ip in built.ips]
    finally:
        net.undefine()


@pytest.mark.libvirtd
@pytest.mark.parametrize("build", POOLS, ids=[f.__name__ for f in POOLS])
def test_libvirtd_accepts_pools(system_conn, build) -> None:
    built = build()
    pool = system_conn.storagePoolDefineXML(built.to_xml(), 0)
    try:
        back = Pool.from_xml(pool.XMLDesc(libvirt.VIR_STORAGE_XML_INACTIVE))
        assert (back.type, back.name, back.target_path) == (
            built.type,
            built.name,
            built.target_path,
        )
        assert back.source_devices == built.source_devices
    finally:
        pool.undefine()


@pytest.mark.libvirtd
def test_libvirtd_creates_volumes(system_conn, tmp_path: Path) -> None:
    """Volumes built by the models are created in a real dir pool, backing chain included."""
    target = tmp_path / "pool"
    target.mkdir()
    pool_xml = Pool(type="dir", name="kvmm-t-xml-volpool", target_path=str(target)).to_xml()
    pool = system_conn.storagePoolCreateXML(pool_xml, 0)  # transient: gone when destroyed
    try:
        base = pool.createXML(qcow2_volume().to_xml(), 0)
        overlay_model = backed_volume()
        overlay_model.backing_path = base.path()
        made = [base, pool.createXML(overlay_model.to_xml(), 0)]
        made += [pool.createXML(raw_volume().to_xml(), 0)]
        made += [pool.createXML(iso_volume().to_xml(), 0)]
        pool.refresh(0)
        overlay = Volume.from_xml(made[1].XMLDesc(0))
        assert overlay.backing_path == base.path() and overlay.backing_format == "qcow2"
        assert overlay.capacity == 20 * GiB and overlay.target_format == "qcow2"
        assert Volume.from_xml(made[2].XMLDesc(0)).target_format == "raw"
        for vol in made:
            validate_xml(vol.XMLDesc(0), "vol")
        for vol in reversed(made):
            vol.delete(0)
    finally:
        pool.destroy()
