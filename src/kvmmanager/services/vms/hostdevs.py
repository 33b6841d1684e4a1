"""Host PCI and USB devices (libvirt node devices) and giving them to VMs.

    devs = await manager.hostdevs.list("local")            # [HostDevice, ...]
    await manager.hostdevs.attach("local", "vm1", "pci_0000_01_00_0", group=True)
    await manager.hostdevs.attach("local", "vm1", "usb_1_2", usb_match="address")
    await manager.hostdevs.detach("local", "vm1", "pci_0000_01_00_0")

What is refused, and why:

- a device that is not a node device of *this* host (404);
- a device another VM already has, in its live or persistent definition (409);
- PCI bridges and host bridges (class 0x06): the host's own PCI topology hangs off them;
- USB root hubs (vendor 0x1d6b): they are the host controller's, not a device;
- a device the host itself uses (`_host_uses`): one with a disk the host sees below it
  (its disk controller) or a network interface whose link is up (the NIC carrying the
  host's traffic). Handing it to a guest takes the host's root disk or its network away,
  and the guest then reads or writes the host's own disk. To give such a device away on
  purpose, detach it from the host first (`virsh nodedev-detach`, which binds it to
  vfio-pci): then the host sees no disk or link on it;
- a PCI device without an IOMMU group: the host has no IOMMU (or it is off), so VFIO
  cannot isolate the device and the guest could DMA into the host's memory;
- a PCI device sharing its IOMMU group with other endpoints the VM does not get too: VFIO
  hands out whole groups, so QEMU would fail at start ("group N is not viable"). Pass
  ``group=True`` to assign every non-bridge member of the group together.

PCI devices are attached ``managed='yes'`` (libvirt rebinds them to vfio-pci while the
guest runs). A running VM gets the device live and in its persistent definition in one
call (AFFECT_LIVE|AFFECT_CONFIG); if the driver refuses the live attach, nothing changes
and libvirt's reason is returned.
"""

from __future__ import annotations

import builtins
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unsupported
from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms.edit import _apply_device, _xml, redefine
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt import scan
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.devices import Hostdev
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.nodedev import NodeDevice, pci_text

USB_ROOT_HUB_VENDOR = "0x1d6b"  # Linux Foundation: the kernel's virtual root hubs
LIST_FLAGS = (
    libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
    | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_USB_DEV
)
UsbMatch = Literal["id", "address"]


@dataclass
class HostDevice:
    name: str
    kind: str  # "pci" or "usb"
    address: str  # 0000:01:00.0 or "bus 1 device 2"
    vendor_id: str | None = None
    vendor_name: str | None = None
    product_id: str | None = None
    product_name: str | None = None
    driver: str | None = None
    pci_class: str | None = None
    class_name: str | None = None
    iommu_group: int | None = None
    iommu_members: list[str] = field(default_factory=list)
    attached_to: list[str] = field(default_factory=list)
    # Why the device can never be given to a VM (a bridge, a root hub); None when it can.
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pci_name(addr: tuple[int, int, int, int]) -> str:
    """libvirt's node device name of a PCI address: pci_0000_01_00_0."""
    return "pci_{:04x}_{:02x}_{:02x}_{:x}".format(*addr)


def _host_uses(conn: libvirt.virConnect) -> dict[str, str]:
    """Node device name -> why the host itself needs it, for every device above a disk the
    host sees or a network interface with its link up. libvirt's node device tree says
    both (storage and net capabilities, parents up to `computer`), for a remote host too.
    It cannot say which disk is mounted or which NIC holds the default route (it has no
    mount table or routing API), so every visible disk and every linked-up NIC counts."""
    devices: list[NodeDevice] = []
    for d in conn.listAllDevices(0):
        try:
            devices.append(NodeDevice.from_xml(d.XMLDesc(0)))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NODE_DEVICE:
                raise  # a device that vanished meanwhile is not in use
    parents = {d.name: d.parent for d in devices if d.name}
    uses: dict[str, str] = {}
    for d in devices:
        if d.storage_block:
            why = f"the host's disk {d.storage_block} is on it"
        elif d.net_interface and d.net_link_state == "up":
            why = f"it carries the host's network interface {d.net_interface} (link up)"
        else:
            continue
        parent, hops = d.parent, 0
        while parent and parent != "computer" and hops < 64:
            uses.setdefault(parent, why)
            parent, hops = parents.get(parent), hops + 1
    return uses


