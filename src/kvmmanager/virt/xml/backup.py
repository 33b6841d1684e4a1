"""``<domainbackup>`` and ``<domaincheckpoint>``: libvirt's backup API (push mode).

Build the request for ``virDomainBackupBegin``::

    b = DomainBackup(mode="push", incremental="kvmm-nightly-20261126-010000")  # or None: full
    b.add(BackupDisk(name="vda", backup="yes", type="file",
                     target_file="/pool/web1-vda.qcow2", driver_type="qcow2"))
    b.add(BackupDisk(name="hdc", backup="no"))                  # a CD-ROM stays out
    cp = DomainCheckpoint(name="kvmm-nightly-20261127-010000")
    cp.add(CheckpointDisk(name="vda", checkpoint="bitmap"))
    dom.backupBegin(b.to_xml(), cp.to_xml(), libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)

Read a checkpoint back (``virDomainCheckpoint.getXMLDesc``)::

    cp = DomainCheckpoint.from_xml(c.getXMLDesc(0))
    cp.parent_name, cp.creation_time, [(d.name, d.bitmap) for d in cp.disks]

Both schemas interleave their top-level elements; the ``<domain>`` copy inside a
checkpoint libvirt reports is kept untouched and not modelled.
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLChildList, XMLObject, XMLProperty


class BackupDisk(XMLObject):
    """``<disks><disk name='vda' backup='yes' type='file'>``: one disk of a push backup."""

    TAG = "disk"

    name = XMLProperty("@name", doc="the domain disk's target dev (vda)")
    backup = XMLProperty("@backup", choices=("yes", "no"))
    type = XMLProperty("@type", choices=("file", "block"))
    # Per-disk override of the backup's kind (libvirt 7.6+): full or incremental since
    # the checkpoint named in `incremental`.
    backup_mode = XMLProperty("@backupmode", choices=("full", "incremental"))
    incremental = XMLProperty("@incremental", doc="checkpoint this disk's increment starts at")
    target_file = XMLProperty("target/@file", doc="where the backup is written (push mode)")
    target_dev = XMLProperty("target/@dev", doc="block device target (type='block')")
    driver_type = XMLProperty("driver/@type", choices=("raw", "qcow2"))


class DomainBackup(XMLObject):
    TAG = "domainbackup"

    mode = XMLProperty("@mode", choices=("push", "pull"))
    incremental = XMLProperty("incremental", doc="the checkpoint an incremental backup starts at")
    disks = XMLChildList(BackupDisk, "disks/disk")


class CheckpointDisk(XMLObject):
    """``<disks><disk name='vda' checkpoint='bitmap'>``: track this disk's changes."""

    TAG = "disk"

    name = XMLProperty("@name", doc="target dev (vda) or source path of the domain disk")
    checkpoint = XMLProperty("@checkpoint", choices=("bitmap", "no"))
    bitmap = XMLProperty("@bitmap", doc="the qcow2 dirty bitmap's name (reported)")
    size = XMLProperty("@size", kind=int, doc="bytes changed since (with SIZE flag)")


class DomainCheckpoint(XMLObject):
    TAG = "domaincheckpoint"

    name = XMLProperty("name")
    description = XMLProperty("description")
    parent_name = XMLProperty("parent/name", doc="reported: the previous checkpoint")
    creation_time = XMLProperty("creationTime", kind=int, doc="Unix time (reported)")
    disks = XMLChildList(CheckpointDisk, "disks/disk")
