"""``<domain>``: a virtual machine's definition.

Build a new one::

    from kvmmanager.virt.xml.domain import Domain
    from kvmmanager.virt.xml.devices import Disk, Interface, Channel, KVMM_AGENT_CHANNEL

    dom = Domain(type="qemu", name="web1", memory=1024 * 1024, current_memory=1024 * 1024,
                 vcpus=2)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "q35"
    dom.os.firmware = "efi"                       # UEFI, libvirt picks the loader
    dom.os.boot_devices = ["cdrom", "hd"]
    dom.features.acpi = dom.features.apic = True
    dom.cpu_mode, dom.clock_offset = "host-passthrough", "utc"
    dom.devices.add(Disk(type="volume", device="disk", source_pool="default",
                         source_volume="web1.qcow2", target_dev="vda", target_bus="virtio"))
    dom.devices.add(Channel(type="unix", target_type="virtio", target_name=KVMM_AGENT_CHANNEL))
    dom.manager_metadata.tags = ["web"]
    conn.defineXML(dom.to_xml())

Edit live XML (everything not touched stays as it was)::

    dom = Domain.from_xml(virdomain.XMLDesc(0))
    dom.title = "Front end"
    dom.devices.disk_by_target("sda").clear_source()      # eject
    xml = dom.to_xml()

Memory values are KiB whatever unit the XML used.
"""

from __future__ import annotations

from kvmmanager.virt.xml import libosinfo
from kvmmanager.virt.xml.base import XMLChild, XMLObject, XMLProperty, XMLSizeProperty, XMLValueList
from kvmmanager.virt.xml.devices import Devices
from kvmmanager.virt.xml.libosinfo import LibosinfoMetadata
from kvmmanager.virt.xml.metadata import NS_PREFIX, NS_URI, ManagerMetadata

DOMAIN_TYPES = ("kvm", "qemu", "test")
LIFECYCLE_ACTIONS = (
    "destroy",
    "restart",
    "preserve",
    "rename-restart",
    "coredump-destroy",
    "coredump-restart",
)
BOOT_DEVICES = ("hd", "cdrom", "network", "fd")


class OS(XMLObject):
    """``<os>``.

    Two ways to UEFI, which libvirt does not let you mix: ``firmware='efi'`` (libvirt picks
    the loader; only ``secure_boot`` and ``nvram`` may be given) or an explicit ``loader``
    with ``loader_readonly``/``loader_type``/``loader_secure`` and ``nvram_template``.
    ``boot_devices`` cannot be combined with per-device ``boot_order`` either.
    """

    TAG = "os"

    firmware = XMLProperty("@firmware", choices=("efi", "bios"))
    os_type = XMLProperty("type", choices=("hvm", "linux", "xen", "exe"))
    arch = XMLProperty("type/@arch")
    machine = XMLProperty("type/@machine", doc="pc, q35, pc-q35-7.2...")
    secure_boot = XMLProperty(
        "firmware/feature[@name='secure-boot']/@enabled",
        kind=bool,
        doc="firmware auto-selection: require (True) or refuse (False) Secure Boot",
    )
    loader = XMLProperty("loader", doc="path of the firmware code")
    loader_readonly = XMLProperty("loader/@readonly", kind=bool)
    loader_secure = XMLProperty("loader/@secure", kind=bool)
    loader_type = XMLProperty("loader/@type", choices=("rom", "pflash"))
    nvram = XMLProperty("nvram", doc="path of this VM's UEFI variable store")
    nvram_template = XMLProperty("nvram/@template")
    kernel = XMLProperty("kernel")
    initrd = XMLProperty("initrd")
    cmdline = XMLProperty("cmdline")
    boot_devices = XMLValueList("boot/@dev", doc="BIOS boot order: hd, cdrom, network, fd")
    bootmenu = XMLProperty("bootmenu/@enable", kind=bool)

    @property
    def is_uefi(self) -> bool:
        loader = self.loader or ""
        return self.firmware == "efi" or self.loader_type == "pflash" or "OVMF" in loader


class Features(XMLObject):
    TAG = "features"

    pae = XMLProperty("pae", present=True)
    acpi = XMLProperty("acpi", present=True)
    apic = XMLProperty("apic", present=True)
    vmport = XMLProperty("vmport/@state", kind=bool, bools=("on", "off"))
    smm = XMLProperty("smm/@state", kind=bool, bools=("on", "off"), doc="needed by Secure Boot")


class Domain(XMLObject):
    TAG = "domain"
    NSMAP = {NS_PREFIX: NS_URI, libosinfo.NS_PREFIX: libosinfo.NS_URI}

    type = XMLProperty("@type", choices=DOMAIN_TYPES)
    id = XMLProperty("@id", kind=int, readonly=True, doc="running domains only")
    name = XMLProperty("name")
    uuid = XMLProperty("uuid")
    title = XMLProperty("title")
    description = XMLProperty("description")
    manager_metadata = XMLChild(ManagerMetadata, "metadata/kvmm:manager")
    os_info = XMLChild(LibosinfoMetadata, "metadata/libosinfo:libosinfo")
    memory = XMLSizeProperty("memory", unit="KiB", doc="maximum memory at boot, KiB")
    current_memory = XMLSizeProperty("currentMemory", unit="KiB", doc="balloon target, KiB")
    vcpus = XMLProperty("vcpu", kind=int, minimum=1, doc="maximum vCPUs")
    vcpus_current = XMLProperty("vcpu/@current", kind=int, minimum=1, doc="online vCPUs")
    os = XMLChild(OS)
    features = XMLChild(Features)
    cpu_mode = XMLProperty(
        "cpu/@mode", choices=("host-passthrough", "host-model", "custom", "maximum")
    )
    clock_offset = XMLProperty(
        "clock/@offset", choices=("utc", "localtime", "timezone", "variable")
    )
    on_poweroff = XMLProperty("on_poweroff", choices=LIFECYCLE_ACTIONS)
    on_reboot = XMLProperty("on_reboot", choices=LIFECYCLE_ACTIONS)
    on_crash = XMLProperty("on_crash", choices=LIFECYCLE_ACTIONS)
    devices = XMLChild(Devices)

    @property
    def online_vcpus(self) -> int | None:
        """vCPUs the guest has now: ``current`` when set, else the maximum."""
        vcpus: int | None = self.vcpus_current or self.vcpus
        return vcpus


# <metadata> holds each application's element under its own namespace, in no order: one
# this model adds goes last, after the others', as it did before the model knew two.
Domain._ORDER.pop(("metadata",), None)