def _refusal(dev: NodeDevice, uses: dict[str, str] | None = None) -> str | None:
    used = (uses or {}).get(dev.name or "")
    if used:
        return (
            f"{_label(dev)} is used by the host itself: {used}. Detach it from the host "
            "first (virsh nodedev-detach) if it really is meant for a guest"
        )
    if dev.is_pci and dev.iommu_group is None:
        return (
            f"{_label(dev)} has no IOMMU group: the host's IOMMU is missing or off "
            "(intel_iommu=on / amd_iommu=on), so VFIO cannot keep a guest from reaching "
            "the host's memory through it"
        )
    if dev.is_pci and dev.is_bridge:
        cls = dev.pci_class or 0
        return (
            f"{pci_text(dev.pci_address or (0, 0, 0, 0))} is a PCI bridge (class 0x{cls:06x}): "
            "the host's own devices sit behind it, it cannot be given to a guest"
        )
    if dev.is_usb and dev.vendor_id == USB_ROOT_HUB_VENDOR:
        return f"{dev.name} is a root hub of the host's USB controller, not a device"
    return None


def _label(dev: NodeDevice) -> str:
    if dev.is_pci:
        return pci_text(dev.pci_address or (0, 0, 0, 0))
    return dev.name or "the device"


def _describe(dev: NodeDevice, uses: dict[str, str]) -> HostDevice:
    if dev.is_pci:
        addr = dev.pci_address or (0, 0, 0, 0)
        cls = dev.pci_class
        return HostDevice(
            name=dev.name or _pci_name(addr),
            kind="pci",
            address=pci_text(addr),
            vendor_id=dev.vendor_id,
            vendor_name=dev.vendor_name,
            product_id=dev.product_id,
            product_name=dev.product_name,
            driver=dev.driver_name,
            pci_class=None if cls is None else f"0x{cls:06x}",
            class_name=dev.pci_class_name,
            iommu_group=dev.iommu_group,
            iommu_members=[pci_text(a) for a in dev.iommu_members if a != addr],
            refused=_refusal(dev, uses),
        )
    bus, devno = dev.usb_address or (0, 0)
    return HostDevice(
        name=dev.name or "",
        kind="usb",
        address=f"bus {bus} device {devno}",
        vendor_id=dev.vendor_id,
        vendor_name=dev.vendor_name,
        product_id=dev.product_id,
        product_name=dev.product_name,
        driver=dev.driver_name,
        refused=_refusal(dev, uses),
    )


def _matches(hd: Hostdev, dev: NodeDevice) -> bool:
    """Whether a domain's <hostdev> is this node device."""
    if dev.is_pci:
        return hd.type == "pci" and hd.pci_address == dev.pci_address
    if dev.is_usb and hd.type == "usb":
        if hd.usb_address is not None:
            return hd.usb_address == dev.usb_address
        return hd.usb_id == (dev.vendor_id, dev.product_id)
    return False


def _domain_xmls(conn: libvirt.virConnect) -> list[tuple[str, str, Domain]]:
    """(uuid, name, definition) for the live and the persistent definition of every domain:
    a device in either is taken."""
    return [
        (dom.UUIDString(), dom.name(), Domain.from_xml(xml)) for dom, xml in scan.definitions(conn)
    ]


def _users(dev: NodeDevice, xmls: list[tuple[str, str, Domain]]) -> dict[str, str]:
    """uuid -> name of the domains that have `dev`."""
    return {
        uuid: name
        for uuid, name, xml in xmls
        if any(_matches(hd, dev) for hd in xml.devices.hostdevs)
    }


def _node_devices(conn: libvirt.virConnect) -> list[NodeDevice]:
    return [NodeDevice.from_xml(d.XMLDesc(0)) for d in conn.listAllDevices(LIST_FLAGS)]


