"""The manager process killed (SIGKILL) mid-job, then started again on the same data.

Fast variant (test driver, always in CI): a job is running in a real manager process;
after kill -9 and a restart the job is 'failed' with a reason that says why, and the
restarted manager works. libvirtd variants: kill -9 during a volume upload into a new
volume, and during a full VM clone (of a shut-off VM, and of a running one, left on its
temporary snapshot); after the restart the job failed with a reason, the
audit entry names the job, and what the job had half made is removed (it recorded each
object before making it), with an audit entry `jobs.undo_interrupted` saying so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest
from tests.libvirtd_pools import libvirtd_dir_pool
from tests.reliability.conftest import ServerProcess

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.pool import Pool

MIB = 1024 * 1024
# Bytes of the upload body sent before the test holds the rest back.
SENT_BEFORE_KILL = 8 * MIB

CHILD = textwrap.dedent(
    """
    import asyncio, threading
    from kvmmanager.core.config import get_settings
    from kvmmanager.services.manager import Manager

    async def main():
        m = Manager(get_settings())
        await m.start()
        hold = threading.Event()

        def work(p):
            p(3, 10, "kvmm-t-sec working")
            hold.wait()  # until the process is killed

        job_id = m.jobs.start("kvmm-t-sec.long", "local/kvmm-t-sec", work, "admin", host="local")
        while m.jobs.get(job_id).state != "running":
            await asyncio.sleep(0.01)
        print("KVMM-JOB", job_id, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def _kill_manager_mid_job() -> str:
    """Run a manager in a child process until its job runs; SIGKILL it; the job id."""
    # The child reads the same KVMM_* environment as `settings` (same data dir, DB).
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        job_id = ""
        for line in child.stdout:  # the first start also prints the admin password
            if line.startswith("KVMM-JOB "):
                job_id = line.split()[1]
                break
        assert job_id, child.stderr.read() if child.stderr else ""
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    return job_id


async def test_job_of_a_killed_manager_is_failed_with_a_reason(settings: Settings) -> None:
    job_id = _kill_manager_mid_job()

    from kvmmanager.services.manager import Manager

    m = Manager(settings)
    await m.start()
    try:
        job = m.jobs.get(job_id)
        assert job.state == "failed"
        assert job.error["code"] == "interrupted"
        assert "restart" in job.error["message"]
        jobs, _ = m.jobs.list(state="running")
        assert jobs == []
        # The restarted manager runs new jobs normally.
        new = m.jobs.start("kvmm-t-sec.after", "x", lambda p: {"ok": True}, "admin")
        assert (await m.jobs.wait(new)).state == "done"
    finally:
        await m.stop()


# -- the real daemon ---------------------------------------------------------------------


@pytest.fixture
def sec_pool() -> Iterator[str]:
    """A transient directory pool on qemu:///system, removed with its volumes after.
    In /var/tmp, world-traversable: QEMU (another user) opens a running VM's disks."""
    with libvirtd_dir_pool("kvmm-t-sec-pool-") as pool:
        yield pool.name


def _volumes(pool: str, refresh: bool = True) -> list[str]:
    """The pool's volumes; without `refresh` as libvirt knows them (a refresh is refused
    while libvirt builds a volume in the pool, e.g. a clone's copy)."""
    conn = libvirt.open("qemu:///system")
    try:
        p = conn.storagePoolLookupByName(pool)
        if refresh:
            p.refresh(0)
        return sorted(p.listVolumes())
    finally:
        conn.close()


def _running_upload(api: httpx.Client) -> dict[str, Any] | None:
    data = api.get("/api/jobs", params={"state": "running", "kind": "volume.upload"}).json()
    items = data["items"] if isinstance(data, dict) else data
    return items[0] if items else None


@pytest.mark.libvirtd
@pytest.mark.slow
def test_kill_manager_during_volume_upload(
    server_process: Callable[..., ServerProcess],
    sec_pool: str,
    wait_for: Callable[..., Any],
    figures: dict[str, Any],
) -> None:
    """Deterministic: the test sends the first SENT_BEFORE_KILL bytes of the body, then
    holds the rest back until the server has been killed; the kill comes once the job
    reports that bytes went into the volume."""
    srv = server_process(uri="qemu:///system")
    vol = "kvmm-t-sec-upload.raw"
    url = f"/api/hosts/local/pools/{sec_pool}/volumes/{vol}/content"
    size = 64 * MIB
    sent = {"bytes": 0}
    killed = threading.Event()

    def body() -> Iterator[bytes]:
        chunk = b"\0" * MIB
        while sent["bytes"] < size:
            if sent["bytes"] >= SENT_BEFORE_KILL:
                killed.wait(120)  # the rest only once the server is gone (then it fails)
            sent["bytes"] += len(chunk)
            yield chunk

    upload = srv.spawn_upload(url, body(), size, params={"create": "true"})
    try:
        api = srv.api()
        job = wait_for(lambda: _running_upload(api), 60)
        # Held back by the rate limit, the figure used to stay 0 for as long as the body
        # stalled; now the last one is written within one interval.
        done = wait_for(lambda: api.get(f"/api/jobs/{job['id']}").json()["done"], 60)
        srv.kill()
    finally:
        killed.set()
    upload.join(60)
    figures["upload_bytes_sent_before_kill"] = sent["bytes"]
    figures["upload_bytes_reported_before_kill"] = done
    half_made = vol in _volumes(sec_pool)
    figures["half_written_volume_after_kill"] = half_made
    assert half_made  # the volume was created before the first byte: the case to clean

    srv.start()
    api = srv.api()
    after = api.get(f"/api/jobs/{job['id']}").json()
    assert after["state"] == "failed", after
    assert after["error"]["code"] == "interrupted", after
    audit = api.get("/api/audit", params={"action": "volumes.upload"}).json()
    entries = audit["items"] if isinstance(audit, dict) else audit
    assert any(e.get("job_id") == job["id"] for e in entries), entries
    # The job had recorded the volume it created: the restart removes it once the host
    # is connected, says so in the job's error message and in the audit log.
    t0 = time.monotonic()
    wait_for(lambda: vol not in _volumes(sec_pool), 60)
    figures["half_written_volume_removed_after_restart_s"] = round(time.monotonic() - t0, 2)
    msg = wait_for(lambda: _removed_message(api, job["id"]), 60)
    assert msg == f"the server restarted; its half-made volume {sec_pool}/{vol}: removed"
    assert api.get(f"/api/jobs/{job['id']}").json()["state"] == "failed"
    undo = api.get("/api/audit", params={"action": "jobs.undo_interrupted"}).json()
    undo_entries = undo["items"] if isinstance(undo, dict) else undo
    assert [(e["job_id"], e["result"]) for e in undo_entries] == [(job["id"], "ok")]


def _removed_message(api: httpx.Client, job_id: str) -> str | None:
    msg = api.get(f"/api/jobs/{job_id}").json()["error"]["message"]
    return msg if "removed" in msg else None


SOURCE_DISKS = {"vda": 320 * MIB, "vdb": 32 * MIB}  # vda's copy is the one killed


@pytest.fixture
def clone_source(sec_pool: str) -> Iterator[tuple[str, str]]:
    """A shut-off VM whose two raw disks (random bytes: no sparse shortcut in the copy)
    are volumes of `sec_pool`; (its name, the clone's name). Both VMs are removed after."""
    tag = uuid.uuid4().hex[:6]
    name, clone = f"kvmm-t-sec-src-{tag}", f"kvmm-t-sec-cln-{tag}"
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(sec_pool)
        target = Path(Pool.from_xml(pool.XMLDesc(0)).target_path or "")
        definition = Domain(type="qemu", name=name, memory=64 * 1024)
        definition.os.os_type = "hvm"
        definition.os.arch, definition.os.machine = "x86_64", "pc"
        for dev, size in SOURCE_DISKS.items():
            path = target / f"{name}-{dev}.raw"
            with open(path, "wb") as f:
                for _ in range(size // MIB):
                    f.write(os.urandom(MIB))
            disk = definition.devices.add(Disk(type="file", device="disk", source_file=str(path)))
            disk.driver_name, disk.driver_type = "qemu", "raw"
            disk.target_dev, disk.target_bus = dev, "virtio"
        pool.refresh(0)
        conn.defineXML(definition.to_xml())
        yield name, clone
    finally:
        conn.close()
        conn = libvirt.open("qemu:///system")  # fresh: libvirtd may have restarted meanwhile
        for vm in (clone, name):
            try:
                dom = conn.lookupByName(vm)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            # A failed running-clone run may leave the temporary snapshot behind.
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        conn.close()


def _domains() -> dict[str, str]:
    conn = libvirt.open("qemu:///system")
    try:
        return {d.UUIDString(): d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class CloneKill:
    """A kill-during-clone run: the shut-off source VM of `clone_source`, the clone's
    name, their pool, and the fixtures that start a manager, wait and record figures."""

    source: str
    clone: str
    pool: str
    server_process: Callable[..., ServerProcess]
    wait_for: Callable[..., Any]
    figures: dict[str, Any]

    def kill_at_first_copy(self, **options: str) -> tuple[ServerProcess, str, str]:
        """Start a manager on libvirtd, ask it for a full clone (with `options`) and kill
        -9 it as soon as the copy of the first disk shows up in the pool (libvirt adds
        the new volume before it copies a byte); the bytes copied by then are a figure.
        Returns the killed server (to start again), the job's id and the first copy."""
        srv = self.server_process(uri="qemu:///system")
        api = srv.api()
        self.wait_for(lambda: api.get("/api/hosts/local").json()["status"] == "connected", 60)
        r = api.post(
            f"/api/hosts/local/vms/{self.source}/clone",
            json={"name": self.clone, "mode": "full", **options},
        )
        assert r.status_code == 202, r.text
        first = f"{self.clone}-vda.raw"
        self.wait_for(lambda: first in _volumes(self.pool, refresh=False), 60, every=0.01)
        srv.kill()
        conn = libvirt.open("qemu:///system")
        try:
            vol = conn.storagePoolLookupByName(self.pool).storageVolLookupByName(first)
            self.figures["clone_copy_bytes_at_kill"] = vol.info()[2]
        finally:
            conn.close()
        return srv, r.json()["job_id"], first


@pytest.fixture
def clone_kill(
    server_process: Callable[..., ServerProcess],
    sec_pool: str,
    clone_source: tuple[str, str],
    wait_for: Callable[..., Any],
    figures: dict[str, Any],
) -> CloneKill:
    return CloneKill(*clone_source, sec_pool, server_process, wait_for, figures)


@pytest.mark.libvirtd
@pytest.mark.slow
def test_kill_manager_during_vm_clone(clone_kill: CloneKill) -> None:
    """kill -9 as soon as the copy of the first disk shows up in the pool (libvirt adds
    the new volume before it copies a byte): the job cannot have ended (a second disk
    and the definition are still to come). libvirtd goes on copying for its dead client;
    the restart waits for that copy to end, deletes it, and fails the job saying so."""
    source, clone = clone_kill.source, clone_kill.clone
    srv, job_id, first = clone_kill.kill_at_first_copy()
    at_kill = _volumes(clone_kill.pool, refresh=False)
    clone_kill.figures["clone_volumes_at_kill"] = len([v for v in at_kill if v.startswith(clone)])
    assert clone not in _domains().values()

    t_start = time.monotonic()
    srv.start()
    clone_kill.figures["server_start_s"] = round(time.monotonic() - t_start, 2)
    api = srv.api()
    after = api.get(f"/api/jobs/{job_id}").json()
    assert after["state"] == "failed", after
    assert after["error"]["code"] == "interrupted", after
    msg = clone_kill.wait_for(lambda: _undo_message(api, job_id), 180)
    clone_kill.figures["half_made_clone_removed_after_s"] = round(time.monotonic() - t_start, 2)
    # The second disk and the definition were never reached: recorded only once due.
    assert msg == (
        f"the server restarted; its half-made volume {clone_kill.pool}/{first}: removed"
    ), msg
    assert [v for v in _volumes(clone_kill.pool) if v.startswith(clone)] == []
    assert clone not in _domains().values()

    def inventory_right() -> bool:
        ours = {v["uuid"]: v["name"] for v in api.get("/api/hosts/local/vms").json()}
        return ours == _domains()

    clone_kill.wait_for(inventory_right, 60)
    clone_kill.figures["inventory_right_after_start_s"] = round(time.monotonic() - t_start, 2)
    clone_audit = api.get("/api/audit", params={"action": "clones.create"}).json()
    entries = clone_audit["items"] if isinstance(clone_audit, dict) else clone_audit
    assert [e["job_id"] for e in entries] == [job_id], entries
    undo = api.get("/api/audit", params={"action": "jobs.undo_interrupted"}).json()
    undo_entries = undo["items"] if isinstance(undo, dict) else undo
    assert [(e["job_id"], e["result"]) for e in undo_entries] == [(job_id, "ok")]
    # The restarted manager clones the same VM under the same name without conflict.
    r = api.post(f"/api/hosts/local/vms/{source}/clone", json={"name": clone, "mode": "full"})
    assert r.status_code == 202, r.text
    done = clone_kill.wait_for(lambda: _final(api, r.json()["job_id"]), 300)
    assert done["state"] == "done", done
    assert sorted(v for v in _volumes(clone_kill.pool) if v.startswith(clone)) == [
        f"{clone}-vda.raw",
        f"{clone}-vdb.raw",
    ]


def _source_state(name: str) -> tuple[bool, list[str], dict[str, str]]:
    """The source VM: running?, its snapshots, each disk's live source."""
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByName(name)
        disks = Domain.from_xml(dom.XMLDesc(0)).devices.disks
        return (
            bool(dom.isActive()),
            [s.getName() for s in dom.listAllSnapshots()],
            {d.target_dev: d.source_file for d in disks if d.target_dev},
        )
    finally:
        conn.close()


@pytest.mark.libvirtd
@pytest.mark.slow
def test_kill_manager_during_running_vm_clone(clone_kill: CloneKill) -> None:
    """A RUNNING source (consistent="snapshot"): the clone puts it on a temporary
    external snapshot and copies the read-only images under it. Killed as soon as the
    first copy shows up, the clone's `finally` (merge back) never runs; the restart
    deletes the half-made copy, then merges the source back off its overlay."""
    source = clone_kill.source
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(source).create()  # no OS: it idles in SeaBIOS
    finally:
        conn.close()
    _, _, original = _source_state(source)
    srv, job_id, first = clone_kill.kill_at_first_copy(consistent="snapshot")
    running, snapshots, on_overlay = _source_state(source)
    clone_kill.figures["source_on_snapshot_at_kill"] = snapshots == ["kvmm-clone-source"]
    assert running and snapshots == ["kvmm-clone-source"], snapshots
    assert all(on_overlay[d] != original[d] for d in SOURCE_DISKS), on_overlay

    t_start = time.monotonic()
    srv.start()
    api = srv.api()
    after = api.get(f"/api/jobs/{job_id}").json()
    assert (after["state"], after["error"]["code"]) == ("failed", "interrupted"), after
    msg = clone_kill.wait_for(lambda: _undo_message(api, job_id), 180)
    clone_kill.figures["source_merged_back_after_s"] = round(time.monotonic() - t_start, 2)
    # Newest first: the copy (once libvirtd has finished it), then the snapshot.
    assert msg == (
        f"the server restarted; its half-made volume {clone_kill.pool}/{first}: removed; "
        f"snapshot kvmm-clone-source of vm {source}: removed (block-commit)"
    ), msg
    running, snapshots, disks = _source_state(source)
    assert running and snapshots == [], snapshots
    assert disks == original, disks  # pivoted back onto its own images
    # Neither the copy nor the overlays are left in the pool.
    assert sorted(_volumes(clone_kill.pool)) == sorted(Path(p).name for p in original.values())
    undo = api.get("/api/audit", params={"action": "jobs.undo_interrupted"}).json()
    undo_entries = undo["items"] if isinstance(undo, dict) else undo
    assert [(e["job_id"], e["result"]) for e in undo_entries] == [(job_id, "ok")]


def _undo_message(api: httpx.Client, job_id: str) -> str | None:
    """The job's error message once the restart has undone what it recorded."""
    msg = api.get(f"/api/jobs/{job_id}").json()["error"]["message"]
    return msg if msg != "the server restarted" else None


def _final(api: httpx.Client, job_id: str) -> dict[str, Any] | None:
    job = api.get(f"/api/jobs/{job_id}").json()
    return job if job["state"] in ("done", "failed", "cancelled") else None
