"""Snapshot rules, quiesce choice and the snapshot service on libvirt's test driver.

External snapshots need the real daemon (the test driver refuses DISK_ONLY): see
test_snapshots_libvirtd.py."""

from __future__ import annotations

import uuid
from typing import Any

import libvirt
import pytest

from kvmmanager.core.errors import (
    AgentUnavailable,
    Conflict,
    GuestError,
    InvalidInput,
    NotFound,
    Unsupported,
)
from kvmmanager.services.snapshots import quiesce as qz
from kvmmanager.services.snapshots import rules
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.snapshot import DomainSnapshot
from kvmmanager.virt.xml.validate import validate_xml, validator_available

PREFIX = "kvmm-t-snap-"


def domain(*formats: str, uefi: bool = False, cdrom: bool = True, dtype: str = "test") -> Domain:
    dom = Domain(type=dtype, name=f"{PREFIX}{uuid.uuid4().hex[:8]}", memory=65536, vcpus=1)
    dom.os.os_type = "hvm"
    if uefi:
        dom.os.loader, dom.os.loader_type, dom.os.loader_readonly = "/usr/OVMF.fd", "pflash", True
    for i, fmt in enumerate(formats):
        d = Disk(type="file", device="disk", driver_name="qemu", driver_type=fmt)
        d.source_file, d.target_dev, d.target_bus = (
            f"/tmp/{dom.name}-{i}.img",
            f"vd{'ab'[i]}",
            "virtio",
        )
        dom.devices.add(d)
    if cdrom:
        cd = Disk(type="file", device="cdrom", driver_name="qemu", driver_type="raw")
        cd.target_dev, cd.target_bus, cd.readonly = "sda", "sata", True
        dom.devices.add(cd)
    return dom


def snap(kind: str) -> DomainSnapshot:
    s = DomainSnapshot(name=f"s-{kind}")
    s.memory_snapshot = "no"
    s.add(rules_disk(kind))
    return s


def rules_disk(kind: str) -> Any:
    from kvmmanager.virt.xml.snapshot import SnapshotDisk

    return SnapshotDisk(name="vda", snapshot=kind)


# ---- rules ----------------------------------------------------------------------------


def test_auto_kind_internal_for_qcow2_and_memory_when_running() -> None:
    p = rules.plan(domain("qcow2"), running=True, existing=[])
    assert (p.kind, p.memory) == ("internal", True)
    assert p.disks == {"vda": "internal", "sda": "no"}  # the CD-ROM is left out
    p = rules.plan(domain("qcow2"), running=False, existing=[])
    assert (p.kind, p.memory) == ("internal", False)


def test_auto_kind_external_for_raw_and_uefi() -> None:
    assert rules.plan(domain("raw"), running=True, existing=[]).kind == "external"
    assert rules.plan(domain("qcow2", uefi=True), running=False, existing=[]).kind == "external"
    p = rules.plan(domain("qcow2"), running=True, existing=[snap("external")])
    assert (p.kind, p.memory, p.disk_only) == ("external", False, True)


def test_refusals_name_the_reason_and_field() -> None:
    with pytest.raises(Unsupported, match=r"vda is raw.*qcow2") as e:
        rules.plan(domain("raw"), running=False, existing=[], kind="internal")
    assert e.value.field == "kind"
    with pytest.raises(Unsupported, match="pflash"):
        rules.plan(domain("qcow2", uefi=True), running=False, existing=[], kind="internal")
    with pytest.raises(Unsupported, match="always includes its memory") as e:
        rules.plan(domain("qcow2"), running=True, existing=[], kind="internal", memory=False)
    assert e.value.field == "memory"
    with pytest.raises(InvalidInput, match="not running") as e:
        rules.plan(domain("qcow2"), running=False, existing=[], memory=True)
    assert e.value.field == "memory"
    with pytest.raises(Unsupported, match="disk-only"):
        rules.plan(domain("qcow2"), running=True, existing=[], kind="external", memory=True)
    with pytest.raises(Unsupported, match="nothing to snapshot"):
        rules.plan(domain(), running=True, existing=[])
    with pytest.raises(InvalidInput) as e:
        rules.plan(domain("qcow2"), running=True, existing=[], kind="both")
    assert e.value.field == "kind"


def test_internal_and_external_are_never_mixed() -> None:
    with pytest.raises(Conflict, match="external snapshots"):
        rules.plan(domain("qcow2"), running=True, existing=[snap("external")], kind="internal")
    with pytest.raises(Conflict, match="internal snapshots"):
        rules.plan(domain("qcow2"), running=True, existing=[snap("internal")], kind="external")


def test_revert_of_external_refused_before_libvirt_9_9() -> None:
    with pytest.raises(Unsupported, match=r"libvirt 9\.0 cannot revert external"):
        rules.check_revert(snap("external"), 9_000_000)
    rules.check_revert(snap("external"), 9_009_000)
    rules.check_revert(snap("internal"), 9_000_000)


