"""Bundles through the REST API and `kvm-manager export bundle/import-bundle` against a
live server on the real libvirtd: the imported VM's disk is byte-identical; viewers
cannot download a bundle."""

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

import httpx
import libvirt
import pytest

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"


@pytest.fixture
def real_settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def prefix() -> Iterator[tuple[str, Path]]:
    p = f"kvmm-t-ops-{uuid.uuid4().hex[:6]}"
    base = Path(tempfile.mkdtemp(prefix=p, dir="/var/tmp"))
    try:
        yield p, base
    finally:
        conn = libvirt.open(URI)
        try:
            for dom in conn.listAllDomains():
                if dom.name().startswith(p):
                    dom.undefine()
            for pool in conn.listAllStoragePools():
                if pool.name().startswith(p):
                    if pool.isActive():
                        for vol in pool.listAllVolumes(0):
                            vol.delete(0)
                        pool.destroy()
                    pool.undefine()
        finally:
            conn.close()
        shutil.rmtree(base, ignore_errors=True)


def test_cli_bundle_roundtrip(real_settings, prefix, cli, live_server, tmp_path):
    p, base = prefix
    host = live_server.manager.registry.get("local")
    # Generous: the shared libvirtd can be slow to answer under load.
    deadline = time.monotonic() + 120
    while not host.connected:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for suffix in ("a", "b"):
        r = cli("pool", "create", f"{p}-{suffix}", "--target", str(base / suffix),
                "--no-autostart")  # fmt: skip
        assert r.exit_code == 0, r.stderr
    data = tmp_path / "disk.raw"
    data.write_bytes(os.urandom(1 << 20) + b"\0" * (1 << 20))
    r = cli("vol", "upload", f"{p}-a", "disk.raw", str(data), "--format", "raw")
    assert r.exit_code == 0, r.stderr
    r = cli("vm", "create", f"{p}-vm", "--memory", "64", "--disk", f"{p}-a/disk.raw")
    assert r.exit_code == 0, r.stderr

    bundle = tmp_path / "vm.tar.gz"
    r = cli("--json", "export", "bundle", f"{p}-vm", "-o", str(bundle), "--keep")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["manifest"]["disks"][0]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert bundle.stat().st_size == out["bytes"]

    # Bundles carry whole disks: viewers may not download them.
    viewer = "kvmm-t-ops-viewer"
    live_server.manager.users.create(viewer, "kvmm-t-password", "viewer")
    _, secret = live_server.manager.users.create_token(viewer, "kvmm-t-ops")
    url = f"{live_server.url}/api/exports/{out['bundle_id']}"
    assert httpx.get(url, headers={"Authorization": f"Bearer {secret}"}).status_code == 403
    admin = {"Authorization": f"Bearer {live_server.token}"}
    assert httpx.delete(url, headers=admin).status_code == 204
    assert httpx.get(url, headers=admin).status_code == 404

    r = cli("--json", "export", "import-bundle", str(bundle), "--pool", f"{p}-b",
            "--name", f"{p}-copy", "--new-identity")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["vm"]["name"] == f"{p}-copy"
    assert res["volumes"] == [f"{p}-b/{p}-copy-vda.raw"]
    copy = tmp_path / "copy.raw"
    r = cli("vol", "download", f"{p}-b", f"{p}-copy-vda.raw", str(copy))
    assert r.exit_code == 0, r.stderr
    assert copy.read_bytes() == data.read_bytes()

    r = cli("export", "import-bundle", str(data), "--pool", f"{p}-b")
    assert r.exit_code == 2 and "not a valid bundle" in r.stderr
    r = cli("export", "import-bundle", str(bundle), "--pool", "kvmm-t-ops-nopool")
    assert r.exit_code == 4, r.stderr
