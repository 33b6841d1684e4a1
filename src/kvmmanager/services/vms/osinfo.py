"""Operating systems and their recommended VM settings from osinfo-db, the database
virt-manager and Cockpit use (Debian's `osinfo-db` package: XML under /usr/share/osinfo).

The database is read directly, as data: libosinfo's GObject binding would put PyGObject and
pycairo, built from source with compiled extensions, into the manager's package for a
few lookups. What libosinfo adds on top is followed here: an OS inherits the devices and
firmware of the OS it derives from or clones, and its own entries win (`supported="false"`
takes a parent's device or firmware away).

The database is read from libosinfo's three places, later ones winning for the same OS:
the system's (osinfo-db), the local one (/etc/osinfo, where `osinfo-db-import --local`
puts a newer release of the database) and the user's. A distribution's osinfo-db lags
behind the OSes released after it (Debian 12's knows no Debian 12): `nearest` says so and
offers the newest of the family the query names, and a generic Linux.

`search` finds OSes by name, short id or codename; `defaults` turns one OS's entry into the create
form's values (memory, vCPUs, disk size, disk bus, NIC model, firmware), each with the
reason a person is shown. Without osinfo-db, `available()` is False and the create flow
says so.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lxml import etree

from kvmmanager.core.errors import InvalidInput, Unsupported

ARCH = "x86_64"
MAX_RESULTS = 25
MAX_QUERY = 64
MIB = 1024 * 1024
GIB = 1024 * MIB
# When the database has no figure for an OS (old or exotic ones).
FALLBACK_MEMORY_MIB, FALLBACK_DISK_GIB = 1024, 10
LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# An <iso> entry's fields, in MediaPattern's order.
ISO_FIELDS = ("volume-id", "system-id", "publisher-id", "application-id")
# Where Debian's osinfo-db puts it; OSINFO_SYSTEM_DIR is libosinfo's own override.
DEFAULT_DIR = "/usr/share/osinfo"
# libosinfo's local database (OSINFO_LOCAL_DIR overrides it): `osinfo-db-import --local`.
LOCAL_DIR = "/etc/osinfo"
# What a person picks for a Linux the database does not know (libosinfo's generic entries).
GENERIC_PREFIX = "linux20"
# A system package's data, but parsed as carefully as anything else.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass(frozen=True)
class OsChoice:
    short_id: str
    name: str
    vendor: str
    released: str
    # osinfo-db's id, a URI ("http://debian.org/debian/11"): what a domain's libosinfo
    # metadata names (virt/xml/libosinfo.py).
    os_id: str = ""
    codename: str = ""  # "bullseye"


@dataclass(frozen=True)
class NotKnown:
    """No OS matched a query: what the database is, and what to offer instead."""

    db_version: str  # the newest VERSION of the databases read ("20221203")
    family: list[OsChoice]  # the newest of the family the query names ("debian 12": Debian)
    generic: list[OsChoice]  # the newest generic Linux


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


@dataclass(frozen=True)
class Resources:
    ram: int = -1
    cpus: int = -1
    storage: int = -1


@dataclass(frozen=True)
class MediaPattern:
    """One install medium's ISO identity in osinfo-db: regexes (None: any) that the
    primary volume descriptor's fields must match (services/vms/iso_detect.py)."""

    arch: str
    volume_id: str | None
    system_id: str | None
    publisher_id: str | None
    application_id: str | None


@dataclass
class OsEntry:
    choice: OsChoice
    parents: list[str]
    # device id -> supported; (arch, type) -> supported
    devices: dict[str, bool]
    firmware: dict[tuple[str, str], bool]
    recommended: Resources | None  # None: inherited
    minimum: Resources | None
    media: list[MediaPattern] = field(default_factory=list)


@dataclass(frozen=True)
class Database:
    oses: dict[str, OsEntry]  # by os id
    device_names: dict[str, str]  # device id -> name ("virtio-block")
    version: str = ""


