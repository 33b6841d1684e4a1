"""Reading libvirt objects into inventory records, and the event name tables."""

from __future__ import annotations

import dataclasses

import libvirt
import pytest

from kvmmanager.virt import readers
from kvmmanager.virt.inventory import DiskInfo, GraphicsInfo, NicInfo, OsInfo
from kvmmanager.virt.xml.devices import QEMU_GA_CHANNEL
from kvmmanager.virt.xml.domain import Domain


@pytest.fixture
def conn(testnode_uri):
    c = libvirt.open(testnode_uri)
    yield c
    c.close()


def test_read_domain_from_the_fixture(conn):
    info = readers.read_domain("h", conn.lookupByName("kvmm-t-host-web"))
    assert (info.host, info.name, info.uuid) == (
        "h",
        "kvmm-t-host-web",
        "11111111-2222-3333-4444-000000000001",
    )
    assert (info.state, info.id, info.persistent, info.autostart) == ("running", 1, True, False)
    assert (info.title, info.description) == ("Web front end", "serves the site")
    assert (info.tags, info.owner) == (("web", "prod"), "alice")
    assert info.max_memory_kib == 1024 * 1024
    assert info.os == OsInfo(type="hvm", arch="x86_64", machine="pc", firmware="bios")
    assert info.graphics == (GraphicsInfo(type="vnc", port=5901, listen="127.0.0.1"),)
    assert info.disks == (
        DiskInfo(
            target="vda",
            device="disk",
            source="/var/lib/libvirt/images/kvmm-t-host-web.qcow2",
            format="qcow2",
            bus="virtio",
        ),
        DiskInfo(target="sda", device="cdrom", bus="sata", readonly=True),
    )
    assert info.nics == (
        NicInfo(mac="52:54:00:00:00:01", type="network", source="kvmm-t-host-net", model="virtio"),
    )
    assert [c.name for c in info.channels] == ["org.kvmmanager.agent.0", "org.qemu.guest_agent.0"]
    # The test driver reports no channel state: port closed for both.
    assert (info.agent_status, info.qga_status) == ("absent", "disconnected")


def test_agent_status_follows_the_channel_state():
    xml = """<domain type='test'><name>kvmm-t-host-x</name>
      <uuid>11111111-2222-3333-4444-0000000000ff</uuid><memory>1024</memory><vcpu>1</vcpu>
      <os><type>hvm</type></os><devices>
      <channel type='unix'><target type='virtio' name='org.kvmmanager.agent.0'
        state='connected'/></channel>
      <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'
        state='connected'/></channel></devices></domain>"""
    info = readers.domain_from_xml("h", xml, state="running")
    assert (info.agent_status, info.qga_status, info.state) == ("connected", "connected", "running")
    renamed = Domain.from_xml(xml)
    qga = renamed.devices.channel(QEMU_GA_CHANNEL)
    assert qga is not None
    qga.target_name = "other"
    bare = readers.domain_from_xml("h", renamed.to_xml())
    assert bare.qga_status == "absent"


def test_shutoff_domain_and_full_listing(conn):
    dom = conn.lookupByName("kvmm-t-host-db")
    dom.destroy()
    info = readers.read_domain("h", dom)
    assert (info.state, info.state_reason, info.id) == ("shutoff", "destroyed", None)
    snap = readers.read_all("h", conn)
    assert sorted(d.name for d in snap.domains) == ["kvmm-t-host-db", "kvmm-t-host-web"]
    (pool,) = snap.pools
    assert (pool.name, pool.type, pool.path, pool.state) == (
        "kvmm-t-host-pool",
        "dir",
        "/kvmm-t-host-pool",
        "running",
    )
    assert pool.capacity == 100 * 1024**3
    (net,) = snap.networks
    assert (net.name, net.forward_mode, net.bridge, net.active) == (
        "kvmm-t-host-net",
        "nat",
        "kvmmtbr0",
        True,
    )


def test_name_tables():
    assert readers.lifecycle_names(libvirt.VIR_DOMAIN_EVENT_STOPPED, 1) == ("stopped", "destroyed")
    assert readers.lifecycle_names(99, 0) == ("unknown-99", "0")
    assert readers.state_name(libvirt.VIR_DOMAIN_PMSUSPENDED) == "pmsuspended"
    assert readers.reason_name(libvirt.VIR_DOMAIN_PAUSED, 1) == "user"
    assert readers.reason_name(libvirt.VIR_DOMAIN_RUNNING, 77) == "unknown-77"


def test_a_domain_whose_xml_is_not_understood_is_still_listed(conn, monkeypatch):
    from kvmmanager.core.errors import InvalidInput

    def refuse(*_a, **_kw):
        raise InvalidInput("vcpus: expected an integer in the XML, got 'abc'", field="vcpus")

    monkeypatch.setattr(readers, "domain_from_xml", refuse)
    info = readers.read_domain("h", conn.lookupByName("kvmm-t-host-web"))
    assert (info.name, info.uuid, info.state) == (
        "kvmm-t-host-web",
        "11111111-2222-3333-4444-000000000001",
        "running",
    )
    assert (info.vcpus, info.max_memory_kib) == (1, 1024 * 1024)


