"""An export bundle made through one instance is downloaded through another, behind the
documented HAProxy example (issue 16 item 3): two server processes on one PostgreSQL
database and the shared libvirtd, `fleet.exports_dir` set to one directory for both. The
bundle's job runs on the instance that took the request; the download is repeated
through the balancer until the other instance serves it, and its disk is byte-identical.

The test's own libvirt objects (a dir pool under /var/tmp, a raw volume, a defined VM)
carry a unique prefix and are removed at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import libvirt
import pytest
from tests.libvirtd_pools import dir_pool_xml
from tests.postgres_cluster import shared_cluster
from tests.reliability.balancer import HAProxy, start_instances
from tests.reliability.conftest import ServerProcess

pytestmark = [pytest.mark.libvirtd, pytest.mark.slow]
URI = "qemu:///system"
WAIT = 120.0


@pytest.fixture
def vm_with_a_disk() -> Iterator[tuple[str, bytes]]:
    prefix = f"kvmm-t-lbx-{uuid.uuid4().hex[:6]}"
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(base, 0o755)
    data = os.urandom(1 << 20)
    (base / "disk.raw").write_bytes(data)
    conn = libvirt.open(URI)
    try:
        pool = conn.storagePoolDefineXML(dir_pool_xml(prefix, base))
        pool.create()
        pool.refresh()
        conn.defineXML(
            f"""<domain type='qemu'><name>{prefix}-vm</name>
            <memory unit='MiB'>64</memory><vcpu>1</vcpu>
            <os><type arch='x86_64'>hvm</type></os>
            <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
            <source file='{base / "disk.raw"}'/><target dev='vda' bus='virtio'/></disk>
            </devices></domain>"""
        )
        yield f"{prefix}-vm", data
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix):
                dom.undefine()
        for p in conn.listAllStoragePools():
            if p.name().startswith(prefix):
                if p.isActive():
                    p.destroy()
                p.undefine()
        conn.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[HAProxy, dict[str, ServerProcess]]]:
    extra = {
        "KVMM_FLEET__EXPORTS_DIR": str(tmp_path / "shared-exports"),
        # No accelerator probe guests: what is tested is where the bundle is found.
        "KVMM_LIBVIRT__ACCEL": "tcg",
    }
    url = shared_cluster().new_database()
    instances = start_instances(tmp_path, url, ["a", "b"], URI, extra)
    lb = None
    try:
        lb = HAProxy(tmp_path, {name: srv.port for name, srv in instances.items()})
        lb.wait_all_up()
        yield lb, instances
    finally:
        if lb is not None:
            lb.stop()
        for srv in instances.values():
            srv.stop()


def _until(fn: object, message: str) -> object:
    deadline = time.monotonic() + WAIT
    while True:
        value = fn()  # type: ignore[operator]
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def test_a_bundle_exported_through_one_instance_downloads_through_the_other(
    vm_with_a_disk: tuple[str, bytes],
    balanced: tuple[HAProxy, dict[str, ServerProcess]],
) -> None:
    vm, data = vm_with_a_disk
    lb, instances = balanced
    instances["a"].api().close()  # the admin token (first password changed)
    headers = {"Authorization": f"Bearer {instances['a'].token}"}
    with httpx.Client(base_url=lb.url, headers=headers, timeout=60) as api:
        # Both instances know the VM (each has its own libvirt connection).
        for srv in instances.values():
            _until(
                lambda srv=srv: (
                    httpx.get(
                        f"{srv.url}/api/hosts/local/vms/{vm}", headers=headers, timeout=30
                    ).status_code
                    == 200
                ),
                f"{srv.url} never listed {vm}",
            )
        r = api.post(f"/api/hosts/local/vms/{vm}/export/bundle")
        assert r.status_code == 202, r.text
        maker = r.headers["X-Served-By"]
        job_id = r.json()["job_id"]

        def finished() -> dict[str, object] | None:
            job = api.get(f"/api/jobs/{job_id}").json()
            return job if job["state"] in ("done", "failed", "cancelled") else None

        job = _until(finished, "the export job never ended")
        assert job["state"] == "done", job  # type: ignore[index]
        bundle_id = job["result"]["bundle_id"]  # type: ignore[index]

        # Round robin: within a few requests the other instance serves the download.
        for _ in range(10):
            r = api.get(f"/api/exports/{bundle_id}")
            if r.headers.get("X-Served-By") != maker:
                break
        assert r.headers["X-Served-By"] != maker, "the balancer never chose the other one"
        assert r.status_code == 200, r.text
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            disk = tar.extractfile(manifest["disks"][0]["file"]).read()  # type: ignore[union-attr]
        assert disk == data
        assert manifest["disks"][0]["sha256"] == hashlib.sha256(data).hexdigest()
        assert api.delete(f"/api/exports/{bundle_id}").status_code == 204
