"""`kvm-manager vol upload/download` through a live server into the real libvirtd:
the file streams through in chunks and comes back byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.libvirtd


def _drop_pool(name: str) -> None:
    """Remove the pool and its volumes over a fresh connection (whatever happened to the
    server's own connection during the test)."""
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
    return settings


@pytest.fixture
def pool(cli: Any, live_server: Any) -> Iterator[str]:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    workdir = Path(tempfile.mkdtemp(prefix="kvmm-t-sto-", dir="/var/tmp"))
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    try:
        created = cli("pool", "create", name, "--target", str(workdir / "pool"), "--no-autostart")
        assert created.exit_code == 0, created.stderr
        yield name
    finally:
        cli("pool", "delete", name, "--delete-volumes", "--force")
        _drop_pool(name)
        shutil.rmtree(workdir, ignore_errors=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_upload_and_download_round_trip(cli: Any, pool: str, tmp_path: Path) -> None:
    src = tmp_path / "disk.img"
    src.write_bytes(os.urandom(3 * (1 << 20) + 5))
    up = cli("--json", "vol", "upload", pool, "disk.img", str(src))
    assert up.exit_code == 0, up.stderr
    assert json.loads(up.stdout)["volume"]["capacity"] == src.stat().st_size

    again = cli("vol", "upload", pool, "disk.img", str(src))
    assert again.exit_code == 5 and "already exists" in again.stderr

    out = tmp_path / "back.img"
    down = cli("vol", "download", pool, "disk.img", str(out))
    assert down.exit_code == 0, down.stderr
    assert _sha(out) == _sha(src)
    assert not (tmp_path / "back.img.part").exists()

    # --overwrite writes into the existing volume.
    src.write_bytes(os.urandom(src.stat().st_size))
    assert cli("vol", "upload", pool, "disk.img", str(src), "--overwrite").exit_code == 0
    assert cli("vol", "download", pool, "disk.img", str(out), "--force").exit_code == 0
    assert _sha(out) == _sha(src)

    resized = cli("--json", "vol", "resize", pool, "disk.img", "8M")
    assert resized.exit_code == 0, resized.stderr
    assert json.loads(resized.stdout)["capacity"] == 8 << 20
