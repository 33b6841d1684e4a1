"""`kvm-manager agent-iso ...` and `kvm-manager doctor`: local commands and via the server."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt
import pytest
from typer.testing import CliRunner

from kvmmanager.cli.main import app as cli_app
from kvmmanager.core.config import Settings
from kvmmanager.iso import ISO_NAME, agent_version
from kvmmanager.services.guest.iso_deploy import volume_name
from kvmmanager.virt.xml.network import Network

URI = "qemu:///system"


def _local(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "200", **(env or {})})


def test_build_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        res = _local(
            "--json",
            "agent-iso",
            "build",
            "-o",
            str(tmp_path / name / ISO_NAME),
            "--source-date-epoch",
            "1700000000",
        )
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.stdout))
    assert outs[0]["sha256"] == outs[1]["sha256"]
    assert outs[0]["version"] == agent_version()
    assert outs[0]["files"] == 14


def test_build_and_release_take_one_epoch_so_one_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 item 16: `agent-iso build` took the newest input mtime, scripts/release the
    last commit's time: one agent version, two ISO hashes. Now both take the last commit
    that changed the agent."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    root = Path(__file__).resolve().parents[3]
    # release.py imports its sibling modules as the script it is (python packaging/release.py).
    monkeypatch.syspath_prepend(str(root / "packaging"))
    spec = importlib.util.spec_from_file_location("kvmm_release", root / "packaging/release.py")
    assert spec is not None and spec.loader is not None
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    agent_dirs = [str(root / "packaging/agent"), str(root / "src/kvmmanager_agent")]
    committed = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%ct", "--", *agent_dirs],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert release.agent_epoch() == int(committed)

    built = _local("--json", "agent-iso", "build", "-o", str(tmp_path / "cli" / ISO_NAME))
    assert built.exit_code == 0, built.output
    as_release = _local(
        "--json", "agent-iso", "build", "-o", str(tmp_path / "rel" / ISO_NAME),
        "--source-date-epoch", str(release.agent_epoch()),
    )  # fmt: skip
    assert as_release.exit_code == 0, as_release.output
    assert json.loads(built.stdout)["sha256"] == json.loads(as_release.stdout)["sha256"]


def test_locate_lists_every_fallback(settings: Settings, tmp_path: Path) -> None:
    res = _local("--json", "agent-iso", "locate", env={"XDG_DATA_HOME": str(tmp_path)})
    assert res.exit_code == 0, res.output
    sources = [row["source"] for row in json.loads(res.stdout)]
    assert sources == ["xdg", "system", "package", "build"]


def test_doctor_on_an_unreachable_uri_exits_1() -> None:
    res = _local("doctor", "--uri", "qemu+unix:///system?socket=/nonexistent/kvmm-t-iso.sock")
    assert res.exit_code == 1
    assert "FAIL" in res.stdout and "libvirt" in res.stdout


@pytest.mark.libvirtd
def test_doctor_kvm_fix_matches_the_failure_seen(settings: Settings) -> None:
    """Issue 17 item 12: with /dev/kvm working but QEMU dying on an MSR assertion (nested
    KVM, as on this machine), doctor said to enable VT-x in the firmware."""
    res = _local("--json", "doctor", "--uri", URI)
    assert res.exit_code in (0, 1), res.output
    report = json.loads(res.stdout)
    checks = report["checks"] if isinstance(report, dict) else report[0]["checks"]
    [kvm] = [c for c in checks if c["name"] == "kvm"]
    if kvm["status"] == "ok":
        return  # a host where KVM works: nothing to fix
    if "could not start" in kvm["message"] or "slower than emulation" in kvm["message"]:
        assert "firmware" not in kvm["fix"] and "outer host" in kvm["fix"]
    else:
        assert "firmware" in kvm["fix"]


@pytest.mark.libvirtd
def test_doctor_local_json_with_a_stopped_network(settings: Settings) -> None:
    conn = libvirt.open(URI)
    name = f"kvmm-t-iso-net-{uuid.uuid4().hex[:6]}"
    net = conn.networkDefineXML(Network(name=name).to_xml())
    conn.close()
    try:
        res = _local("doctor", "--uri", URI, "--network", name, "--json")
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            net.undefine()
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["network"]["status"] == "fail"
    assert checks["network"]["fix"] == f"kvm-manager net start {name}"
    assert checks["libvirt"]["status"] == "ok"


@pytest.fixture
def pool(dir_pool: Any) -> str:
    return dir_pool("kvmm-t-iso-").name


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    settings.libvirt.default_uri = URI
    settings.data_dir = tmp_path / "data"
    return settings


@pytest.mark.libvirtd
def test_deploy_status_install_eject_through_the_server(
    cli: Any,
    live_server: Any,
    pool: str,
    libvirtd_cleanup: Any,
) -> None:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 180
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    res = cli("--json", "agent-iso", "deploy", "--pool", pool)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["volume"] == volume_name(agent_version())

    res = cli("--json", "agent-iso", "status", "--pool", pool)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["deployed"]

    conn = libvirt.open(URI)
    from kvmmanager.virt.xml.domain import Domain

    name = f"kvmm-t-iso-vm-{uuid.uuid4().hex[:6]}"
    d = Domain(type="qemu", name=name, memory=32768, current_memory=32768, vcpus=1)
    d.os.os_type, d.os.arch, d.os.machine = "hvm", "x86_64", "pc"
    conn.defineXML(d.to_xml())
    try:
        res = cli("agent-iso", "install", name, "--pool", pool)
        assert res.exit_code == 0, res.output
        assert "sh /mnt/kvmm/install.sh" in res.stdout
        res = cli("agent-iso", "eject", name)
        assert res.exit_code == 0, res.output
        res = cli("agent-iso", "eject", name)
        assert res.exit_code == 5  # Conflict: nothing to eject
    finally:
        conn.close()
        libvirtd_cleanup.drop_vm(name)


def test_deploy_local_with_libvirt_down_exits_6() -> None:
    res = _local(
        "agent-iso", "deploy", "--local", "--uri", "qemu+unix:///system?socket=/nonexistent/x.sock"
    )
    assert res.exit_code == 6, res.output
    assert "cannot connect" in res.stderr
    # It names the libvirt it works on (issue 17's try: --local said nothing of where).
    assert "--local: deploying through libvirt at qemu+unix:///system?socket=" in res.stderr


@pytest.mark.libvirtd
def test_doctor_for_a_server_host(cli: Any, live_server: Any) -> None:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 180
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    res = cli("doctor", "--host", "local", "--pool", "kvmm-t-iso-nopool", "--json")
    report = json.loads(res.stdout)
    assert report["host"] == "local"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["libvirt"]["status"] == "ok"
    assert checks["pool"]["status"] == "fail"
    assert res.exit_code == 1