def test_a_vserport_change_wins_over_a_stale_channel_state():
    """libvirt writes the port state into the live XML in a worker of its own, often
    after the re-read the event caused: QEMU's word (the event's data) wins."""
    xml = """<domain type='test'><name>kvmm-t-host-x</name>
      <uuid>11111111-2222-3333-4444-0000000000fe</uuid><memory>1024</memory><vcpu>1</vcpu>
      <os><type>hvm</type></os><devices>
      <channel type='unix'><target type='virtio' name='org.kvmmanager.agent.0'
        state='disconnected'/><alias name='channel0'/></channel>
      <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'
        state='connected'/><alias name='channel1'/></channel></devices></domain>"""
    info = readers.domain_from_xml("h", xml, state="running")
    assert (info.agent_status, info.qga_status) == ("absent", "connected")
    port = readers.vserport_details('{"id": "channel0", "open": true}')
    assert port == ("channel0", True)
    fixed = readers._with_port_state(info, xml, *port)
    assert (fixed.agent_status, fixed.qga_status) == ("connected", "connected")
    closed = readers._with_port_state(info, xml, "channel1", False)
    assert (closed.agent_status, closed.qga_status) == ("absent", "disconnected")
    assert readers._with_port_state(info, xml, "channel9", True) == info
    for bad in (None, "not json", '{"id": 3, "open": true}', {"id": "channel0"}):
        assert readers.vserport_details(bad) is None


class _Counting:
    """A real libvirt object whose method calls are counted by name (a spy over the real
    test driver, not a stand-in): domains handed out are wrapped too."""

    def __init__(self, real, calls):
        self._real, self._calls = real, calls

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self._calls[name] = self._calls.get(name, 0) + 1
            out = attr(*args, **kwargs)
            if name == "listAllDomains":
                return [_Counting(d, self._calls) for d in out]
            if name == "getAllDomainStats":
                return [(_Counting(d, self._calls), s) for d, s in out]
            return out

        return call


def _fleet_of_states(conn):
    """The fixture's two domains plus a paused one, a shut-off autostart one and a
    transient one: every live fact differs somewhere."""
    web = conn.lookupByName("kvmm-t-host-web")
    db = conn.lookupByName("kvmm-t-host-db")
    db.destroy()
    db.setAutostart(1)
    xml = web.XMLDesc(0)
    for i, name in enumerate(("kvmm-t-host-paused", "kvmm-t-host-transient")):
        model = Domain.from_xml(xml)
        model.name, model.uuid = name, f"11111111-2222-3333-4444-0000000000a{i}"
        if name.endswith("transient"):
            conn.createXML(model.to_xml(), 0)
        else:
            conn.defineXML(model.to_xml()).create()
            conn.lookupByName(name).suspend()


def test_the_full_listing_reads_live_facts_in_bulk_and_agrees_with_one_by_one(conn):
    """read_all takes state, persistence and autostart of every domain from three calls
    (issue 19 item 4: 4-5 calls per domain before, each a round trip on a remote host),
    and its records are those of the one-by-one reader."""
    _fleet_of_states(conn)

    def record(d):  # when it was read aside
        return dataclasses.replace(d, updated_at=0.0)

    one_by_one = {
        d.UUIDString(): record(readers.read_domain("h", d)) for d in conn.listAllDomains(0)
    }
    calls: dict[str, int] = {}
    snap = readers.read_all("h", _Counting(conn, calls))
    assert {d.uuid: record(d) for d in snap.domains} == one_by_one
    by_name = {d.name: d for d in snap.domains}
    assert (by_name["kvmm-t-host-db"].state, by_name["kvmm-t-host-db"].autostart) == (
        "shutoff",
        True,
    )
    assert (by_name["kvmm-t-host-paused"].state, by_name["kvmm-t-host-paused"].state_reason) == (
        "paused",
        "user",
    )
    assert by_name["kvmm-t-host-transient"].persistent is False
    assert calls["getAllDomainStats"] == 1
    assert calls["listAllDomains"] == 3  # all, persistent, autostart
    assert calls["XMLDesc"] == len(one_by_one)  # one per domain
    # No per-domain state, persistence or autostart call. The test driver reports no
    # balloon or vCPU stats, so its 3 running or paused domains still read their counters.
    assert {k: calls.get(k, 0) for k in ("state", "isPersistent", "autostart", "info")} == {
        "state": 0,
        "isPersistent": 0,
        "autostart": 0,
        "info": 3,
    }


def test_counters_from_the_bulk_stats_are_used_when_the_driver_reports_them(conn):
    """QEMU reports balloon and vCPU counts in the bulk stats: then no `info()` call."""
    dom = conn.lookupByName("kvmm-t-host-web")
    facts = readers.LiveFacts(
        state=libvirt.VIR_DOMAIN_RUNNING,
        reason=1,
        persistent=True,
        autostart=False,
        counters=(4 * 1024 * 1024, 3 * 1024 * 1024, 3),
    )
    calls: dict[str, int] = {}
    info = readers.domain_info("h", _Counting(dom, calls), facts)
    assert (info.max_memory_kib, info.memory_kib, info.vcpus) == (4194304, 3145728, 3)
    assert (info.state, info.state_reason) == ("running", "booted")
    assert "info" not in calls