@pytest.mark.parametrize("bad", ["", "-x", "a/b", "a b", "x" * 65, "../etc"])
def test_bad_snapshot_names(bad: str) -> None:
    with pytest.raises(InvalidInput) as e:
        rules.validate_name(bad)
    assert e.value.field == "name"


@pytest.mark.skipif(not validator_available(), reason="virt-xml-validate missing")
@pytest.mark.parametrize(
    ("formats", "running", "kind"),
    [(("qcow2",), True, None), (("qcow2", "raw"), False, "external"), (("qcow2",), False, None)],
)
def test_request_xml_validates(formats: tuple[str, ...], running: bool, kind: str | None) -> None:
    p = rules.plan(domain(*formats), running=running, existing=[], kind=kind)
    xml = p.to_xml("s1", "a description")
    validate_xml(xml, "domainsnapshot")
    back = DomainSnapshot.from_xml(xml)
    assert back.name == "s1" and back.is_external == (p.kind == "external")
    assert back.has_memory == p.memory


# ---- quiesce ----------------------------------------------------------------------------


def test_quiesce_choice() -> None:
    c = qz.choose("auto", None, False, True, "connected", "absent")
    assert (c.method, c.level) == ("not-needed", "full-state")
    c = qz.choose("auto", None, False, False, "absent", "absent")
    assert (c.method, c.level) == ("not-needed", "offline")
    assert qz.choose("auto", None, True, False, "connected", "connected").method == "kvmm-agent"
    c = qz.choose("auto", None, True, False, "absent", "connected")
    assert (c.method, c.level) == ("qemu-ga", "quiesced")
    c = qz.choose("auto", None, True, False, "absent", "absent")
    assert (c.method, c.level) == ("none", "crash-consistent") and "no guest agent" in c.message
    c = qz.choose("auto", "never", True, False, "connected", "connected")
    assert c.method == "none" and "policy" in c.message
    c = qz.choose("never", None, True, False, "connected", "connected")
    assert c.method == "none" and "request" in c.message
    # An explicit require beats the VM's 'never' policy but needs an agent.
    assert qz.choose("require", "never", True, False, "connected", "absent").method == "kvmm-agent"
    with pytest.raises(AgentUnavailable) as e:
        qz.choose("require", None, True, False, "absent", "absent")
    assert e.value.field == "quiesce"
    with pytest.raises(InvalidInput):
        qz.choose("sometimes", None, True, False, "absent", "absent")


async def test_frozen_freezes_takes_and_thaws_in_order() -> None:
    calls: list[Any] = []

    async def freeze(limit: float) -> None:
        calls.append(("freeze", limit))

    async def thaw() -> None:
        calls.append("thaw")

    async def take() -> str:
        calls.append("take")
        return "snap"

    c = qz.choose("auto", None, True, False, "connected", "absent")
    assert await qz.frozen(c, freeze, thaw, take) == "snap"
    assert calls == [("freeze", qz.FREEZE_LIMIT_SECONDS), "take", "thaw"]
    assert c.level == "quiesced" and c.frozen_seconds is not None
    assert "thawed by the manager" in c.message


async def test_frozen_thaws_when_the_snapshot_fails_and_survives_a_failed_thaw() -> None:
    thawed: list[bool] = []

    async def freeze(limit: float) -> None:
        return None

    async def thaw() -> None:
        thawed.append(True)
        raise GuestError("agent went away")

    async def take() -> None:
        raise Conflict("libvirt said no")

    c = qz.choose("auto", None, True, False, "connected", "absent")
    with pytest.raises(Conflict):
        await qz.frozen(c, freeze, thaw, take)
    assert thawed == [True]

    async def ok() -> str:
        return "snap"

    c = qz.choose("auto", None, True, False, "connected", "absent")
    assert await qz.frozen(c, freeze, thaw, ok) == "snap"
    assert "thaws by itself" in c.message


async def test_frozen_past_the_limit_is_reported_crash_consistent(monkeypatch) -> None:
    monkeypatch.setattr(qz, "FREEZE_LIMIT_SECONDS", 0)

    async def nothing(*a: Any) -> None:
        return None

    c = qz.choose("auto", None, True, False, "connected", "absent")
    await qz.frozen(c, nothing, nothing, nothing)
    assert c.level == "crash-consistent" and "freeze limit" in c.message


# ---- the service on the test driver ------------------------------------------------------


@pytest.fixture
async def vm(manager: Any) -> Any:
    hc = manager.registry.get("local")
    await hc.wait_connected(30)
    xml = domain("qcow2").to_xml()
    dom = await hc.run(lambda: hc.conn.defineXML(xml))
    name = await hc.run(dom.name)
    try:
        yield name
    finally:

        def cleanup() -> None:
            d = hc.conn.lookupByName(name)
            if d.isActive():
                d.destroy()
            d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

        await hc.run(cleanup)


