"""Deploying the agent ISO into a fresh dir pool of the real libvirtd (qemu:///system)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.kvmmanager.services.backups.test_images_libvirtd import record_job_calls
from tests.libvirtd_pools import DirPool, drop_pool, qemu_dir

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Cancelled, NotFound
from kvmmanager.iso import ISO_NAME, agent_version
from kvmmanager.iso.builder import build_iso
from kvmmanager.iso.volume_names import volume_name
from kvmmanager.services.guest import iso_deploy
from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager.virt.calls import job_calls

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"
EPOCH = 1700000000


@pytest.fixture
def pool_dir() -> Iterator[Path]:
    """A directory with no pool yet (an auto pool is made in it)."""
    path = qemu_dir("kvmm-t-iso-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def iso_pool(dir_pool: Any) -> DirPool:
    return dir_pool("kvmm-t-iso-")


@pytest.fixture
def test_pool(iso_pool: DirPool) -> str:
    return iso_pool.name


def _read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def _damage(path: str) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"garbage")


@pytest.fixture
def iso_settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings.libvirt.default_uri = URI
    built = build_iso(tmp_path / ISO_NAME, source_date_epoch=EPOCH, cache_dir=tmp_path / "cache")
    settings.agent.iso_path = str(built.path)
    return settings


@pytest.fixture
async def system_manager(iso_settings: Settings) -> AsyncIterator[Any]:
    from kvmmanager.services.manager import Manager

    m = Manager(iso_settings)
    await m.start()
    await m.registry.get("local").wait_connected(60)
    try:
        yield m
    finally:
        await m.stop()


def _volumes(conn: libvirt.virConnect, pool: str) -> list[str]:
    p = conn.storagePoolLookupByName(pool)
    p.refresh(0)
    return sorted(p.listVolumes())


async def test_first_deploy_uploads_second_is_a_noop(
    system_manager: Any, test_pool: str, libvirtd_conn: libvirt.virConnect, iso_settings: Settings
) -> None:
    seen: list[tuple[int, int | None]] = []
    first = await system_manager.iso.deploy(
        "local", test_pool, progress=lambda d, t: seen.append((d, t))
    )
    local = _read(iso_settings.agent.iso_path)
    assert first.action == "uploaded"
    assert first.volume == volume_name(agent_version())
    assert first.sha256 == hashlib.sha256(local).hexdigest()
    assert seen[-1] == (len(local), len(local))
    assert _volumes(libvirtd_conn, test_pool) == [first.volume]
    # What libvirtd wrote is byte for byte the ISO, and QEMU may read it.
    assert _read(first.path) == local
    assert os.stat(first.path).st_mode & 0o004

    second = await system_manager.iso.deploy("local", test_pool)
    assert second.action == "unchanged"
    assert second.path == first.path

    status = await system_manager.iso.status("local", test_pool)
    assert status.local_sha256 == first.sha256
    assert status.deployed and status.current and status.readable_by_qemu
    assert status.sha256 == first.sha256


async def test_damaged_volume_is_replaced(
    system_manager: Any, test_pool: str, libvirtd_conn: libvirt.virConnect
) -> None:
    first = await system_manager.iso.deploy("local", test_pool)
    # As if a process died mid-upload: right name, wrong bytes.
    _damage(first.path)
    status = await system_manager.iso.status("local", test_pool)
    assert status.deployed and not status.current
    again = await system_manager.iso.deploy("local", test_pool)
    assert again.action == "replaced"
    assert hashlib.sha256(_read(again.path)).hexdigest() == again.sha256


async def test_newer_version_replaces_older_unless_a_vm_uses_it(
    system_manager: Any,
    test_pool: str,
    libvirtd_conn: libvirt.virConnect,
    iso_pool: DirPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = libvirtd_conn.storagePoolLookupByName(test_pool)
    unrelated = "kvmm-t-iso-other.iso"
    for name in (volume_name("0.0.1"), volume_name("0.0.2"), unrelated):
        pool.createXML(build_volume_xml(name, 2048, "raw"), 0)
    held = str(iso_pool.path / volume_name("0.0.1"))
    monkeypatch.setattr(
        system_manager.iso,
        "_users_of",
        lambda host, path: ["kvmm-t-iso-vm"] if path == held else [],
    )
    result = await system_manager.iso.deploy("local", test_pool)
    assert result.action == "uploaded"
    assert result.removed == [volume_name("0.0.2")]
    assert result.kept_in_use == {volume_name("0.0.1"): ["kvmm-t-iso-vm"]}
    assert _volumes(libvirtd_conn, test_pool) == sorted(
        [volume_name("0.0.1"), result.volume, unrelated]
    )


async def test_cancelled_upload_leaves_no_volume(
    system_manager: Any, test_pool: str, libvirtd_conn: libvirt.virConnect
) -> None:
    calls = iter(range(100))

    def cancel_after_start() -> bool:
        return next(calls) >= 1  # let the stream open, then cancel

    with pytest.raises(Cancelled):
        await system_manager.iso.deploy("local", test_pool, cancelled=cancel_after_start)
    assert _volumes(libvirtd_conn, test_pool) == []


async def test_missing_pool_is_created_when_it_is_an_auto_pool(
    system_manager: Any,
    libvirtd_conn: libvirt.virConnect,
    pool_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"kvmm-t-iso-auto-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(iso_deploy, "AUTO_POOLS", {name: str(pool_dir / "images")})
    try:
        result = await system_manager.iso.deploy("local", name)
        assert result.pool_created
        pool = libvirtd_conn.storagePoolLookupByName(name)
        assert pool.isActive() and pool.isPersistent() and pool.autostart()
        assert (pool_dir / "images" / result.volume).is_file()
    finally:
        drop_pool(name)


async def test_unknown_pool_that_is_not_auto_is_an_error(system_manager: Any) -> None:
    with pytest.raises(NotFound) as err:
        await system_manager.iso.deploy("local", "kvmm-t-iso-nope")
    assert err.value.field == "pool"
    assert "kvm-manager pool create kvmm-t-iso-nope" in err.value.message


async def test_deploy_job_reports_progress(
    system_manager: Any, test_pool: str, libvirtd_conn: libvirt.virConnect
) -> None:
    with system_manager.bus.subscribe(maxsize=1000) as sub:
        job_id = system_manager.iso.start_deploy_job("local", test_pool, "admin")
        events = []
        while True:
            ev = await asyncio.wait_for(sub.get(), 120)
            if ev.subject != job_id:
                continue
            events.append(ev)
            if ev.kind == "job.done":
                break
    job = system_manager.jobs.get(job_id)
    assert job.state == "done", job.error
    assert job.result["action"] == "uploaded"
    assert any(e.kind == "job.progress" for e in events)
    assert _volumes(libvirtd_conn, test_pool) == [volume_name(agent_version())]


async def test_deploy_local_needs_no_manager(
    iso_settings: Settings, test_pool: str, libvirtd_conn: libvirt.virConnect
) -> None:
    result = await iso_deploy.deploy_local(URI, iso_settings, test_pool)
    assert result.action == "uploaded"
    assert _volumes(libvirtd_conn, test_pool) == [result.volume]
    again = await iso_deploy.deploy_local(URI, iso_settings, test_pool)
    assert again.action == "unchanged"


async def test_deploy_local_removes_an_older_version(
    iso_settings: Settings, test_pool: str, libvirtd_conn: libvirt.virConnect
) -> None:
    """Without the manager's database (the package's postinst) an older ISO version is
    still deleted: before the local deploy built its storage service with no-database
    owner records, this raised AttributeError ('_LocalContext' has no 'ownership')."""
    pool = libvirtd_conn.storagePoolLookupByName(test_pool)
    pool.createXML(build_volume_xml(volume_name("0.0.2"), 2048, "raw"), 0)
    result = await iso_deploy.deploy_local(URI, iso_settings, test_pool)
    assert result.action == "uploaded"
    assert result.removed == [volume_name("0.0.2")]
    assert _volumes(libvirtd_conn, test_pool) == [result.volume]


async def test_deploy_local_fails_fast_when_libvirt_is_down(iso_settings: Settings) -> None:
    from kvmmanager.core.errors import HostUnavailable

    with pytest.raises(HostUnavailable, match="cannot connect"):
        await iso_deploy.deploy_local(
            "qemu+unix:///system?socket=/nonexistent/kvmm-t-iso.sock", iso_settings
        )


async def test_concurrent_deploys_upload_once(system_manager: Any, test_pool: str) -> None:
    results = await asyncio.gather(
        system_manager.iso.deploy("local", test_pool), system_manager.iso.deploy("local", test_pool)
    )
    assert sorted(r.action for r in results) == ["unchanged", "uploaded"]


async def test_deploy_over_a_remote_style_uri(
    iso_settings: Settings, test_pool: str, libvirtd_conn: libvirt.virConnect
) -> None:
    # qemu+unix:// goes through libvirt's remote driver, like qemu+ssh:// would.
    result = await iso_deploy.deploy_local("qemu+unix:///system", iso_settings, test_pool)
    assert result.action == "uploaded"
    assert _volumes(libvirtd_conn, test_pool) == [result.volume]


async def test_inside_a_job_every_deploy_call_has_a_deadline(
    system_manager: Any,
    test_pool: str,
    libvirtd_conn: libvirt.virConnect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deploy runs as a job, where calls default to the unbounded `job` kind: the
    volume's create, delete (a damaged one is replaced), the upload's chunks and the
    checksum read must each carry a deadline, so a frozen host fails the job naming host
    and operation instead of hanging it (issue 21)."""
    unbounded = record_job_calls(system_manager.registry.get("local"), monkeypatch)
    with job_calls():
        first = await system_manager.iso.deploy("local", test_pool)
        _damage(libvirtd_conn.storagePoolLookupByName(test_pool).storageVolLookupByName(
            first.volume
        ).path())  # fmt: skip
        again = await system_manager.iso.deploy("local", test_pool)
    assert (first.action, again.action) == ("uploaded", "replaced")
    assert unbounded.seen and unbounded == [], unbounded