def _text(el: etree._Element, tag: str) -> str:
    """The untranslated text of child `tag` (the one without xml:lang)."""
    for child in el.findall(tag):
        if child.get(LANG) is None:
            return (child.text or "").strip()
    return ""


def _int(el: etree._Element | None, tag: str) -> int:
    if el is None:
        return -1
    try:
        return int(_text(el, tag) or -1)
    except ValueError:
        return -1


def _resources(os_el: etree._Element, kind: str) -> Resources | None:
    """The x86_64 (else all-architecture) `kind` ("recommended"/"minimum") figures; None
    when the entry says to inherit them from the OS it derives from."""
    for arch in (ARCH, "all"):
        for res in os_el.findall("resources"):
            if res.get("arch") != arch:
                continue
            if res.get("inherit") == "true":
                return None
            part = res.find(kind)
            if part is not None:
                return Resources(_int(part, "ram"), _int(part, "n-cpus"), _int(part, "storage"))
    return Resources()


def _media(os_el: etree._Element) -> list[MediaPattern]:
    out = []
    for medium in os_el.findall("media"):
        iso = medium.find("iso")
        if iso is None:
            continue
        fields = [_text(iso, tag) or None for tag in ISO_FIELDS]
        if any(fields):  # an entry that names nothing would match every ISO
            out.append(MediaPattern(medium.get("arch", "all"), *fields))
    return out


def _entry(os_el: etree._Element) -> OsEntry | None:
    short_id = _text(os_el, "short-id")
    if not short_id:
        return None
    devices = {
        d.get("id", ""): d.get("supported") != "false"
        for d in os_el.findall("devices/device")
        if d.get("id")
    }
    firmware = {
        (f.get("arch", ""), f.get("type", "")): f.get("supported") != "false"
        for f in os_el.findall("firmware")
    }
    return OsEntry(
        choice=OsChoice(
            short_id=short_id,
            name=_text(os_el, "name") or short_id,
            vendor=_text(os_el, "vendor"),
            released=_text(os_el, "release-date"),
            os_id=os_el.get("id", ""),
            codename=_text(os_el, "codename"),
        ),
        parents=[
            p.get("id", "")
            for p in [*os_el.findall("derives-from"), *os_el.findall("clones")]
            if p.get("id")
        ],
        devices=devices,
        firmware=firmware,
        recommended=_resources(os_el, "recommended"),
        minimum=_resources(os_el, "minimum"),
        media=_media(os_el),
    )


