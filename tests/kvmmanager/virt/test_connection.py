"""HostConnection on libvirt's test driver: inventory, events, status, isolation, resync."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import libvirt
import pytest

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import (
    HostTimeout,
    HostUnavailable,
    InvalidInput,
    LibvirtRefused,
    NotFound,
    Timeout,
)
from kvmmanager.virt.connection import (
    HostConnection,
    ensure_event_loop,
    is_remote_uri,
    prepare_uri,
)
from kvmmanager.virt.xml.domain import Domain

WEB_UUID = "11111111-2222-3333-4444-000000000001"


def _domain_xml(name: str) -> str:
    dom = Domain(type="test", name=name, memory=128 * 1024, current_memory=128 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    return dom.to_xml()


async def test_initial_inventory_matches_the_host(testhost, inventory):
    names = [d.name for d in inventory.domains("kvmm-t-host-a")]
    assert names == ["kvmm-t-host-db", "kvmm-t-host-web"]
    web = inventory.domain("kvmm-t-host-a", "kvmm-t-host-web")
    assert web.uuid == WEB_UUID
    assert web.state == "running"
    assert (web.vcpus, web.max_vcpus) == (1, 2)
    assert web.tags == ("web", "prod")
    assert [p.name for p in inventory.pools("kvmm-t-host-a")] == ["kvmm-t-host-pool"]
    net = inventory.network("kvmm-t-host-a", "kvmm-t-host-net")
    assert net.active and net.bridge == "kvmmtbr0"
    assert testhost.status == "connected" and testhost.status_reason == ""


async def test_domain_lifecycle_events_reach_inventory_and_bus(
    testhost, bus, inventory, next_event
):
    sub = bus.subscribe()
    host = testhost.name
    name = "kvmm-t-host-new"

    dom = await testhost.run(lambda: testhost.conn.defineXML(_domain_xml(name)))
    uuid = dom.UUIDString()
    added = await next_event(sub, lambda e: e.kind == "domain.added")
    assert (added.host, added.subject, added.data["name"]) == (host, uuid, name)
    defined = await next_event(sub, lambda e: e.kind == "domain.lifecycle")
    assert defined.data["event"] == "defined"
    assert inventory.domain(host, name).state == "shutoff"

    await testhost.run(dom.create)
    started = await next_event(
        sub, lambda e: e.kind == "domain.lifecycle" and e.data["event"] == "started"
    )
    assert started.data == {
        "name": name,
        "event": "started",
        "detail": "booted",
        "state": "running",
    }
    assert inventory.domain(host, uuid).state == "running"

    await testhost.run(dom.destroy)
    stopped = await next_event(
        sub, lambda e: e.kind == "domain.lifecycle" and e.data["event"] == "stopped"
    )
    assert stopped.data["detail"] == "destroyed"
    info = inventory.domain(host, name)
    assert (info.state, info.state_reason) == ("shutoff", "destroyed")

    await testhost.run(dom.undefine)
    removed = await next_event(sub, lambda e: e.kind == "domain.removed")
    assert removed.subject == uuid
    with pytest.raises(NotFound, match=f"'{name}' not found on host '{host}'"):
        inventory.domain(host, name)


async def test_events_of_a_quick_sequence_leave_the_final_state(testhost, inventory, until):
    def burst() -> None:
        dom = testhost.conn.lookupByName("kvmm-t-host-db")
        for _ in range(5):
            dom.suspend()
            dom.resume()
        dom.destroy()

    await testhost.run(burst)
    await until(lambda: inventory.domain(testhost.name, "kvmm-t-host-db").state == "shutoff")


async def test_network_and_pool_events(testhost, bus, inventory, next_event):
    sub = bus.subscribe()
    net = await testhost.run(lambda: testhost.conn.networkLookupByName("kvmm-t-host-net"))
    await testhost.run(net.destroy)
    event = await next_event(sub, lambda e: e.kind == "network.lifecycle")
    assert (event.subject, event.data) == ("kvmm-t-host-net", {"event": "stopped"})
    assert inventory.network(testhost.name, "kvmm-t-host-net").active is False

    pool = await testhost.run(lambda: testhost.conn.storagePoolLookupByName("kvmm-t-host-pool"))
    await testhost.run(pool.destroy)
    event = await next_event(sub, lambda e: e.kind == "pool.lifecycle")
    assert event.data == {"event": "stopped"}
    assert inventory.pool(testhost.name, "kvmm-t-host-pool").state == "inactive"
    await testhost.run(pool.undefine)
    await next_event(sub, lambda e: e.kind == "pool.removed")
    with pytest.raises(NotFound, match="pool 'kvmm-t-host-pool'"):
        inventory.pool(testhost.name, "kvmm-t-host-pool")


async def test_run_translates_libvirt_errors(testhost):
    with pytest.raises(NotFound, match="not found"):
        await testhost.run(lambda: testhost.conn.lookupByName("kvmm-t-host-missing"))
    with pytest.raises(InvalidInput):
        await testhost.run(lambda: testhost.conn.defineXML("<domain"))


async def test_run_refuses_when_not_connected(bus, inventory, libvirt_settings, testnode_uri):
    host = HostConnection("kvmm-t-host-off", testnode_uri, bus, inventory, libvirt_settings)
    with pytest.raises(HostUnavailable, match="'kvmm-t-host-off' is disconnected"):
        await host.run(lambda: None)
    await host.start()
    await host.wait_connected(30)
    await host.stop()
    with pytest.raises(HostUnavailable, match="disconnected: stopped"):
        await host.run(lambda: None)


async def test_status_events_and_resync_after_connection_loss(testhost, bus, inventory, next_event):
    """A lost connection is reopened and the inventory made equal to the host again.

    Each open of a test-driver file starts from the file, so after the reconnect the domain
    defined below is gone on the host: the resync must remove it (and publish that)."""
    sub = bus.subscribe()
    dom = await testhost.run(lambda: testhost.conn.defineXML(_domain_xml("kvmm-t-host-tmp")))
    await next_event(sub, lambda e: e.kind == "domain.added")

    testhost._notify_lost(testhost._gen, "simulated loss")
    status = await next_event(sub, lambda e: e.kind == "host.status")
    assert status.data.pop("next_attempt_at") > 0  # each host's own, jittered (test_backoff)
    assert status.data == {"status": "reconnecting", "reason": "simulated loss"}
    removed = await next_event(sub, lambda e: e.kind == "domain.removed")
    assert removed.subject == dom.UUIDString()
    status = await next_event(sub, lambda e: e.kind == "host.status")
    assert status.data == {"status": "connected", "reason": ""}
    assert [d.name for d in inventory.domains(testhost.name)] == [
        "kvmm-t-host-db",
        "kvmm-t-host-web",
    ]
    # The new connection delivers events again.
    await testhost.run(lambda: testhost.conn.lookupByName("kvmm-t-host-db").destroy())
    await next_event(sub, lambda e: e.kind == "domain.lifecycle" and e.data["event"] == "stopped")


async def test_unreachable_uri_reports_failed_and_keeps_retrying(bus, inventory, until):
    settings = LibvirtSettings(reconnect_min_seconds=0.05, reconnect_max_seconds=0.1)
    host = HostConnection(
        "kvmm-t-host-bad", "test:///nonexistent/kvmm.xml", bus, inventory, settings
    )
    sub = bus.subscribe(predicate=lambda e: e.kind == "host.status")
    await host.start()
    try:
        await until(lambda: host.status == "failed")
        assert "kvmm.xml" in host.status_reason
        with pytest.raises(HostUnavailable, match="'kvmm-t-host-bad' is failed"):
            await host.run(lambda: None)
    finally:
        await host.stop()
    kinds = [(await sub.get()).data["status"] for _ in range(3)]
    # connecting -> failed (once, however many retries) -> disconnected
    assert kinds == ["connecting", "failed", "disconnected"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung libvirtd)."""
    srv = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    # Closing makes libvirt's pending open fail, which ends its thread.
    for conn in accepted:
        conn.close()
    srv.close()


