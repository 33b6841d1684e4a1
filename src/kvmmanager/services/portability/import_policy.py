"""What a non-admin may import: only what the typed builders model (issue 14).

An imported domain XML is handed to libvirt, which runs QEMU as root-equivalent on the
host. Whatever the builders never write would let an operator reach host resources that
no admin exposed: a disk on any host file or block device, a `<filesystem>` passthrough
of `/`, `<qemu:commandline>`, a host PCI device, a chardev writing to a host path, a
direct/hostdev NIC, a static security label, firmware or a kernel read from anywhere.

`check_import(conn, root)` walks the whole tree (an allow-list, not a deny-list) and raises
`InvalidInput` naming the first element it refuses; the caller skips it for admins, who
may import anything. Two things are rewritten instead of refused, because libvirt fills
them in by itself and an exported VM carries them: the socket path of the agent
channels the builders make, and a UEFI variable store in libvirt's own nvram directory
(a fresh one is made from the firmware's template). Every other path the XML names must
be a volume of a storage pool (resolved through libvirt's storageVolLookupByPath), or for
a firmware loader one the host's domain capabilities offer.
"""

from __future__ import annotations

from typing import Any

import libvirt
from lxml import etree

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.vms.spec import AGENT_CHANNEL, QGA_CHANNEL
from kvmmanager.virt.xml.capabilities import DomainCapabilities
from kvmmanager.virt.xml.metadata import NS_URI

FIELD = "xml"

TOP_LEVEL = frozenset({
    "name", "uuid", "genid", "title", "description", "metadata", "memory", "currentMemory",
    "maxMemory", "vcpu", "vcpus", "os", "features", "cpu", "clock", "on_poweroff",
    "on_reboot", "on_crash", "pm", "devices", "seclabel", "resource",
})  # fmt: skip
DEVICES = frozenset({
    "emulator", "disk", "controller", "interface", "serial", "console", "channel", "input",
    "graphics", "video", "sound", "audio", "memballoon", "rng", "tpm", "watchdog", "panic",
    "redirdev", "hub", "vsock", "iommu",
})  # fmt: skip
OS_CHILDREN = frozenset({
    "type", "loader", "nvram", "kernel", "initrd", "cmdline", "boot", "bootmenu", "bios",
    "firmware", "smbios",
})  # fmt: skip
DISK_CHILDREN = frozenset({
    "driver", "source", "target", "readonly", "shareable", "boot", "address", "alias",
    "serial", "iotune", "blockio", "geometry", "wwn", "vendor", "product", "transient",
    "backingStore",
})  # fmt: skip
DISK_TYPES = frozenset({"file", "volume"})
NIC_TYPES = frozenset({"network", "bridge", "user"})
# Chardevs that open nothing on the host (or a socket libvirt names itself).
CHARDEV_TYPES = frozenset({"pty", "spicevmc", "qemu-vdagent", "null", "vc"})
BUILDER_CHANNELS = frozenset({AGENT_CHANNEL, QGA_CHANNEL})
INPUT_TYPES = frozenset({"tablet", "mouse", "keyboard"})
GRAPHICS_TYPES = frozenset({"vnc", "spice"})
AUDIO_TYPES = frozenset({"none", "spice"})
RNG_SOURCES = frozenset({"/dev/urandom", "/dev/random"})
LIBVIRT_NVRAM_DIR = "/var/lib/libvirt/qemu/nvram/"
# Attributes that name a host path or device whatever element carries them: after the
# element-by-element rules, any left on an element no rule vouched for is refused.
PATH_ATTRS = frozenset({
    "file", "path", "socket", "logFile", "rendernode", "evdev", "template", "dev",
    "tap", "vhost", "append",
})  # fmt: skip
# Elements whose text is the user's words, never a path libvirt opens.
FREE_TEXT = frozenset({"name", "title", "description", "cmdline"})
# Attributes named like a path that are not one on these elements.
NOT_PATHS = {("target", "dev"), ("boot", "dev"), ("source", "dev")}


def _name(el: Any) -> str:
    q = etree.QName(el)
    prefix = el.prefix
    return f"<{prefix}:{q.localname}>" if prefix else f"<{q.localname}>"


def _refuse(el: Any, why: str) -> InvalidInput:
    return InvalidInput(f"{_name(el)} {why} (only an admin may import it)", field=FIELD)


def _is_volume(conn: libvirt.virConnect, path: str) -> bool:
    try:
        conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        return False
    return True


