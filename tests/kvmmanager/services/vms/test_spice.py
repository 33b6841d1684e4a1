"""SPICE at create and edit, and the .vv ticket, on libvirt's test driver."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import libvirt
import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, Unsupported
from kvmmanager.services.vms import spice as spice_mod
from kvmmanager.services.vms.builder import BuildInputs, HostFacts, VmSpec, build_domain
from kvmmanager.services.vms.spec import validate_spec
from kvmmanager.virt.xml.devices import Graphics, parse_device
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml, validator_available

NAME = "kvmm-t-spice"


@pytest.fixture
async def spice_vm(manager: Any) -> Any:
    await manager.registry.get("local").wait_connected()
    await manager.vms.create("local", VmSpec(name=NAME, memory_mib=128, spice=True))
    yield manager
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(NAME):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        conn.close()


async def _xml(m: Any) -> Domain:
    return Domain.from_xml(await m.vms.xml("local", NAME, inactive=True))


def test_spice_domain_keeps_vnc_and_validates() -> None:
    dom = build_domain(VmSpec(name=NAME, spice=True), BuildInputs("qemu", "x86_64", []))
    types = [g.type for g in dom.devices.graphics]
    assert types == ["vnc", "spice"]
    assert [c.type for c in dom.devices.channels_named("com.redhat.spice.0")] == ["spicevmc"]
    assert [v.model_type for v in dom.devices.videos] == ["qxl"]
    if validator_available():
        validate_xml(dom.to_xml(), "domain")
    plain = build_domain(VmSpec(name=NAME), BuildInputs("qemu", "x86_64", []))
    assert [g.type for g in plain.devices.graphics] == ["vnc"]
    assert [v.model_type for v in plain.devices.videos] == ["vga"]


def test_spice_refused_when_domain_capabilities_lack_it() -> None:
    facts = HostFacts(max_vcpus=2, memory_mib=1024, pools=set(), networks=set())
    facts.graphics = {"vnc", "sdl"}
    with pytest.raises(Unsupported, match=r"no SPICE support .* graphics: sdl, vnc") as exc:
        validate_spec(VmSpec(name=NAME, spice=True), facts)
    assert exc.value.field == "spice"
    validate_spec(VmSpec(name=NAME), facts)  # without SPICE the same host is fine
    facts.graphics = {"vnc", "spice"}
    validate_spec(VmSpec(name=NAME, spice=True), facts)


async def test_create_and_switch_displays(spice_vm: Any) -> None:
    m = spice_vm
    xml = await _xml(m)
    assert sorted(g.type for g in xml.devices.graphics) == ["spice", "vnc"]
    res = await m.spice.set_graphics("local", NAME, vnc=True, spice=False)
    assert "removed SPICE" in res["message"]
    xml = await _xml(m)
    assert [g.type for g in xml.devices.graphics] == ["vnc"]
    assert not xml.devices.channels_named("com.redhat.spice.0")
    res = await m.spice.set_graphics("local", NAME, vnc=False, spice=True)
    assert "added SPICE" in res["message"] and "removed VNC" in res["message"]
    xml = await _xml(m)
    assert [g.type for g in xml.devices.graphics] == ["spice"]
    assert xml.devices.channels_named("com.redhat.spice.0")
    if validator_available():
        validate_xml(xml.to_xml(), "domain")
    with pytest.raises(InvalidInput, match="at least one display"):
        await m.spice.set_graphics("local", NAME, vnc=False, spice=False)
    res = await m.spice.set_graphics("local", NAME, vnc=False, spice=True)
    assert res["message"] == "nothing to change"


async def test_vv_needs_a_running_vm_and_reports_libvirts_refusal(spice_vm: Any) -> None:
    m = spice_vm
    with pytest.raises(Conflict, match="not running"):
        await m.spice.vv_file("local", NAME)
    await m.vms.action("local", NAME, "start")
    # The test driver cannot update devices: the password cannot be set, so no file.
    with pytest.raises(Unsupported, match=r"refused to set the SPICE password.*not supported"):
        await m.spice.vv_file("local", NAME)
    await m.spice.set_graphics("local", NAME, vnc=True, spice=False)
    await m.vms.action("local", NAME, "destroy")
    await m.vms.action("local", NAME, "start")
    with pytest.raises(Conflict, match="has no SPICE display"):
        await m.spice.vv_file("local", NAME)


def test_vv_file_content() -> None:
    text = spice_mod.render_vv(
        title="web1 (local) - KVM Manager", host="hv1.example.org", port=5901, tls_port=None,
        password="s3cret-Once",
    )  # fmt: skip
    assert text.splitlines() == [
        "[virt-viewer]",
        "type=spice",
        "host=hv1.example.org",
        "port=5901",
        "password=s3cret-Once",
        "delete-this-file=1",
        "title=web1 (local) - KVM Manager",
    ]
    tls = spice_mod.render_vv(title="t", host="h", port=None, tls_port=5902, password="p")
    assert "tls-port=5902" in tls and "port=" not in tls.replace("tls-port", "")
    with pytest.raises(InvalidInput):
        spice_mod.render_vv(title="a\nhost=evil", host="h", port=1, tls_port=None, password="p")


def test_connect_address() -> None:
    addr = spice_mod.connect_address
    assert addr("local", "qemu:///system", "127.0.0.1", {}, "mgr") == "127.0.0.1"
    assert addr("hv", "qemu+ssh://root@hv1/system", "0.0.0.0", {}, "mgr") == "hv1"
    assert addr("local", "qemu:///system", "0.0.0.0", {}, "mgr") == "mgr"
    assert addr("hv", "qemu+ssh://hv1/system", "10.0.0.5", {}, "mgr") == "10.0.0.5"
    assert addr("hv", "qemu+ssh://hv1/system", "127.0.0.1", {"hv": "tunnel"}, "m") == "tunnel"
    with pytest.raises(Conflict, match=r"spice\.addresses"):
        addr("hv", "qemu+ssh://hv1/system", "127.0.0.1", {}, "mgr")


def test_ticket_sets_password_with_expiry() -> None:
    """ticket_blocking against a stand-in domain that records updateDeviceFlags."""
    live = (
        "<domain type='qemu' id='3'><name>x</name><devices>"
        "<graphics type='spice' port='5901' autoport='yes' listen='0.0.0.0'>"
        "<listen type='address' address='0.0.0.0'/></graphics></devices></domain>"
    )

    class Dom:
        calls: list[tuple[str, int]] = []

        def isActive(self) -> bool:
            return True

        def name(self) -> str:
            return "x"

        def XMLDesc(self, flags: int) -> str:
            return live

        def updateDeviceFlags(self, xml: str, flags: int) -> None:
            self.calls.append((xml, flags))

    dom = Dom()
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    gfx, password, expires = spice_mod.ticket_blocking(dom, 300, now)  # type: ignore[arg-type]
    assert gfx.port == 5901 and len(password) >= 16 and expires == "2030-01-01T12:05:00Z"
    xml, flags = dom.calls[0]
    assert flags == libvirt.VIR_DOMAIN_AFFECT_LIVE
    sent = parse_device(xml)
    assert isinstance(sent, Graphics)
    assert sent.passwd == password and sent.passwd_valid_to == "2030-01-01T12:05:00"
    assert sent.listen_address == "0.0.0.0"
    _, second, _ = spice_mod.ticket_blocking(dom, 300, now)  # type: ignore[arg-type]
    assert second != password