async def test_a_hung_host_does_not_block_another(testhost, bus, inventory, silent_server):
    hung = HostConnection(
        "kvmm-t-host-hung",
        f"qemu+tcp://127.0.0.1:{silent_server}/system",
        bus,
        inventory,
        LibvirtSettings(),
    )
    await hung.start()
    try:
        await asyncio.sleep(0)  # let its open start and block
        for _ in range(20):
            names = await testhost.run(lambda: [d.name() for d in testhost.conn.listAllDomains(0)])
            assert "kvmm-t-host-web" in names
        assert hung.status == "connecting"
        with pytest.raises(HostUnavailable):
            await hung.run(lambda: None)
    finally:
        await hung.stop()
    assert hung.status == "disconnected"


def test_uri_helpers():
    assert prepare_uri("qemu+ssh://root@h/system") == "qemu+ssh://root@h/system?no_tty=1"
    assert prepare_uri("qemu+ssh://h/system?no_tty=0") == "qemu+ssh://h/system?no_tty=0"
    assert prepare_uri("qemu:///system") == "qemu:///system"
    assert is_remote_uri("qemu+tls://h/system") and is_remote_uri("qemu://h/system")
    assert not is_remote_uri("qemu:///system") and not is_remote_uri("test:///default")


async def test_libvirt_errors_are_not_printed(capfd, testnode_uri):
    # libvirt's default handler writes every error on stderr; ours raise and log instead.
    ensure_event_loop()
    conn = libvirt.open(testnode_uri)
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("kvmm-t-host-quiet")
    conn.close()
    assert "Domain not found" not in capfd.readouterr().err


