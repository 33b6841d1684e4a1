"""Read-only models of host capabilities and domain capabilities.

``Capabilities`` is ``virConnectGetCapabilities()``: the host CPU and, per guest
architecture, the domain types (qemu, kvm) and machine types QEMU offers.
``DomainCapabilities`` is ``virConnectGetDomainCapabilities(emulator, arch, machine,
virttype)``: what one emulator/machine/virt-type combination supports (firmware, TPM,
device models...).

Example::

    caps = Capabilities.from_xml(conn.getCapabilities())
    caps.host_arch, caps.domain_types("x86_64"), caps.machines("x86_64", "kvm")
    dcaps = DomainCapabilities.from_xml(
        conn.getDomainCapabilities(None, "x86_64", "q35", "kvm", 0))
    if dcaps.supports_uefi and dcaps.supports_tpm():
        ...
    dcaps.firmware_paths           # loader images libvirt knows
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLChildList, XMLObject, XMLProperty, XMLValueList


def _ro(path: str, *, kind: type = str, doc: str | None = None) -> XMLProperty:
    return XMLProperty(path, kind=kind, readonly=True, doc=doc)


def _enum(path: str, name: str) -> XMLValueList:
    return XMLValueList(f"{path}/enum[@name='{name}']/value", readonly=True)


# --------------------------------------------------------------------------- host capabilities


class Machine(XMLObject):
    TAG = "machine"

    name = _ro(".")
    canonical = _ro("@canonical", doc="the versioned machine an alias (pc, q35) stands for")
    max_cpus = _ro("@maxCpus", kind=int)
    deprecated = _ro("@deprecated", kind=bool)


class GuestDomain(XMLObject):
    TAG = "domain"

    type = _ro("@type")
    emulator = _ro("emulator")
    machines = XMLChildList(Machine)


class Guest(XMLObject):
    TAG = "guest"

    os_type = _ro("os_type")
    arch = _ro("arch/@name")
    wordsize = _ro("arch/wordsize", kind=int)
    emulator = _ro("arch/emulator")
    machines = XMLChildList(Machine, "arch/machine")
    domains = XMLChildList(GuestDomain, "arch/domain")

    @property
    def domain_types(self) -> list[str]:
        return [d.type for d in self.domains if d.type]


class Capabilities(XMLObject):
    TAG = "capabilities"

    host_uuid = _ro("host/uuid")
    host_arch = _ro("host/cpu/arch")
    host_cpu_model = _ro("host/cpu/model")
    host_cpu_vendor = _ro("host/cpu/vendor")
    host_cpu_features = XMLValueList("host/cpu/feature/@name", readonly=True)
    guests = XMLChildList(Guest)

    def guests_for(self, arch: str | None = None, os_type: str = "hvm") -> list[Guest]:
        return [g for g in self.guests if g.os_type == os_type and (arch is None or g.arch == arch)]

    def arches(self, os_type: str = "hvm") -> list[str]:
        return [g.arch for g in self.guests_for(None, os_type) if g.arch]

    def domain_types(self, arch: str | None = None) -> list[str]:
        """Domain types for ``arch`` (default: the host's), e.g. ``["qemu", "kvm"]``."""
        found: list[str] = []
        for guest in self.guests_for(arch or self.host_arch):
            found += [t for t in guest.domain_types if t not in found]
        return found

    def machines(self, arch: str | None = None, domain_type: str | None = None) -> list[str]:
        """Machine type names (aliases included); a domain type may list its own."""
        names: list[str] = []
        for guest in self.guests_for(arch or self.host_arch):
            pool = list(guest.machines)
            for dom in guest.domains:
                if domain_type in (None, dom.type):
                    pool += dom.machines
            names += [m.name for m in pool if m.name and m.name not in names]
        return names

    def kvm_offered(self, arch: str | None = None) -> bool:
        """libvirt lists a kvm domain type: /dev/kvm is usable, which does NOT prove guests run
        well under it (see the vm-lab notes); a real probe has to confirm."""
        return "kvm" in self.domain_types(arch)


# ------------------------------------------------------------------------- domain capabilities


class DomainCapabilities(XMLObject):
    TAG = "domainCapabilities"

    path = _ro("path", doc="emulator binary")
    domain_type = _ro("domain")
    machine = _ro("machine")
    arch = _ro("arch")
    vcpu_max = _ro("vcpu/@max", kind=int)
    iothreads_supported = _ro("iothreads/@supported", kind=bool)
    os_supported = _ro("os/@supported", kind=bool)
    firmware_values = _enum("os", "firmware")
    loader_supported = _ro("os/loader/@supported", kind=bool)
    loader_paths = XMLValueList("os/loader/value", readonly=True)
    loader_types = _enum("os/loader", "type")
    loader_readonly_values = _enum("os/loader", "readonly")
    loader_secure_values = _enum("os/loader", "secure")
    disk_supported = _ro("devices/disk/@supported", kind=bool)
    disk_devices = _enum("devices/disk", "diskDevice")
    disk_buses = _enum("devices/disk", "bus")
    disk_models = _enum("devices/disk", "model")
    graphics_supported = _ro("devices/graphics/@supported", kind=bool)
    graphics_types = _enum("devices/graphics", "type")
    video_supported = _ro("devices/video/@supported", kind=bool)
    video_models = _enum("devices/video", "modelType")
    hostdev_supported = _ro("devices/hostdev/@supported", kind=bool)
    hostdev_modes = _enum("devices/hostdev", "mode")
    hostdev_subsys_types = _enum("devices/hostdev", "subsysType")
    rng_supported = _ro("devices/rng/@supported", kind=bool)
    rng_models = _enum("devices/rng", "model")
    rng_backend_models = _enum("devices/rng", "backendModel")
    tpm_supported = _ro("devices/tpm/@supported", kind=bool)
    tpm_models = _enum("devices/tpm", "model")
    tpm_backend_models = _enum("devices/tpm", "backendModel")
    tpm_backend_versions = _enum("devices/tpm", "backendVersion")
    # User-mode NIC backends (libvirt lists `<interface>` from 9.x on; absent: none known).
    interface_backends = _enum("devices/interface", "backendType")
    channel_supported = _ro("devices/channel/@supported", kind=bool)
    channel_types = _enum("devices/channel", "type")
    gic_supported = _ro("features/gic/@supported", kind=bool)
    sev_supported = _ro("features/sev/@supported", kind=bool)
    sgx_supported = _ro("features/sgx/@supported", kind=bool)
    vmcoreinfo_supported = _ro("features/vmcoreinfo/@supported", kind=bool)
    genid_supported = _ro("features/genid/@supported", kind=bool)
    backup_supported = _ro("features/backup/@supported", kind=bool)

    def feature_supported(self, name: str) -> bool | None:
        """``<features><NAME supported='yes'/>``; None when libvirt does not mention it."""
        el = self._element()
        node = None if el is None else el.find(f"features/{name}")
        return None if node is None else node.get("supported") == "yes"

    def cpu_modes(self) -> list[str]:
        el = self._element()
        if el is None:
            return []
        return [m.get("name") for m in el.findall("cpu/mode") if m.get("supported") == "yes"]

    @property
    def supports_uefi(self) -> bool:
        """UEFI can be used: firmware auto-selection offers efi, or a pflash loader is known."""
        if not self.os_supported:
            return False
        if "efi" in self.firmware_values:
            return True
        return bool(self.loader_supported and self.loader_paths and "pflash" in self.loader_types)

    @property
    def supports_secure_boot(self) -> bool:
        return self.supports_uefi and "yes" in self.loader_secure_values

    @property
    def firmware_paths(self) -> list[str]:
        paths: list[str] = self.loader_paths
        return paths

    def supports_tpm(self, backend: str = "emulator") -> bool:
        """A TPM with ``backend`` (``emulator`` = swtpm, what new VMs use) can be added."""
        return bool(self.tpm_supported) and backend in self.tpm_backend_models

    def tpm_versions(self) -> list[str]:
        """TPM versions the emulator backend supports; libvirt 9.0 does not report them,
        so an empty list means "unknown", not "none"."""
        versions: list[str] = self.tpm_backend_versions
        return versions

    def supports_virtio_serial(self) -> bool | None:
        """Whether a unix-socket virtio channel can be added; None when libvirt (older than
        8.x) does not report channel capabilities."""
        if self.channel_supported is None:
            return None
        return bool(self.channel_supported) and "unix" in self.channel_types
