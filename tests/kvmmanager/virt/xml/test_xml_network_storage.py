"""Network, pool and volume models against what libvirt writes, plus edits that keep the rest."""

from __future__ import annotations

import ipaddress

import libvirt
import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.network import IP, DhcpHost, DhcpRange, Network
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.volume import Volume


@pytest.fixture
def test_conn():
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def test_reads_test_driver_network(test_conn, canonical) -> None:
    xml = test_conn.networkLookupByName("default").XMLDesc(0)
    net = Network.from_xml(xml)
    assert (net.name, net.forward_mode, net.bridge_name, net.bridge_stp) == (
        "default",
        "nat",
        "virbr0",
        True,
    )
    ip = net.ipv4()
    assert ip.interface == ipaddress.ip_interface("192.168.122.1/24")
    assert [(r.start, r.end) for r in ip.dhcp_ranges] == [("192.168.122.2", "192.168.122.254")]
    assert net.to_xml() == xml.strip().replace("'", '"')


def test_network_edit_keeps_unknown_parts(canonical) -> None:
    xml = (
        "<network><name>n</name><forward mode='nat'><nat><port start='1024' end='65535'/>"
        "</nat></forward><dns><host ip='10.0.0.5'><hostname>x</hostname></host></dns>"
        "<ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.10' end='10.0.0.20'>"
        "<lease expiry='1' unit='hours'/></range></dhcp></ip></network>"
    )
    net = Network.from_xml(xml)
    net.ips[0].add(DhcpHost(mac="52:54:00:00:00:99", ip="10.0.0.99"))
    net.forward_mode = "route"
    out = net.to_xml()
    assert "<port start" in out and "<hostname>x</hostname>" in out and "<lease" in out
    assert '<forward mode="route">' in out
    assert out.index("<range") < out.index('<host mac="52:54:00:00:00:99"')
    net.forward_mode = "none"
    assert "<forward" not in net.to_xml() and net.isolated
    with pytest.raises(InvalidInput) as err:
        net.forward_mode = "tunnel"
    assert err.value.field == "forward_mode"


def test_dhcp_removal_cleans_up() -> None:
    net = Network(name="kvmm-t-xml-n")
    ip = net.add(IP(address="10.9.0.1", prefix=24))
    rng = ip.add(DhcpRange(start="10.9.0.2", end="10.9.0.3"))
    assert "<dhcp>" in net.to_xml(pretty=False)
    ip.remove(rng)
    assert net.to_xml(pretty=False) == (
        '<network><name>kvmm-t-xml-n</name><ip address="10.9.0.1" prefix="24"/></network>'
    )
    with pytest.raises(InvalidInput) as err:
        DhcpRange(start="10.9.0.300")
    assert err.value.field == "start"


def test_reads_test_driver_pool(test_conn, canonical) -> None:
    xml = test_conn.storagePoolLookupByName("default-pool").XMLDesc(0)
    pool = Pool.from_xml(xml)
    assert (pool.type, pool.name, pool.target_path) == ("dir", "default-pool", "/default-pool")
    assert pool.capacity == pool.available == 100 * 1024**3 and pool.allocation == 0
    with pytest.raises(InvalidInput):
        pool.capacity = 1
    pool.target_mode = "0755"
    assert canonical(pool.to_xml()).count("<mode>0755</mode>") == 1


def test_pool_sources() -> None:
    pool = Pool(type="logical", name="vg", source_devices=["/dev/sdb", "/dev/sdc"])
    assert pool.source_device == "/dev/sdb"
    pool.source_device = None
    assert pool.source_devices == [] and "<source" not in pool.to_xml()


def test_volume_sizes_in_any_unit() -> None:
    vol = Volume.from_xml(
        "<volume><name>a</name><capacity unit='G'>2</capacity>"
        "<allocation unit='KiB'>3</allocation><physical unit='bytes'>4096</physical>"
        "<target><format type='qcow2'/></target></volume>"
    )
    assert (vol.capacity, vol.allocation, vol.physical) == (2 * 1024**3, 3072, 4096)
    vol.capacity = 5 * 1024**3
    assert '<capacity unit="bytes">5368709120</capacity>' in vol.to_xml()
    with pytest.raises(InvalidInput) as err:
        vol.capacity = -1
    assert err.value.field == "capacity"


def test_volume_created_in_test_driver(test_conn) -> None:
    pool = test_conn.storagePoolLookupByName("default-pool")
    vol = Volume(name="kvmm-t-xml-v.qcow2", capacity=1024**3, target_format="qcow2")
    made = pool.createXML(vol.to_xml(), 0)
    try:
        back = Volume.from_xml(made.XMLDesc(0))
        assert back.name == "kvmm-t-xml-v.qcow2" and back.capacity == 1024**3
        assert back.target_path == "/default-pool/kvmm-t-xml-v.qcow2"
    finally:
        made.delete(0)