def _lookup(conn: libvirt.virConnect, host: str, name: str) -> NodeDevice:
    try:
        dev = NodeDevice.from_xml(conn.nodeDeviceLookupByName(name).XMLDesc(0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NODE_DEVICE:
            raise NotFound(f"host '{host}' has no device '{name}'", field="device") from exc
        raise
    if not (dev.is_pci or dev.is_usb):
        raise InvalidInput(
            f"device '{name}' is a {dev.kind} device: only PCI and USB devices can be "
            "given to a VM",
            field="device",
        )
    return dev


def list_blocking(conn: libvirt.virConnect) -> list[HostDevice]:
    xmls = _domain_xmls(conn)
    uses = _host_uses(conn)
    out = []
    for dev in _node_devices(conn):
        info = _describe(dev, uses)
        info.attached_to = sorted(set(_users(dev, xmls).values()))
        out.append(info)
    return sorted(out, key=lambda d: (d.kind, d.address))


def _hostdev_for(dev: NodeDevice, usb_match: UsbMatch) -> Hostdev:
    if dev.is_pci:
        return Hostdev.pci(*(dev.pci_address or (0, 0, 0, 0)))
    if usb_match == "address":
        bus, devno = dev.usb_address or (0, 0)
        return Hostdev.usb_by_address(bus, devno)
    if not dev.vendor_id or not dev.product_id:
        raise InvalidInput(
            f"device '{dev.name}' reports no vendor/product id: attach it by address",
            field="usb_match",
        )
    return Hostdev.usb_by_id(dev.vendor_id, dev.product_id)


def _group_plan(
    conn: libvirt.virConnect,
    host: str,
    dev: NodeDevice,
    mine: Domain,
    group: bool,
) -> list[NodeDevice]:
    """The PCI devices to attach for `dev`: itself, plus with `group` every other non-bridge
    member of its IOMMU group the VM does not have yet. Refuses an incomplete group."""
    addr = dev.pci_address
    missing: list[NodeDevice] = []
    for member in dev.iommu_members:
        if member == addr:
            continue
        try:
            other = NodeDevice.from_xml(conn.nodeDeviceLookupByName(_pci_name(member)).XMLDesc(0))
        except libvirt.libvirtError:
            other = None
        if other is not None and other.is_bridge:
            continue  # bridges and root ports stay with the host; VFIO allows that
        if other is not None and any(_matches(hd, other) for hd in mine.devices.hostdevs):
            continue
        if other is None:
            raise Conflict(
                f"IOMMU group {dev.iommu_group} of {pci_text(addr or member)} also holds "
                f"{pci_text(member)}, which libvirt does not list as a node device: the group "
                "cannot be assigned as a whole",
                field="device",
            )
        missing.append(other)
    if missing and not group:
        names = ", ".join(f"{pci_text(m.pci_address or (0, 0, 0, 0))} ({m.name})" for m in missing)
        raise Conflict(
            f"{pci_text(addr or (0, 0, 0, 0))} shares IOMMU group {dev.iommu_group} with {names}, "
            "which this VM does not have: VFIO gives a guest whole IOMMU groups, so the VM "
            "would fail to start. Attach the whole group (group=true) or move the device to "
            "another slot",
            field="device",
        )
    return [dev, *missing]


def attach_blocking(
    conn: libvirt.virConnect,
    host: str,
    vm: str,
    name: str,
    usb_match: UsbMatch,
    group: bool,
) -> dict[str, Any]:
    dom = vm_builder.lookup(conn, host, vm)
    dev = _lookup(conn, host, name)
    plan = [dev]
    mine = _xml(dom)
    if dev.is_pci:
        plan = _group_plan(conn, host, dev, mine, group)
    xmls = _domain_xmls(conn)
    uses = _host_uses(conn)
    for item in plan:
        why = _refusal(item, uses)
        if why:
            raise Conflict(why, field="device")
        users = _users(item, xmls)
        if dom.UUIDString() in users and item is dev:
            raise Conflict(f"vm '{dom.name()}' already has device '{item.name}'", field="device")
        others = sorted(n for u, n in users.items() if u != dom.UUIDString())
        if others:
            raise Conflict(
                f"device '{item.name}' is already given to vm '{others[0]}'", field="device"
            )
    attached = []
    for item in plan:
        hd = _hostdev_for(item, usb_match)
        try:
            _apply_device(dom, hd.to_xml(), "attach", lambda x, hd=hd: x.devices.add(hd.copy()))
        except libvirt.libvirtError as exc:
            done = f" ({', '.join(attached)} attached before this)" if attached else ""
            raise Unsupported(
                f"libvirt refused to attach '{item.name}' to the running vm "
                f"'{dom.name()}': {libvirt_message(exc)}{done}",
                field="device",
            ) from exc
        attached.append(item.name or "")
    running = bool(dom.isActive())
    return {
        "applied_live": running,
        "next_boot": not running,
        "message": f"attached {', '.join(attached)}"
        + (" now and kept" if running else "; the VM gets it at its next start"),
        "details": {"devices": attached},
    }


def detach_blocking(conn: libvirt.virConnect, host: str, vm: str, name: str) -> dict[str, Any]:
    dom = vm_builder.lookup(conn, host, vm)
    dev = _lookup(conn, host, name)
    found = next((hd for hd in _xml(dom).devices.hostdevs if _matches(hd, dev)), None)
    if found is None:
        persistent = (
            Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            if dom.isPersistent()
            else None
        )
        if persistent is None or not any(_matches(h, dev) for h in persistent.devices.hostdevs):
            raise NotFound(f"vm '{dom.name()}' does not have device '{name}'", field="device")

    def change(xml: Domain) -> None:
        for hd in xml.devices.hostdevs:
            if _matches(hd, dev):
                xml.devices.remove(hd)

    if found is None:
        # In the persistent definition only (attached while running, not yet booted).
        redefine(dom, change)
        return {
            "applied_live": False,
            "next_boot": True,
            "message": f"removed {name} from the definition",
            "details": {"devices": [name]},
        }
    try:
        res = _apply_device(dom, found.to_xml(), "detach", change)
    except libvirt.libvirtError as exc:
        raise Unsupported(
            f"libvirt refused to detach '{name}' from the running vm '{dom.name()}': "
            f"{libvirt_message(exc)}",
            field="device",
        ) from exc
    res.message = f"detached {name}: {res.message}"
    res.details = {"devices": [name]}
    return res.to_dict()


class HostDeviceService:
    def __init__(self, registry: HostRegistry, vms: VmService) -> None:
        self._registry = registry
        self._vms = vms

    async def _run(
        self,
        host: str,
        fn: Any,
        *args: Any,
        kind: CallKind | None = None,
        vm: str | None = None,
    ) -> Any:
        hc = self._registry.get(host)
        return await hc.run(lambda: fn(hc.conn, *args), kind=kind, op=op_name(fn), vm=vm)

    async def list(self, host: str, kind: str | None = None) -> list[HostDevice]:
        if kind not in (None, "pci", "usb"):
            raise InvalidInput("kind must be pci or usb", field="kind")
        devs = await self._run(host, list_blocking, kind="read")
        return [d for d in devs if kind is None or d.kind == kind]

    # builtins.list: in this class `list` names the method above.
    async def of_vm(self, host: str, vm: str) -> builtins.list[HostDevice]:
        """The host devices the VM has (live or persistent definition)."""
        info = self._vms.get(host, vm)
        return [d for d in await self.list(host) if info.name in d.attached_to]

    async def attach(
        self, host: str, vm: str, device: str, usb_match: UsbMatch = "id", group: bool = False
    ) -> dict[str, Any]:
        if usb_match not in ("id", "address"):
            raise InvalidInput("usb_match must be id or address", field="usb_match")
        return await self._run(host, attach_blocking, host, vm, device, usb_match, group, vm=vm)

    async def detach(self, host: str, vm: str, device: str) -> dict[str, Any]:
        return await self._run(host, detach_blocking, host, vm, device, vm=vm)
