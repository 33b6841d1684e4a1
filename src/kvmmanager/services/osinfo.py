"""Operating systems and their recommended VM settings from osinfo-db, the database
virt-manager and Cockpit use, read through Debian's libosinfo (GObject introspection).

`search` finds OSes by name or short id; `defaults` turns one OS's entry into the create
form's values (memory, vCPUs, disk size, disk bus, NIC model, firmware), each with the
reason a person is shown. Without libosinfo (gir1.2-libosinfo-1.0, osinfo-db and
PyGObject, which scripts/setup installs) `available()` is False and the create flow says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from kvmmanager.core.errors import InvalidInput, Unsupported

ARCH = "x86_64"
MAX_RESULTS = 25
MAX_QUERY = 64
MIB = 1024 * 1024
GIB = 1024 * MIB
# When the database has no figure for an OS (old or exotic ones).
FALLBACK_MEMORY_MIB, FALLBACK_DISK_GIB = 1024, 10


@dataclass(frozen=True)
class OsChoice:
    short_id: str
    name: str
    vendor: str
    released: str


@dataclass(frozen=True)
class OsDefaults:
    os: OsChoice
    memory_mib: int
    vcpus: int
    disk_gib: int
    disk_bus: Literal["virtio", "sata"]
    nic_model: Literal["virtio", "e1000", "rtl8139"]
    firmware: Literal["bios", "uefi"]
    reasons: list[str] = field(default_factory=list)


@functools.cache
def _db() -> Any:
    try:
        import gi

        gi.require_version("Libosinfo", "1.0")
        from gi.repository import Libosinfo
    except (ImportError, ValueError) as exc:
        raise Unsupported(
            f"osinfo-db is not available here ({exc}): install gir1.2-libosinfo-1.0, "
            "osinfo-db and PyGObject (scripts/setup does)",
            field="os",
        ) from exc
    loader = Libosinfo.Loader()
    loader.process_default_path()
    return loader.get_db()


def available() -> bool:
    try:
        _db()
    except Unsupported:
        return False
    return True


def _choice(o: Any) -> OsChoice:
    return OsChoice(
        short_id=o.get_short_id() or "",
        name=o.get_name() or o.get_short_id() or "",
        vendor=o.get_vendor() or "",
        released=o.get_release_date_string() or "",
    )


@functools.cache
def _all() -> tuple[tuple[OsChoice, Any], ...]:
    items = [(_choice(o), o) for o in _db().get_os_list().get_elements() if o.get_short_id()]
    # Newest first: the OS a person installs today is usually a recent one.
    items.sort(key=lambda c: (c[0].released, c[0].name), reverse=True)
    return tuple(items)


def search(query: str, limit: int = MAX_RESULTS) -> list[OsChoice]:
    """OSes whose name, short id or vendor holds every word of `query` (any case)."""
    words = query.strip().lower()[:MAX_QUERY].split()
    found = []
    for choice, _ in _all():
        text = f"{choice.name} {choice.short_id} {choice.vendor}".lower()
        if all(w in text for w in words):
            found.append(choice)
            if len(found) >= limit:
                break
    return found


def _resource(o: Any, getter: str) -> tuple[int, int, int]:
    """(ram bytes, cpus, storage bytes) of the x86_64 (or all-architecture) entry."""
    for r in getattr(o, getter)().get_elements():
        if r.get_architecture() in (ARCH, "all"):
            return r.get_ram(), r.get_n_cpus(), r.get_storage()
    return -1, -1, -1


def defaults(short_id: str) -> OsDefaults:
    """The create form's values for OS `short_id`, with why each was chosen."""
    found = [o for c, o in _all() if c.short_id == short_id]
    if not found:
        raise InvalidInput(f"unknown operating system '{short_id[:MAX_QUERY]}'", field="os")
    o = found[0]
    choice = _choice(o)
    name = choice.name
    reasons = []
    ram, cpus, storage = _resource(o, "get_recommended_resources")
    min_ram, min_cpus, min_storage = _resource(o, "get_minimum_resources")
    if ram > 0 or storage > 0:
        reasons.append(f"Memory and disk: what osinfo-db recommends for {name}.")
    elif min_ram > 0 or min_storage > 0:
        reasons.append(f"Memory and disk: osinfo-db lists only {name}'s minimum.")
    else:
        reasons.append(f"osinfo-db has no memory or disk figures for {name}: common values.")
    memory_mib = (ram if ram > 0 else min_ram) // MIB if max(ram, min_ram) > 0 else 0
    disk = storage if storage > 0 else min_storage
    disk_gib = -(-disk // GIB) if disk > 0 else FALLBACK_DISK_GIB
    vcpus = cpus if cpus > 0 else max(min_cpus, 1)
    devices = {d.get_name() for d in o.get_all_devices(None).get_elements()}
    if devices & {"virtio-block", "virtio1.0-block"}:
        disk_bus: Literal["virtio", "sata"] = "virtio"
        reasons.append(f"Disk on virtio: {name} has its drivers (the fastest bus).")
    else:
        disk_bus = "sata"
        reasons.append(f"Disk on SATA: {name} has no virtio disk driver of its own.")
    nic: Literal["virtio", "e1000", "rtl8139"]
    if devices & {"virtio-net", "virtio1.0-net"}:
        nic = "virtio"
        reasons.append(f"Network card virtio: {name} has its driver.")
    elif devices & {"e1000", "e1000e"}:
        nic = "e1000"
        reasons.append(f"Network card e1000: {name} has no virtio driver but knows Intel's.")
    else:
        nic = "rtl8139"
        reasons.append(f"Network card rtl8139: osinfo-db names no better card {name} knows.")
    firmware: Literal["bios", "uefi"] = "bios"
    for f in o.get_complete_firmware_list(None).get_elements():
        bios = f.get_architecture() == ARCH and f.get_firmware_type() == "bios"
        if bios and not f.is_supported():
            firmware = "uefi"
            reasons.append(f"UEFI firmware: {name} does not boot with BIOS.")
    return OsDefaults(
        os=choice,
        memory_mib=memory_mib or FALLBACK_MEMORY_MIB,
        vcpus=vcpus,
        disk_gib=int(disk_gib),
        disk_bus=disk_bus,
        nic_model=nic,
        firmware=firmware,
        reasons=reasons,
    )