class _Walk:
    def __init__(self, conn: libvirt.virConnect, root: Any) -> None:
        self.conn = conn
        self.root = root
        self.vouched: set[Any] = set()

    def need_volume(self, el: Any, path: str | None, what: str) -> None:
        if not path:
            return
        if not _is_volume(self.conn, path):
            raise _refuse(el, f"{what} {path} is not a volume of any storage pool")
        self.vouched.add(el)

    # -- top level ---------------------------------------------------------------------

    def run(self) -> None:
        for el in self.root:
            if not isinstance(el.tag, str):
                continue  # comments, processing instructions
            if etree.QName(el).namespace is not None or el.tag not in TOP_LEVEL:
                raise _refuse(el, "is not something the manager builds")
            if el.tag == "metadata":
                self._metadata(el)
            elif el.tag == "seclabel":
                self._seclabel(el)
            elif el.tag == "resource":
                self._resource(el)
            elif el.tag == "os":
                self._os(el)
            elif el.tag == "devices":
                self._devices(el)
        self._sweep()

    def _metadata(self, el: Any) -> None:
        # Other tools' metadata is data libvirt never acts on; it stays out of the sweep.
        for node in el.iter():
            self.vouched.add(node)

    def _seclabel(self, el: Any) -> None:
        # A static label (qemu as root:root) or type='none' lifts QEMU's confinement.
        if el.get("type", "dynamic") != "dynamic" or el.get("relabel") == "no" or len(el):
            raise _refuse(el, "sets a security label other than libvirt's dynamic one")

    def _resource(self, el: Any) -> None:
        kids = [c for c in el if isinstance(c.tag, str)]
        if [(c.tag, (c.text or "").strip()) for c in kids] != [("partition", "/machine")]:
            raise _refuse(el, "places the VM outside libvirt's /machine partition")

    def _os(self, el: Any) -> None:
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if child.tag not in OS_CHILDREN:
                raise _refuse(child, "is not something the manager builds")
            text = (child.text or "").strip()
            if child.tag in ("kernel", "initrd"):
                self.need_volume(child, text, f"the {child.tag}")
            elif child.tag == "loader":
                self._loader(child, text)
            elif child.tag == "nvram":
                self._nvram(el, child, text)
            elif child.tag == "smbios" and child.get("mode") == "host":
                raise _refuse(child, "copies the host's SMBIOS tables into the guest")

    def _loader(self, el: Any, path: str) -> None:
        if not path:
            return
        offered: list[str] = []
        try:
            caps = DomainCapabilities.from_xml(
                self.conn.getDomainCapabilities(None, None, None, None, 0)
            )
            offered = list(caps.loader_paths)
        except libvirt.libvirtError:
            offered = []
        if path in offered:
            self.vouched.add(el)
            return
        self.need_volume(el, path, "the firmware")

    def _nvram(self, os_el: Any, el: Any, path: str) -> None:
        # The store QEMU writes the guest's UEFI variables to; a template is read from
        # the host. libvirt makes a fresh store in its own directory when none is named.
        plain = el.get("template") is None and el.get("type") is None and len(el) == 0
        if plain and path.startswith(LIBVIRT_NVRAM_DIR) and "/../" not in path:
            os_el.remove(el)
            return
        raise _refuse(el, "names a UEFI variable store or template outside libvirt's own")

    # -- devices -----------------------------------------------------------------------

    def _devices(self, el: Any) -> None:
        for dev in el:
            if not isinstance(dev.tag, str):
                continue
            if etree.QName(dev).namespace is not None or dev.tag not in DEVICES:
                raise _refuse(dev, "is not a device the manager builds")
            check = getattr(self, f"_dev_{dev.tag}", None)
            if check is not None:
                check(dev)

    def _dev_emulator(self, el: Any) -> None:
        self.vouched.add(el)  # dropped by the import: the target host picks its own

    def _dev_disk(self, el: Any) -> None:
        target = el.find("target")
        what = f"disk {target.get('dev') if target is not None else '?'}"
        kind = el.get("type", "file")
        if kind not in DISK_TYPES:
            raise _refuse(el, f"({what}) of type '{kind}' reaches the host outside the pools")
        if el.get("device", "disk") not in ("disk", "cdrom", "floppy") or el.get("rawio"):
            # A 'lun' passes SCSI commands (rawio: any) through to the host's device.
            raise _refuse(el, f"({what}) passes SCSI commands through to the host")
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if child.tag not in DISK_CHILDREN:
                raise _refuse(child, f"({what}) is not something the manager builds")
            if child.tag == "backingStore" and (len(child) or child.attrib):
                raise _refuse(child, f"({what}) names a backing chain; import a flat image")
            if child.tag == "source":
                if len(child):
                    raise _refuse(child[0], f"({what}) is not something the manager builds")
                if kind == "file":
                    self.need_volume(child, child.get("file"), f"{what}: the image")

    def _dev_interface(self, el: Any) -> None:
        kind = el.get("type")
        if kind not in NIC_TYPES:
            raise _refuse(el, f"of type '{kind}' reaches the host's network directly")
        for child in el:
            if child.tag in ("script", "downscript"):
                raise _refuse(child, "runs a program on the host")
            if child.tag == "backend" and set(child.attrib) - {"type"}:
                raise _refuse(child, "names host devices or files")
            if child.tag == "rom" and child.get("file"):
                raise _refuse(child, "loads a host file into the guest")

    def _chardev(self, el: Any) -> None:
        kind = el.get("type", "pty")
        target = el.find("target")
        name = target.get("name") if target is not None else None
        for child in el:
            if child.tag == "log":
                raise _refuse(child, "writes the device's output to a host file")
        if kind in CHARDEV_TYPES:
            return
        source = el.find("source")
        if kind == "unix" and el.tag == "channel" and name in BUILDER_CHANNELS:
            # The agent channels the builders make: libvirt names the socket itself.
            if source is not None:
                source.attrib.pop("path", None)
                if source.get("mode", "bind") != "bind" or len(source):
                    raise _refuse(source, "connects the agent channel elsewhere")
            return
        raise _refuse(el, f"of type '{kind}' opens a host file, device or socket")

    _dev_serial = _dev_console = _dev_channel = _chardev

    def _dev_input(self, el: Any) -> None:
        if el.get("type") not in INPUT_TYPES or el.find("source") is not None:
            raise _refuse(el, "passes a host input device through")

    def _dev_graphics(self, el: Any) -> None:
        if el.get("type") not in GRAPHICS_TYPES:
            raise _refuse(el, f"of type '{el.get('type')}' is not VNC or SPICE")
        for child in el:
            if child.tag == "listen" and child.get("type") == "socket":
                if child.get("socket"):
                    raise _refuse(child, "puts the display socket at a host path")
                self.vouched.add(child)

    def _dev_audio(self, el: Any) -> None:
        if el.get("type") not in AUDIO_TYPES:
            raise _refuse(el, f"of type '{el.get('type')}' reaches the host's sound system")

    def _dev_rng(self, el: Any) -> None:
        backend = el.find("backend")
        model = backend.get("model") if backend is not None else None
        if model == "builtin":
            return
        if model != "random" or (backend.text or "").strip() not in RNG_SOURCES:
            raise _refuse(el, "reads a host device other than /dev/urandom")
        self.vouched.add(backend)

    def _dev_tpm(self, el: Any) -> None:
        backend = el.find("backend")
        if backend is None or backend.get("type") != "emulator":
            raise _refuse(el, "passes a host TPM or socket through")

    def _dev_redirdev(self, el: Any) -> None:
        if el.get("type") != "spicevmc":
            raise _refuse(el, "redirects USB over a host socket")

    # -- the safety net ----------------------------------------------------------------

    def _sweep(self) -> None:
        """Anything left that names a host path is refused: a rule above vouches for the
        paths it checked, nothing else may carry one."""
        for el in self.root.iter():
            if not isinstance(el.tag, str) or el in self.vouched:
                continue
            if etree.QName(el).namespace not in (None, NS_URI):
                raise _refuse(el, "is not something the manager builds")
            for attr, value in el.attrib.items():
                if attr in PATH_ATTRS and (el.tag, attr) not in NOT_PATHS:
                    raise _refuse(el, f"names a host path ({attr}='{value}')")
            text = (el.text or "").strip()
            if text.startswith("/") and el.tag not in FREE_TEXT:
                raise _refuse(el, f"names a host path ({text})")


def check_import(conn: libvirt.virConnect, root: Any) -> None:
    """Refuse (InvalidInput naming the element) what a non-admin may not import; rewrite
    the two things libvirt regenerates (see the module doc). Blocking: worker thread."""
    _Walk(conn, root).run()
