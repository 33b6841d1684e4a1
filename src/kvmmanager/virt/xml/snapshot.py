"""``<domainsnapshot>``: what to snapshot when creating one, and what libvirt reports back.

Build the request for ``virDomainSnapshotCreateXML``::

    snap = DomainSnapshot(name="before-upgrade", description="apt full-upgrade")
    snap.memory_snapshot = "no"                       # disk-only
    snap.add(SnapshotDisk(name="vda", snapshot="external"))
    snap.add(SnapshotDisk(name="sda", snapshot="no"))   # leave the CD-ROM out
    dom.snapshotCreateXML(snap.to_xml(), flags)

Read one back (``virDomainSnapshot.getXMLDesc``)::

    snap = DomainSnapshot.from_xml(s.getXMLDesc(0))
    snap.parent_name, snap.state, snap.creation_time, [d.source_file for d in snap.disks]

The schema interleaves the top-level elements, so their order does not matter; the
embedded ``<domain>`` copy is kept untouched and not modelled here.
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLChildList, XMLObject, XMLProperty

SNAPSHOT_KINDS = ("internal", "external", "no", "manual")
SNAPSHOT_STATES = (
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "pmsuspended",
    "disk-snapshot",
    "nostate",
)


class SnapshotDisk(XMLObject):
    """``<disks><disk name='vda' snapshot='external'>``: one disk's part of a snapshot."""

    TAG = "disk"

    name = XMLProperty("@name", doc="target dev (vda) or source path of the domain disk")
    snapshot = XMLProperty("@snapshot", choices=SNAPSHOT_KINDS)
    type = XMLProperty("@type", choices=("file", "block", "network"))
    driver_type = XMLProperty("driver/@type", doc="format of the new overlay (qcow2)")
    source_file = XMLProperty("source/@file", doc="external overlay path")


class DomainSnapshot(XMLObject):
    TAG = "domainsnapshot"

    name = XMLProperty("name")
    description = XMLProperty("description")
    state = XMLProperty("state", choices=SNAPSHOT_STATES, doc="domain state when taken")
    creation_time = XMLProperty("creationTime", kind=int, doc="Unix time")
    parent_name = XMLProperty("parent/name")
    memory_snapshot = XMLProperty("memory/@snapshot", choices=("no", "internal", "external"))
    memory_file = XMLProperty("memory/@file")
    disks = XMLChildList(SnapshotDisk, "disks/disk")

    @property
    def is_external(self) -> bool:
        """Any disk or the memory stored outside the original images."""
        return self.memory_snapshot == "external" or any(
            d.snapshot == "external" for d in self.disks
        )

    @property
    def has_memory(self) -> bool:
        if self.memory_snapshot is not None:
            return bool(self.memory_snapshot != "no")
        # Older XML has no <memory>: the state tells (disk-snapshot = disks only).
        return self.state not in (None, "disk-snapshot", "shutoff")
