"""An operator must not read host files through an image's backing chain (issue 14).

The attack: a qcow2 image whose header names a host file as its backing file (or as its
external data file) is uploaded into a pool; a libvirt clone to raw then makes libvirtd
read that file with root's rights, and the clone is downloadable. Here the "host file" is
a 0600 file of our own in a directory outside every pool, standing for /etc/shadow or
the manager's database. Real libvirtd (qemu:///system), real images made by qemu-img.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from fastapi.testclient import TestClient
from tests.libvirtd_pools import (
    LIBVIRTD_URI,
    DirPool,
    libvirtd_dir_pool,
    qcow2_domain_xml,
    qemu_dir,
)

from kvmmanager.core.config import Settings
from kvmmanager.db.models import JOB_STATES
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd

SECRET = b"kvmm-t-sechost-SECRET-line: root:$6$not-for-you\n"
MIB = 1 << 20


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = LIBVIRTD_URI
    return settings


@pytest.fixture
def operator(client: TestClient, role_client: Callable[[str], TestClient]) -> TestClient:
    host = client.app.state.manager.registry.get("local")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    return role_client("operator")


@pytest.fixture
def pool() -> Iterator[DirPool]:
    with libvirtd_dir_pool("kvmm-t-sechost-") as made:
        yield made


@pytest.fixture
def secret_file() -> Iterator[Path]:
    """A root-only file outside every pool: what the attacker wants to read."""
    where = qemu_dir("kvmm-t-sechost-secret-")
    path = where / "shadow"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        where.rmdir()


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def evil_image(tmp_path: Path, secret: Path, how: str = "backing") -> bytes:
    """A qcow2 whose header points at `secret`: as its backing file or its data file."""
    image = tmp_path / f"evil-{how}.qcow2"
    if how == "backing":
        qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(image), "1M")
    else:
        # An external data file: QEMU reads and writes the guest's data in that file.
        opts = f"data_file={secret},data_file_raw=on"
        qemu_img("create", "-q", "-f", "qcow2", "-o", opts, str(image), str(len(SECRET)))
    return image.read_bytes()


def volumes(pool: str) -> set[str]:
    conn = libvirt.open(LIBVIRTD_URI)
    try:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        return {v.name() for v in p.listAllVolumes(0)}
    finally:
        conn.close()


def url(pool: str, vol: str = "") -> str:
    return f"/api/hosts/local/pools/{pool}/volumes" + (f"/{vol}" if vol else "")


# A job's states that are not an end (the model's own list): the helper waited only while
# "pending" (no such state) or "running", so a job not yet started under load ("queued")
# was returned as if it had ended (a clean-clone run failed so: 'queued' == 'done').
UNFINISHED = ("queued", "running")
assert set(UNFINISHED) < set(JOB_STATES)


def wait_job(c: TestClient, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        job = c.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in UNFINISHED:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def leaked(c: TestClient, pool: str, vol: str) -> bool:
    """The attack's payoff: clone `vol` to raw and download the clone."""
    r = c.post(url(pool, vol) + "/clone", json={"name": f"{vol}-raw", "format": "raw"})
    if r.status_code != 202:
        return False
    if wait_job(c, r.json()["job_id"])["state"] != "done":
        return False
    got = c.get(url(pool, f"{vol}-raw") + "/content")
    return got.status_code == 200 and SECRET in got.content


@pytest.mark.parametrize("create", [True, False], ids=["create", "overwrite"])
@pytest.mark.parametrize("declared", [None, "raw", "iso", "qcow2"])
def test_upload_naming_a_backing_file_is_refused_whatever_the_declared_format(
    operator: TestClient,
    pool: DirPool,
    secret_file: Path,
    tmp_path: Path,
    create: bool,
    declared: str | None,
) -> None:
    data = evil_image(tmp_path, secret_file)
    if not create:
        r = operator.post(url(pool.name), json={"name": "victim", "capacity": MIB, "format": "raw"})
        assert r.status_code == 201, r.text
    params: dict[str, object] = {"create": create}
    if declared:
        params["format"] = declared
    vol = "evil" if create else "victim"
    r = operator.put(url(pool.name, vol) + "/content", params=params, content=data)
    accepted = r.status_code == 200
    payoff = accepted and leaked(operator, pool.name, vol)
    assert not payoff, "the clone of the uploaded image carried the host file's bytes"
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "format" and "backing file" in err["message"], err
    assert str(secret_file) in err["message"]
    # Nothing half-made stays: the new volume, or the overwritten one, is gone, and so
    # is its owner record (a later volume of that name is not that operator's).
    assert volumes(pool.name) == set()
    manager = operator.app.state.manager  # type: ignore[attr-defined]
    assert manager.ownership.volume_owners("local", pool.name, vol) == []