async def test_service_create_list_tree_revert_delete(manager: Any, vm: str) -> None:
    svc = manager.snapshots
    off = await svc.create("local", vm, name="off", description="stopped")
    assert off["kind"] == "internal" and not off["memory"]
    assert off["consistency"]["level"] == "offline"
    await manager.vms.action("local", vm, "start")
    on = await svc.create("local", vm, name="on")
    assert on["memory"] and on["parent"] == "off"
    assert on["consistency"]["level"] == "full-state"
    auto = await svc.create("local", vm)
    assert auto["name"].startswith("snap-") and auto["parent"] == "on"

    listed = await svc.list("local", vm)
    assert [s["name"] for s in listed["snapshots"]][:2] == ["off", "on"]
    assert listed["current"] == auto["name"]
    assert listed["tree"] == [
        {
            "name": "off",
            "children": [{"name": "on", "children": [{"name": auto["name"], "children": []}]}],
        }
    ]

    r = await svc.revert("local", vm, "off")
    assert not r["running"]
    assert (await svc.list("local", vm))["current"] == "off"
    # A second branch off 'off': the tree forks.
    await svc.create("local", vm, name="branch")
    tree = (await svc.list("local", vm))["tree"]
    assert sorted(c["name"] for c in tree[0]["children"]) == ["branch", "on"]

    d = await svc.delete("local", vm, "on", children=True)
    assert d["deleted"] == ["on", auto["name"]]
    await svc.delete("local", vm, "off")
    listed = await svc.list("local", vm)
    assert [s["name"] for s in listed["snapshots"]] == ["branch"]
    assert listed["tree"] == [{"name": "branch", "children": []}]


async def test_service_bad_input(manager: Any, vm: str) -> None:
    svc = manager.snapshots
    await svc.create("local", vm, name="one")
    with pytest.raises(Conflict) as e:
        await svc.create("local", vm, name="one")
    assert e.value.field == "name"
    with pytest.raises(NotFound) as e:
        await svc.revert("local", vm, "nope")
    assert e.value.field == "name"
    with pytest.raises(NotFound):
        await svc.delete("local", vm, "nope")
    with pytest.raises(NotFound) as e:
        await svc.list("local", f"{PREFIX}missing")
    assert e.value.field == "vm"
    with pytest.raises(InvalidInput) as e:
        await svc.create("local", vm, name="two", quiesce="maybe")
    assert e.value.field == "quiesce"
    with pytest.raises(InvalidInput):
        await svc.create("local", vm, name="bad name")
    with pytest.raises(InvalidInput) as e:
        await svc.set_quiesce_policy("local", vm, "always")
    assert e.value.field == "policy"


async def test_quiesce_policy_is_kept_in_the_domain_metadata(manager: Any, vm: str) -> None:
    svc = manager.snapshots
    assert (await svc.list("local", vm))["quiesce_policy"] == "auto"
    await svc.set_quiesce_policy("local", vm, "never")
    assert (await svc.list("local", vm))["quiesce_policy"] == "never"
    xml = Domain.from_xml(await manager.vms.xml("local", vm, inactive=True))
    assert xml.manager_metadata.agent_quiesce == "never"
    await svc.set_quiesce_policy("local", vm, "auto")
    assert (await svc.list("local", vm))["quiesce_policy"] == "auto"


def test_freezable_skips_read_only_media_and_pseudo_devices() -> None:
    fs = [
        {"mount_point": "/", "device": "/dev/vda1", "fs_type": "ext4"},
        {"mount_point": "/data", "device": "/dev/vdb", "fs_type": "xfs"},
        {"mount_point": "/mnt/cdrom", "device": "/dev/sr0", "fs_type": "iso9660"},
        {"mount_point": "/run", "device": "tmpfs", "fs_type": "tmpfs"},
    ]
    assert qz.freezable(fs) == ["/", "/data"]


async def test_failed_freeze_degrades_to_crash_consistent_unless_required() -> None:
    taken: list[bool] = []

    async def freeze(limit: float) -> None:
        raise GuestError("freezing /x failed: Operation not supported")

    async def thaw() -> None:
        raise AssertionError("nothing was frozen")

    async def take() -> str:
        taken.append(True)
        return "snap"

    c = qz.choose("auto", None, True, False, "connected", "absent")
    assert await qz.frozen(c, freeze, thaw, take) == "snap"
    assert (c.method, c.level) == ("none", "crash-consistent")
    assert "could not freeze" in c.message and "not supported" in c.message
    c = qz.choose("require", None, True, False, "connected", "absent")
    with pytest.raises(GuestError):
        await qz.frozen(c, freeze, thaw, take, required=True)
    assert taken == [True]