def test_a_stop_during_the_open_leaves_no_connection_behind(
    bus, inventory, libvirt_settings, monkeypatch
):
    # The open runs in a thread of its own. When it ends after stop() (the awaiting side
    # gave up) and after the loop stopped running, handing the connection back through
    # that loop never happened: it stayed open, with its event callbacks, for the life
    # of the process (test:///default then kept every test's leftovers).
    from kvmmanager.virt import session

    opened: list[libvirt.virConnect] = []
    gate = threading.Event()
    real_open = session.open_uri

    def slow_open(uri: str) -> libvirt.virConnect:
        gate.wait(30)
        conn = real_open(uri)
        opened.append(conn)
        return conn

    monkeypatch.setattr(session, "open_uri", slow_open)
    hc = HostConnection("kvmm-t-host-slow", "test:///default", bus, inventory, libvirt_settings)

    async def start_then_stop() -> None:
        await hc.start()
        await asyncio.sleep(0)  # the open thread is waiting at the gate
        await hc.stop()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(start_then_stop())
        gate.set()  # the open ends now, with the loop stopped but not closed
        for thread in threading.enumerate():
            if thread.name == "libvirt-open-kvmm-t-host-slow":
                thread.join(30)
    finally:
        loop.close()
    assert len(opened) == 1
    with pytest.raises(libvirt.libvirtError):
        opened[0].getURI()  # closed: nothing holds test:///default open