def test_upload_with_an_external_data_file_is_refused(
    operator: TestClient, pool: DirPool, secret_file: Path, tmp_path: Path
) -> None:
    data = evil_image(tmp_path, secret_file, how="data_file")
    r = operator.put(
        url(pool.name, "evil") + "/content",
        params={"create": True, "format": "qcow2"},
        content=data,
    )
    assert r.status_code == 422, r.text
    assert "another file" in r.json()["error"]["message"]
    assert volumes(pool.name) == set()


def test_upload_must_be_the_declared_format(
    operator: TestClient, pool: DirPool, tmp_path: Path
) -> None:
    flat = tmp_path / "flat.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(flat), "1M")
    r = operator.put(
        url(pool.name, "a") + "/content", params={"create": True, "format": "raw"},
        content=flat.read_bytes(),
    )  # fmt: skip
    assert r.status_code == 422, r.text
    assert "format=qcow2" in r.json()["error"]["message"]
    r = operator.put(
        url(pool.name, "b") + "/content", params={"create": True, "format": "qcow2"},
        content=b"\0" * MIB,
    )  # fmt: skip
    assert r.status_code == 422 and "not a qcow2" in r.json()["error"]["message"], r.text
    assert volumes(pool.name) == set()
    # What the rule lets through: a flat qcow2 declared qcow2, raw bytes declared raw.
    ok = operator.put(
        url(pool.name, "c") + "/content", params={"create": True, "format": "qcow2"},
        content=flat.read_bytes(),
    )  # fmt: skip
    assert ok.status_code == 200 and ok.json()["volume"]["format"] == "qcow2", ok.text
    ok = operator.put(url(pool.name, "d") + "/content", params={"create": True}, content=b"x" * 512)
    assert ok.status_code == 200, ok.text
    assert volumes(pool.name) == {"c", "d"}


def test_clone_and_download_refuse_a_chain_leaving_the_pools(
    operator: TestClient, pool: DirPool, secret_file: Path, tmp_path: Path
) -> None:
    """A volume that already names a host file (put there behind the manager's back, or
    uploaded before the upload check existed) is neither cloned nor handed out; the
    manager's own chains (an overlay on a volume of a pool) still are."""
    (pool.path / "legacy.qcow2").write_bytes(evil_image(tmp_path, secret_file))
    assert "legacy.qcow2" in volumes(pool.name)
    r = operator.post(
        url(pool.name, "legacy.qcow2") + "/clone", json={"name": "x", "format": "raw"}
    )
    payoff = r.status_code == 202 and wait_job(operator, r.json()["job_id"])["state"] == "done"
    assert not payoff, "libvirtd copied the host file into a new volume"
    assert r.status_code == 422, r.text
    assert str(secret_file) in r.json()["error"]["message"]
    r = operator.get(url(pool.name, "legacy.qcow2") + "/content")
    assert r.status_code == 422 and "backing file" in r.json()["error"]["message"], r.text

    base = operator.post(url(pool.name), json={"name": "base", "capacity": MIB, "format": "raw"})
    assert base.status_code == 201, base.text
    overlay = {"name": "top", "format": "qcow2", "backing": {"volume": "base"}}
    assert operator.post(url(pool.name), json=overlay).status_code == 201
    r = operator.post(url(pool.name, "top") + "/clone", json={"name": "flat", "format": "raw"})
    assert r.status_code == 202 and wait_job(operator, r.json()["job_id"])["state"] == "done"
    assert operator.get(url(pool.name, "top") + "/content").status_code == 200


