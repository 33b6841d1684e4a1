"""passt port forwards: the XML edit (validated against libvirt's schema) and the refusals
on libvirt's test driver."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unsupported
from kvmmanager.services.networks.port_forwards import (
    ForwardRule,
    add_forward,
    forwards_of,
    remove_forward,
)
from kvmmanager.services.vms.builder import BuildInputs, NicSpec, VmSpec, build_domain
from kvmmanager.virt.xml.devices import Interface
from kvmmanager.virt.xml.validate import validate_xml, validator_available

NAME = "kvmm-t-pfwd"
MAC = "52:54:00:aa:bb:01"


def _passt_domain() -> Any:
    dom = build_domain(VmSpec(name=NAME, nics=[NicSpec(user=True, mac=MAC)]),
                       BuildInputs("qemu", "x86_64", [], passt=True))  # fmt: skip
    return dom


def test_add_and_remove_forwards_in_the_xml() -> None:
    dom = _passt_domain()
    nic = add_forward(dom, None, ForwardRule(proto="tcp", host_port=2222, guest_port=22))
    add_forward(dom, MAC, ForwardRule(proto="tcp", host_port=8000, host_port_end=8009))
    add_forward(dom, None, ForwardRule(proto="udp", host_port=5353, address="127.0.0.1"))
    assert forwards_of(nic) == [
        {"proto": "tcp", "address": None, "host_port": 2222, "host_port_end": None,
         "guest_port": 22, "exclude": False},
        {"proto": "tcp", "address": None, "host_port": 8000, "host_port_end": 8009,
         "guest_port": None, "exclude": False},
        {"proto": "udp", "address": "127.0.0.1", "host_port": 5353, "host_port_end": None,
         "guest_port": None, "exclude": False},
    ]  # fmt: skip
    assert len(nic.port_forwards) == 2  # one <portForward> per protocol/address
    if validator_available():
        validate_xml(dom.to_xml(), "domain")
    with pytest.raises(Conflict, match="8000-8009 is already forwarded"):
        add_forward(dom, None, ForwardRule(proto="tcp", host_port=8005))
    add_forward(dom, None, ForwardRule(proto="udp", host_port=8005))  # other protocol: fine
    remove_forward(dom, None, "udp", 5353)
    remove_forward(dom, None, "udp", 8005)
    assert [f.proto for f in nic.port_forwards] == ["tcp"]
    with pytest.raises(NotFound):
        remove_forward(dom, None, "udp", 5353)
    if validator_available():
        validate_xml(dom.to_xml(), "domain")


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (ForwardRule(proto="tcp", host_port=0), "host_port"),
        (ForwardRule(proto="tcp", host_port=70000), "host_port"),
        (ForwardRule(proto="tcp", host_port=100, host_port_end=99), "host_port_end"),
        (
            ForwardRule(proto="tcp", host_port=100, host_port_end=200, guest_port=65500),
            "guest_port",
        ),
        (ForwardRule(proto="sctp", host_port=100), "proto"),  # type: ignore[arg-type]
        (ForwardRule(proto="tcp", host_port=100, address="example.org"), "address"),
    ],
)
def test_bad_rules_name_the_field(rule: ForwardRule, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        add_forward(_passt_domain(), None, rule)
    assert exc.value.field == field


def test_other_nics_are_refused_with_the_supported_way() -> None:
    dom = build_domain(VmSpec(name=NAME, nics=[NicSpec(network="default", mac=MAC)]),
                       BuildInputs("qemu", "x86_64", []))  # fmt: skip
    with pytest.raises(Unsupported, match=r"docs/operations\.md") as exc:
        add_forward(dom, None, ForwardRule(proto="tcp", host_port=2222))
    assert "network default" in exc.value.message
    slirp = build_domain(VmSpec(name=NAME), BuildInputs("qemu", "x86_64", []))
    slirp.devices.add(Interface(type="user", model="virtio"))
    with pytest.raises(Unsupported, match="slirp"):
        add_forward(slirp, None, ForwardRule(proto="tcp", host_port=2222))
    # Issue 17's try: a VM without NICs was said to have "only no NIC at all".
    bare = build_domain(VmSpec(name=NAME), BuildInputs("qemu", "x86_64", []))
    with pytest.raises(Unsupported) as exc:
        add_forward(bare, None, ForwardRule(proto="tcp", host_port=2222))
    assert exc.value.message.startswith(f"vm '{NAME}' has no NIC: port forwards need a user-mode")
    assert "only" not in exc.value.message


@pytest.fixture
async def pf_manager(manager: Any) -> Any:
    await manager.registry.get("local").wait_connected()
    yield manager
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(NAME):
                dom.undefine()
    finally:
        conn.close()


async def test_service_refuses_a_nat_vm_and_changes_nothing(pf_manager: Any) -> None:
    m = pf_manager
    await m.vms.create("local", VmSpec(name=NAME, memory_mib=128,
                                       nics=[NicSpec(network="default")]))  # fmt: skip
    before = await m.vms.xml("local", NAME, inactive=True)
    with pytest.raises(Unsupported, match="NAT network or a bridge"):
        await m.port_forwards.add("local", NAME, ForwardRule(proto="tcp", host_port=2222))
    assert await m.vms.xml("local", NAME, inactive=True) == before
    assert await m.port_forwards.list("local", NAME) == []


async def test_service_on_a_passt_vm(pf_manager: Any) -> None:
    """A user NIC made on a host whose libvirt lists no passt backend (the test driver, and
    libvirt 9.0.0 on this machine, which refuses `<backend type='passt'/>`) is QEMU's slirp:
    forwards are refused with that reason. Where libvirt takes a NIC with the passt backend,
    forwards are added to it and removed by the service."""
    m = pf_manager
    slirp = f"{NAME}-slirp"
    await m.vms.create("local", VmSpec(name=slirp, memory_mib=128, nics=[NicSpec(user=True)]))
    with pytest.raises(Unsupported, match="slirp"):
        await m.port_forwards.add("local", slirp, ForwardRule("tcp", 2222, guest_port=22))
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(_passt_domain().to_xml())
    except libvirt.libvirtError as exc:
        # libvirt 9.0.0's parser (test driver included) refuses the passt backend.
        assert "'passt'" in exc.get_error_message()
        return
    finally:
        conn.close()
    res = await m.port_forwards.add("local", NAME, ForwardRule("tcp", 2222, guest_port=22))
    assert res["details"]["forwards"][0]["host_port"] == 2222
    listed = await m.port_forwards.list("local", NAME)
    assert listed[0]["mac"] == MAC and listed[0]["forwards"][0]["guest_port"] == 22
    await m.port_forwards.remove("local", NAME, "tcp", 2222)
    assert (await m.port_forwards.list("local", NAME))[0]["forwards"] == []