def _roots() -> list[Path]:
    """libosinfo's database folders in its order (system, local, user): a later one's
    entry for the same OS wins."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [
        Path(os.environ.get("OSINFO_SYSTEM_DIR") or DEFAULT_DIR),
        Path(os.environ.get("OSINFO_LOCAL_DIR") or LOCAL_DIR),
        Path(os.environ.get("OSINFO_USER_DIR") or config / "osinfo"),
    ]


@functools.cache
def _db() -> Database:
    roots = [root for root in _roots() if (root / "os").is_dir()]
    if not roots:
        raise Unsupported(
            f"osinfo-db is not installed here (no {_roots()[0] / 'os'}): install Debian's "
            "osinfo-db (scripts/setup does)",
            field="os",
        )
    oses: dict[str, OsEntry] = {}
    names: dict[str, str] = {}
    versions: list[str] = []
    for root in roots:
        for path in sorted((root / "os").rglob("*.xml")):
            for os_el in etree.parse(str(path), _PARSER).getroot().findall("os"):
                entry = _entry(os_el)
                if entry is not None and os_el.get("id"):
                    oses[os_el.get("id", "")] = entry
        for path in sorted((root / "device").rglob("*.xml")):
            for dev in etree.parse(str(path), _PARSER).getroot().findall("device"):
                if dev.get("id"):
                    names[dev.get("id", "")] = _text(dev, "name")
        version = root / "VERSION"
        if version.is_file():
            versions.append(version.read_text(errors="replace").strip()[:32])
    return Database(oses=oses, device_names=names, version=max(versions, default=""))


def entries() -> dict[str, OsEntry]:
    """Every OS of the database by its id (Unsupported without osinfo-db)."""
    return _db().oses


def available() -> bool:
    try:
        _db()
    except Unsupported:
        return False
    return True


@functools.cache
def _all() -> tuple[tuple[OsChoice, str], ...]:
    items = [(e.choice, os_id) for os_id, e in _db().oses.items()]
    # Newest first: the OS a person installs today is usually a recent one.
    items.sort(key=lambda c: (c[0].released, c[0].name), reverse=True)
    return tuple(items)


def _own_or_inherited(os_id: str, kind: str, seen: frozenset[str] = frozenset()) -> Resources:
    """Resources `kind` of OS `os_id`, from the OS it derives from when it says inherit."""
    entry = _db().oses.get(os_id)
    if entry is None or os_id in seen:
        return Resources()
    own: Resources | None = getattr(entry, kind)
    if own is not None:
        return own
    for parent in entry.parents:
        return _own_or_inherited(parent, kind, seen | {os_id})
    return Resources()


def _inherited(os_id: str, pick: str, seen: frozenset[str] = frozenset()) -> dict:
    """`pick` ("devices" or "firmware") of OS `os_id` with what it inherits from the OSes
    it derives from or clones; its own entries win."""
    entry = _db().oses.get(os_id)
    if entry is None or os_id in seen:
        return {}
    merged: dict = {}
    for parent in entry.parents:
        merged.update(_inherited(parent, pick, seen | {os_id}))
    merged.update(getattr(entry, pick))
    return merged


def search(query: str, limit: int = MAX_RESULTS) -> list[OsChoice]:
    """OSes whose name, short id, codename or vendor holds every word of `query` (any
    case)."""
    words = query.strip().lower()[:MAX_QUERY].split()
    found = []
    for choice, _ in _all():
        text = f"{choice.name} {choice.short_id} {choice.codename} {choice.vendor}".lower()
        if all(w in text for w in words):
            found.append(choice)
            if len(found) >= limit:
                break
    return found


def nearest(query: str, limit: int = 3) -> NotKnown:
    """For a query that found nothing ("debian 12", "debian12", "bookworm"): the newest
    OSes of the family its words name without their version ("debian"), and the newest
    generic Linux."""
    words = re.findall(r"[a-z]+", query.strip().lower()[:MAX_QUERY])
    family = search(" ".join(words), limit) if words else []
    generic = [c for c, _ in _all() if c.short_id.startswith(GENERIC_PREFIX)][:1]
    return NotKnown(db_version=_db().version, family=family, generic=generic)


def by_id(os_id: str) -> OsChoice | None:
    """The OS a domain's libosinfo metadata names; None when osinfo-db (or this version
    of it) does not know it."""
    try:
        entry = _db().oses.get(os_id)
    except Unsupported:
        return None
    return entry.choice if entry is not None else None


def _os_id(short_id: str) -> str:
    found = [os_id for c, os_id in _all() if c.short_id == short_id]
    if not found:
        raise InvalidInput(f"unknown operating system '{short_id[:MAX_QUERY]}'", field="os")
    return found[0]


def choice(short_id: str) -> OsChoice:
    """The OS of short id `short_id` ("debian11"); InvalidInput on field `os` if unknown."""
    return _db().oses[_os_id(short_id)].choice


def defaults(short_id: str) -> OsDefaults:
    """The create form's values for OS `short_id`, with why each was chosen."""
    os_id = _os_id(short_id)
    entry = _db().oses[os_id]
    choice = entry.choice
    name = choice.name
    reasons = []
    rec = _own_or_inherited(os_id, "recommended")
    low = _own_or_inherited(os_id, "minimum")
    ram, cpus, storage = rec.ram, rec.cpus, rec.storage
    min_ram, min_cpus, min_storage = low.ram, low.cpus, low.storage
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
    names = _db().device_names
    devices = {names.get(dev_id, "") for dev_id, ok in _inherited(os_id, "devices").items() if ok}
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
    if _inherited(os_id, "firmware").get((ARCH, "bios")) is False:
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
