"""backups.rules: kind choice, chain-preserving retention, qcow2 header check, disk pick;
and the backup/checkpoint XML validating against libvirt's schemas."""

from __future__ import annotations

import struct
from datetime import datetime

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.backups import rules as br
from kvmmanager.services.backups.take import Target, VmState, backup_xml, checkpoint_xml
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml, validator_available

V3 = br.DiskPlan("vda", "/p/a.qcow2", "qcow2", "1.1", 1 << 20)


def prev(length: int = 1, cp: str | None = "cp1") -> br.Previous:
    return br.Previous(7, "full", cp, length, ("vda",))


def test_choose_kind() -> None:
    cps = {"cp1"}
    assert br.choose_kind("auto", 3, None, None, cps, ("vda",))[0] == "full"
    kind, parent, _ = br.choose_kind("auto", 3, None, prev(2), cps, ("vda",))
    assert kind == "incremental" and parent is not None and parent.id == 7
    assert br.choose_kind("auto", 3, None, prev(3), cps, ("vda",))[2] == "a full backup every 3"
    assert "gone" in br.choose_kind("auto", 3, None, prev(1, "cpX"), cps, ("vda",))[2]
    assert "disks changed" in br.choose_kind("auto", 3, None, prev(), cps, ("vda", "vdb"))[2]
    assert br.choose_kind("full", 3, None, prev(), cps, ("vda",))[0] == "full"
    with pytest.raises(InvalidInput, match="qcow2 v2"):
        br.choose_kind("incremental", 3, "disk vda is a qcow2 v2 image", prev(), cps, ("vda",))
    with pytest.raises(InvalidInput) as e:
        br.choose_kind("sometimes", 3, None, None, cps, ("vda",))
    assert e.value.field == "kind"


def test_incremental_refusal() -> None:
    assert br.incremental_refusal([V3]) is None
    raw = br.DiskPlan("vdb", "/p/b.img", "raw")
    assert "raw" in (br.incremental_refusal([V3, raw]) or "")
    v2 = br.DiskPlan("vda", "/p/a.qcow2", "qcow2", "0.10")
    assert "compat 0.10" in (br.incremental_refusal([v2]) or "")


def test_prune_keeps_whole_chains() -> None:
    # 1 <- 2 <- 3 (chain), 4 (full) <- 5
    rows = [{"id": i, "parent_id": p} for i, p in ((1, None), (2, 1), (3, 2), (4, None), (5, 4))]
    gone, kept = br.prune(rows, {3, 5})
    assert gone == [] and kept == {1, 2, 3, 4, 5}
    gone, kept = br.prune(rows, {5})
    assert gone == [3, 2, 1] and kept == {4, 5}  # newest first: children before parents


def header(version: int = 3, backing: bytes = b"", size: int = 1 << 20) -> bytes:
    off = 104 if backing else 0
    h = b"QFI\xfb" + struct.pack(">IQIIQ", version, off, len(backing), 16, size)
    h = h.ljust(104, b"\0") + backing
    return h.ljust(512, b"\0")


def test_qcow2_header() -> None:
    h = br.qcow2_header(header(backing=b"/p/full.qcow2"))
    assert h["problems"] == [] and h["version"] == 3 and h["cluster_size"] == 65536
    assert h["backing_file"] == "/p/full.qcow2" and h["virtual_size"] == 1 << 20
    assert "bad magic" in br.qcow2_header(b"\0" * 512)["problems"][0]
    assert "version" in br.qcow2_header(header(version=9))["problems"][0]
    bad = bytearray(header())
    bad[20:24] = struct.pack(">I", 30)
    assert "cluster_bits" in br.qcow2_header(bytes(bad))["problems"][0]


def test_backup_disks_and_names() -> None:
    x = Domain.from_xml(
        "<domain type='qemu'><name>w</name><memory>65536</memory><os><type>hvm</type></os>"
        "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='/p/w.qcow2'/><target dev='vda'/></disk>"
        "<disk type='file' device='cdrom'><source file='/p/a.iso'/><target dev='hdc'/>"
        "<readonly/></disk></devices></domain>"
    )
    disks, skipped = br.backup_disks(x)
    assert [(d.target, d.format) for d in disks] == [("vda", "qcow2")] and skipped == ["hdc"]
    when = datetime(2026, 11, 26, 1, 2, 3)
    first, second, *rest = br.stamps(when)
    assert (first, second) == ("20261126-010203", "20261126-010203-2")
    assert len(rest) == br.MAX_SAME_SECOND - 2
    assert br.volume_name("w", "nightly", first, "vda") == "w-nightly-20261126-010203-vda.qcow2"
    assert len(br.volume_name("x" * 300, "p", second, "vda")) == 128
    assert br.checkpoint_name("nightly", second) == "kvmm-nightly-20261126-010203-2"


@pytest.mark.skipif(not validator_available(), reason="virt-xml-validate not installed")
def test_generated_xml_validates() -> None:
    state = VmState("u", "w", "", True, True, [V3], ["hdc"], set(), None)
    t = Target("vda", "w-vda.qcow2", "/p/w-vda.qcow2", 1 << 20)
    validate_xml(backup_xml(state, [t], None), "backup")
    validate_xml(backup_xml(state, [t], "kvmm-p-20261126-010203"), "backup")
    validate_xml(checkpoint_xml(state, "kvmm-p-20261126-010203", "by p"), "checkpoint")
