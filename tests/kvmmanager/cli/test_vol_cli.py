"""`kvm-manager vol ...` against a live server on the test driver (no streams there:
upload/download run against libvirtd in test_vol_cli_libvirtd.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def pool(cli: Any, live_server: Any) -> Iterator[str]:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    assert cli("pool", "create", name, "--target", f"/kvmm-t-sto/{name}").exit_code == 0
    yield name
    cli("pool", "delete", name, "--delete-volumes", "--force")


def _json(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_vol_commands(cli: Any, pool: str) -> None:
    vol = _json(cli("--json", "vol", "create", pool, "a.qcow2", "--capacity", "2G"))
    assert vol["capacity"] == 2 << 30 and vol["format"] == "qcow2"
    raw = _json(cli("--json", "vol", "create", pool, "b.raw", "-c", "10M", "-f", "raw"))
    assert raw["format"] == "raw"

    table = cli("vol", "list", pool)
    assert table.exit_code == 0 and "a.qcow2" in table.stdout and "2.0 GiB" in table.stdout
    assert _json(cli("--json", "vol", "show", pool, "a.qcow2"))["used_by"] == []

    cloned = _json(cli("--json", "vol", "clone", pool, "a.qcow2", "c.qcow2"))
    assert cloned["name"] == "c.qcow2" and cloned["capacity"] == 2 << 30
    started = _json(cli("--json", "vol", "clone", pool, "a.qcow2", "d.qcow2", "--no-wait"))
    assert started["job_id"]

    dup = cli("vol", "create", pool, "a.qcow2", "--capacity", "1G")
    assert dup.exit_code == 5 and dup.stderr.startswith("error: ")
    bad = cli("vol", "create", pool, "x.qcow2", "--capacity", "-3")
    assert bad.exit_code == 2 and "capacity" in bad.stderr
    assert cli("vol", "delete", pool, "b.raw").exit_code == 0
    assert cli("vol", "show", pool, "b.raw").exit_code == 4


def test_upload_of_missing_file_is_refused(cli: Any, pool: str, tmp_path: Any) -> None:
    result = cli("vol", "upload", pool, "x.raw", str(tmp_path / "missing.img"))
    assert result.exit_code != 0


def test_download_refuses_to_overwrite(cli: Any, pool: str, tmp_path: Any) -> None:
    target = tmp_path / "exists.img"
    target.write_bytes(b"keep")
    result = cli("vol", "download", pool, "a.qcow2", str(target))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert target.read_bytes() == b"keep"


def test_resize_refusal_names_the_cli_flag(cli: Any, pool: str) -> None:
    """Issue 17 item 10: the refusal said `needs shrink=true` (the API's words)."""
    _json(cli("--json", "vol", "create", pool, "s.qcow2", "--capacity", "64M"))
    res = cli("vol", "resize", pool, "s.qcow2", "32MiB")
    assert res.exit_code == 2
    assert "needs --shrink" in res.stderr and "shrink=" not in res.stderr
