"""doctor against the real libvirtd: a healthy setup of our own and deliberately broken ones
(network stopped or missing, pool missing, ISO missing, stale or different)."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from prometheus_client import generate_latest

from kvmmanager.core.config import Settings
from kvmmanager.iso import agent_version
from kvmmanager.iso.builder import IsoBuild, build_iso
from kvmmanager.iso.locator import locate_iso
from kvmmanager.services.guest import iso_deploy
from kvmmanager.services.guest.iso_deploy import volume_name
from kvmmanager.services.hosts import doctor, doctor_checks
from kvmmanager.services.hosts.doctor import FAIL, OK, WARN, CheckContext, collect_checks
from kvmmanager.virt.probe import AccelInfo
from kvmmanager.virt.xml.capabilities import DomainCapabilities
from kvmmanager.virt.xml.network import Network

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open(URI)
    yield c
    c.close()


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> IsoBuild:
    base = tmp_path_factory.mktemp("kvmm-t-iso-doc")
    return build_iso(base, source_date_epoch=1700000000, cache_dir=base / "cache")


@pytest.fixture
def net(conn: libvirt.virConnect) -> Iterator[libvirt.virNetwork]:
    """An isolated network of our own (no addresses, so no dnsmasq), defined, not started."""
    name = f"kvmm-t-iso-net-{uuid.uuid4().hex[:6]}"
    network = conn.networkDefineXML(Network(name=name).to_xml())
    yield network
    with contextlib.suppress(libvirt.libvirtError):
        c = libvirt.open(URI)
        try:
            net = c.networkLookupByName(name)
            if net.isActive():
                net.destroy()
            net.undefine()
        finally:
            c.close()


@pytest.fixture
def pool(conn: libvirt.virConnect, dir_pool: Any) -> libvirt.virStoragePool:
    return conn.storagePoolLookupByName(dir_pool("kvmm-t-iso-pool-").name)


def _upload(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, data: bytes) -> None:
    """`data` as the volume `name`, made as a deploy makes the agent ISO's (world-readable
    raw): the same volume XML."""
    vol = pool.createXML(iso_deploy._volume_xml(name, len(data)), 0)
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(data), 0)
    view = memoryview(data)
    while view:
        view = view[stream.send(bytes(view[: 1 << 20])) :]
    stream.finish()


def _ctx(settings_iso: IsoBuild | None, network: str, pool: str) -> CheckContext:
    settings = Settings(agent={"iso_path": str(settings_iso.path) if settings_iso else "/none.iso"})
    loc = locate_iso(settings, build=False) if settings_iso else None
    return CheckContext(
        host="kvmm-t-iso",
        uri=URI,
        local=True,
        network=network,
        pool=pool,
        accel=AccelInfo("tcg", "forced by the test", source="config"),
        iso=loc,
        iso_sha256=settings_iso.sha256 if settings_iso else None,
    )


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_healthy_setup(conn, net, pool, iso) -> None:
    net.create()
    _upload(conn, pool, volume_name(agent_version()), iso.path.read_bytes())
    checks = _by_name(collect_checks(conn, _ctx(iso, net.name(), pool.name())))
    assert checks["libvirt"].status == OK
    assert checks["network"].status == OK
    assert checks["pool"].status in (OK, WARN)  # WARN only when the disk is nearly full
    assert checks["agent_iso_local"].status == OK
    assert checks["agent_iso"].status == OK, checks["agent_iso"].message
    assert checks["agent_iso"].data["sha256"] == iso.sha256
    assert checks["kvm"].status == WARN and "TCG" in checks["kvm"].message
    assert checks["virtio_serial"].status == OK
    report = doctor.make_report("kvmm-t-iso", URI, list(checks.values()))
    assert report.status in (OK, WARN)
    assert not report.failed


def test_stopped_network_fails_with_the_start_command(conn, net, pool, iso) -> None:
    checks = _by_name(collect_checks(conn, _ctx(iso, net.name(), pool.name())))
    assert checks["network"].status == FAIL
    assert "not active" in checks["network"].message
    assert checks["network"].fix == f"kvm-manager net start {net.name()}"


def test_missing_network_fails_with_the_create_command(conn, pool, iso) -> None:
    checks = _by_name(collect_checks(conn, _ctx(iso, "kvmm-t-iso-nonet", pool.name())))
    assert checks["network"].status == FAIL
    assert checks["network"].fix.startswith("kvm-manager net create kvmm-t-iso-nonet")


def test_missing_pool_fails_pool_and_iso(conn, net, iso) -> None:
    net.create()
    checks = _by_name(collect_checks(conn, _ctx(iso, net.name(), "kvmm-t-iso-nopool")))
    assert checks["pool"].status == FAIL
    assert checks["pool"].fix.startswith("kvm-manager pool create kvmm-t-iso-nopool")
    assert checks["agent_iso"].status == FAIL
    assert checks["agent_iso"].fix == "kvm-manager agent-iso deploy --pool kvmm-t-iso-nopool"
    report = doctor.make_report("kvmm-t-iso", URI, list(checks.values()))
    assert report.failed


def test_missing_iso_fails_and_stale_iso_warns(conn, net, pool, iso) -> None:
    checks = _by_name(collect_checks(conn, _ctx(iso, net.name(), pool.name())))
    assert checks["agent_iso"].status == FAIL
    assert "is not in pool" in checks["agent_iso"].message
    assert checks["agent_iso"].fix == f"kvm-manager agent-iso deploy --pool {pool.name()}"

    _upload(conn, pool, volume_name("0.0.1"), b"old" * 100)
    checks = _by_name(collect_checks(conn, _ctx(iso, net.name(), pool.name())))
    assert checks["agent_iso"].status == WARN
    assert volume_name("0.0.1") in checks["agent_iso"].message


def test_different_content_warns(conn, net, pool, iso) -> None:
    data = bytearray(iso.path.read_bytes())
    data[-1] ^= 0xFF
    _upload(conn, pool, volume_name(agent_version()), bytes(data))
    checks = _by_name(collect_checks(conn, _ctx(iso, net.name(), pool.name())))
    assert checks["agent_iso"].status == WARN
    assert checks["agent_iso"].data["sha256"] == hashlib.sha256(data).hexdigest()


def test_no_local_iso_reports_every_candidate(conn, net, pool, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings(agent={"iso_path": str(tmp_path / "missing.iso")})
    ctx = _ctx(None, net.name(), pool.name())
    ctx.iso = locate_iso(settings, build=False)
    check = _by_name(collect_checks(conn, ctx))["agent_iso_local"]
    assert check.status == WARN  # nfpm and the packaging sources are here: deploy builds it
    sources = [c["source"] for c in check.data["candidates"]]
    assert sources[0] == "config" and sources[-1] == "build"
    assert check.data["candidates"][0]["reason"] == "does not exist"


def test_unreachable_libvirt_is_one_failed_check() -> None:
    uri = "qemu+unix:///system?socket=/nonexistent/kvmm-t-iso.sock"
    report = doctor.run_local(uri, Settings())
    assert report.failed
    assert [c.name for c in report.checks] == ["libvirt"]
    assert report.checks[0].fix


def test_gauges_follow_the_report() -> None:
    checks = [doctor.Check("libvirt", OK, "x"), doctor.Check("agent_iso", FAIL, "y", "z")]
    doctor.make_report("kvmm-t-iso-gauge", URI, checks)
    text = generate_latest(doctor.REGISTRY).decode()
    assert 'kvmm_doctor_check{check="agent_iso",host="kvmm-t-iso-gauge"} 2.0' in text
    assert 'kvmm_doctor_libvirt_up{host="kvmm-t-iso-gauge"} 1.0' in text
    assert 'kvmm_doctor_agent_iso_current{host="kvmm-t-iso-gauge"} 0.0' in text


def test_run_local_over_a_remote_style_uri_skips_machine_checks(pool) -> None:
    # qemu+unix:// goes through the remote driver: /dev/kvm, groups and dnsmasq belong to
    # the other end, and the fixes deploy with --local --uri.
    uri = "qemu+unix:///system"
    report = doctor.run_local(uri, Settings(), pool=pool.name())
    names = [c.name for c in report.checks]
    assert "dev_kvm" not in names and "dnsmasq" not in names and "access" not in names
    iso = _by_name(report.checks)["agent_iso"]
    assert iso.fix == f"kvm-manager agent-iso deploy --local --uri {uri} --pool {pool.name()}"


def _user_net_ctx(local: bool) -> CheckContext:
    return CheckContext(
        host="kvmm-t-usernet", uri=URI, local=local, network="default", pool="default",
        accel=None, iso=None, iso_sha256=None,
    )  # fmt: skip


def test_user_net_check_says_which_backend_user_nics_get(conn) -> None:
    """Issue 17 item 5: the doctor says whether user-mode NICs get passt (port forwards)
    or QEMU's slirp. This host's libvirt 9.0.0 lists no passt backend (its parser refuses
    `<backend type='passt'>`)."""
    caps = DomainCapabilities.from_xml(conn.getDomainCapabilities(None, None, None, "qemu", 0))
    check = doctor_checks.check_user_net(caps, _user_net_ctx(local=True))
    if "passt" not in caps.interface_backends:
        assert check.status == WARN and "slirp" in check.message and "passt" in (check.fix or "")
    offered = DomainCapabilities.from_xml(
        "<domainCapabilities><devices><interface supported='yes'>"
        "<enum name='backendType'><value>default</value><value>passt</value></enum>"
        "</interface></devices></domainCapabilities>"
    )
    check = doctor_checks.check_user_net(offered, _user_net_ctx(local=False))
    assert (check.status, check.data["backends"]) == (OK, ["default", "passt"])
    names = [c.name for c in collect_checks(conn, _user_net_ctx(local=False))]
    assert "user_net" in names