async def test_a_timeout_libvirt_reports_names_the_host_and_the_operation(testhost):
    """libvirt's own timeout (VIR_ERR_OPERATION_TIMEOUT, e.g. a domain's state change
    lock held by a stuck stats call) says neither host nor operation; the error must.
    The test driver cannot hold a job lock, so the call raises libvirt's error itself."""

    def held_lock() -> None:
        exc = libvirt.libvirtError("timed out")
        msg = "Timed out during operation: cannot acquire state change lock"
        exc.err = (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_QEMU, msg, 2)
        raise exc

    with pytest.raises(Timeout) as info:
        await testhost.run(held_lock, op="suspend kvmm-t-host-web")
    err = info.value
    assert err.status == 504
    assert err.message.startswith("host 'kvmm-t-host-a': suspend kvmm-t-host-web "), err.message
    assert "cannot acquire state change lock" in err.message
    body = err.to_dict()
    assert body["details"]["host"] == "kvmm-t-host-a"
    assert body["details"]["operation"] == "suspend kvmm-t-host-web"
    assert body["details"]["libvirt_code"] == libvirt.VIR_ERR_OPERATION_TIMEOUT


async def test_a_libvirt_internal_error_is_a_502_naming_the_host_and_the_operation(testhost):
    """libvirt's "internal error" (QEMU or a helper refusing, e.g. qemu-img) is the
    hypervisor's failure, not the manager's: a 502 saying which host refused what, with
    libvirt's words, not a 500 (issue 17 independent try). The test driver has no QEMU to
    fail, so the call raises libvirt's error itself."""

    def qemu_img_failed() -> None:
        msg = "internal error: Child process (/usr/bin/qemu-img ...) unexpected exit status 1"
        exc = libvirt.libvirtError(msg)
        exc.err = (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, msg, 2)
        raise exc

    with pytest.raises(LibvirtRefused) as info:
        await testhost.run(qemu_img_failed, op="revert kvmm-t-host-web")
    err = info.value
    assert (err.status, err.code) == (502, "libvirt_error")
    assert err.message.startswith(
        "host 'kvmm-t-host-a': libvirt refused revert kvmm-t-host-web: internal error: "
    ), err.message
    assert err.to_dict()["details"]["operation"] == "revert kvmm-t-host-web"


async def test_a_connected_hosts_reason_names_its_overdue_calls(testhost):
    """A call past its deadline still holds a worker (libvirt cannot be interrupted); the
    host stays "connected" but its reason says which calls are stuck, so a user seeing
    504s for a free worker knows why."""
    release = threading.Event()
    try:
        with pytest.raises(HostTimeout):
            await testhost.run(release.wait, 60, op="suspend kvmm-t-host-web", deadline=0.05)
        info = testhost.status_dict()
        assert info["status"] == "connected"
        assert info["overdue_calls"] == 1
        assert info["reason"].startswith("1 call overdue: suspend kvmm-t-host-web ("), info
    finally:
        release.set()


async def test_the_managers_own_probe_guest_is_never_in_the_inventory(
    testhost, bus, inventory, next_event
):
    """The accelerator probe's transient guest (`kvmm-accel-probe-*`) is the manager's own
    helper: neither its events nor a full listing put it in the inventory (so not in
    GET /api/vms, the web VM list or a host's vm_count), and no event about it is
    published; a user VM made just after it is listed as usual."""
    sub = bus.subscribe()
    probe = await testhost.run(
        lambda: testhost.conn.createXML(_domain_xml("kvmm-accel-probe-kvmmtest-0a1b2c"), 0)
    )
    await testhost.run(lambda: testhost.conn.defineXML(_domain_xml("kvmm-t-host-after")))
    added = await next_event(sub, lambda e: e.kind == "domain.added")
    assert added.data["name"] == "kvmm-t-host-after"
    await testhost._resync(testhost.conn, testhost._gen)  # a full listing, as on reconnect
    names = [d.name for d in inventory.domains(testhost.name)]
    assert names == ["kvmm-t-host-after", "kvmm-t-host-db", "kvmm-t-host-web"]
    with pytest.raises(NotFound):
        inventory.domain(testhost.name, probe.UUIDString())
    seen = []
    while not sub._queue.empty():
        seen.append(sub._queue.get_nowait())
    assert all(e.subject != probe.UUIDString() for e in seen), seen