def _bundle(path: Path, disk: bytes, fmt: str) -> None:
    name = f"kvmm-t-sechost-{uuid.uuid4().hex[:6]}"
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    d = Disk(type="file", device="disk", driver_name="qemu", driver_type=fmt)
    d.source_file, d.target_dev, d.target_bus = "/nowhere/vda", "vda", "virtio"
    dom.devices.add(d)
    xml = dom.to_xml().encode()
    member = f"disks/vda.{fmt}"
    entry = {
        "target": "vda",
        "file": member,
        "format": fmt,
        "bytes": len(disk),
        "sha256": hashlib.sha256(disk).hexdigest(),
    }
    manifest = {
        "format": "kvmm-bundle",
        "version": 1,
        "vm": name,
        "disks": [entry],
        "domain_sha256": hashlib.sha256(xml).hexdigest(),
    }
    with tarfile.open(path, "w:gz") as tar:
        for member_name, data in (
            (member, disk),
            ("domain.xml", xml),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bundle_import_uses_the_same_check(
    operator: TestClient, pool: DirPool, secret_file: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "evil.tar.gz"
    _bundle(bundle, evil_image(tmp_path, secret_file), "qcow2")
    r = operator.post(
        "/api/hosts/local/imports/bundle", params={"pool": pool.name}, content=bundle.read_bytes()
    )
    assert r.status_code == 202, r.text
    job = wait_job(operator, r.json()["job_id"])
    assert job["state"] == "failed", job
    assert "backing file" in job["error"]["message"] and "vda" in job["error"]["message"]
    assert volumes(pool.name) == set()
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        assert not [d for d in conn.listAllDomains() if d.name().startswith("kvmm-t-sechost-")]


def test_vm_clone_refuses_a_disk_whose_chain_leaves_the_pools(
    client: TestClient, operator: TestClient, pool: DirPool, secret_file: Path, tmp_path: Path
) -> None:
    """The same chain under a VM (defined by an admin, unowned): cloning the VM would make
    libvirtd copy the host file into the clone's new volume."""
    (pool.path / "legacy.qcow2").write_bytes(evil_image(tmp_path, secret_file))
    assert "legacy.qcow2" in volumes(pool.name)
    name = f"kvmm-t-sechost-{uuid.uuid4().hex[:8]}"
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        path = conn.storagePoolLookupByName(pool.name).storageVolLookupByName("legacy.qcow2")
        conn.defineXML(qcow2_domain_xml(name, path.path()))
        try:
            r = operator.post(f"/api/hosts/local/vms/{name}/clone", json={"name": f"{name}-c"})
            if r.status_code == 202:
                wait_job(operator, r.json()["job_id"])
            copied = [v for v in volumes(pool.name) if v.startswith(f"{name}-c")]
            assert not copied, f"libvirtd copied the host file into {copied}"
            assert r.status_code == 422, r.text
            assert str(secret_file) in r.json()["error"]["message"]
        finally:
            for dom_name in (name, f"{name}-c"):
                with contextlib.suppress(libvirt.libvirtError):
                    conn.lookupByName(dom_name).undefine()


def test_a_chain_leaving_the_pools_cannot_become_a_vm_disk(
    operator: TestClient, pool: DirPool, secret_file: Path, tmp_path: Path
) -> None:
    """Given to a VM as an existing volume, QEMU would follow the chain to the host file
    and the guest would read it."""
    (pool.path / "legacy.qcow2").write_bytes(evil_image(tmp_path, secret_file))
    assert "legacy.qcow2" in volumes(pool.name)
    name = f"kvmm-t-sechost-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": name,
        "memory_mib": 64,
        "disks": [{"pool": pool.name, "volume": "legacy.qcow2"}],
    }
    try:
        r = operator.post("/api/hosts/local/vms", json=spec)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == "disks[0].volume" and str(secret_file) in err["message"], err
    finally:
        conn = libvirt.open(LIBVIRTD_URI)
        with contextlib.closing(conn), contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).undefine()
