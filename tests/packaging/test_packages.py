"""The agent packages, the manager .deb and scripts/release, checked with the real tools:
lintian (no errors, no warnings beyond the overrides), rpm -qpi, rpm --root installs,
dpkg-deb contents, the maintainer scripts against a fake root."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pycdlib
import pytest

from kvmmanager.iso import VOLUME_LABEL, agent_version
from kvmmanager.iso.packages import build_agent_packages
from kvmmanager.iso.zipapp import build_agent_zipapp

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
V = agent_version()


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("kvmm-t-iso-pkg")
    pyz = build_agent_zipapp(base / "kvmmanager-agent.pyz")
    return build_agent_packages(pyz, V, base / "out", epoch=1700000000, cache_dir=base / "c")


def lintian(path: Path) -> list[str]:
    _need("lintian")
    res = subprocess.run(
        ["lintian", "--tag-display-limit", "0", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = [line for line in res.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert res.returncode == 0, res.stdout + res.stderr
    return tags


def test_agent_deb_is_lintian_clean_and_complete(packages: dict[str, Path]) -> None:
    deb = packages["deb"]
    assert lintian(deb) == []
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
    for path in (
        "./usr/lib/kvmmanager-agent/kvmmanager-agent.pyz",
        "./lib/systemd/system/kvmmanager-agent.service",
        "./lib/udev/rules.d/60-kvmmanager-agent.rules",
        "./etc/kvmmanager-agent/config.json",
    ):
        assert path in listing, path
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Package", "Version", "Depends"],
        capture_output=True,
        text=True,
    ).stdout
    assert f"Version: {V}-1" in fields and "Depends: python3" in fields
    ctrl = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True)
    assert ctrl.stdout.strip() == "/etc/kvmmanager-agent/config.json"
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], capture_output=True)
    assert b"systemctl enable kvmmanager-agent.service" in postinst.stdout
    assert b"rc-update add kvmmanager-agent default" in postinst.stdout


def test_agent_rpm_reads_and_installs_into_a_temporary_root(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    _need("rpm")
    rpm = packages["rpm"]
    info = subprocess.run(["rpm", "-qpi", str(rpm)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "Name        : kvmmanager-agent" in info.stdout
    assert f"Version     : {V}" in info.stdout
    files = subprocess.run(["rpm", "-qpl", str(rpm)], capture_output=True, text=True).stdout
    assert "/usr/lib/systemd/system/kvmmanager-agent.service" in files.split()
    root = tmp_path / "root"
    # The empty root has no /bin/sh, so the %post scriptlet only warns; the files and the
    # rpm database entry must be there.
    res = subprocess.run(
        ["rpm", "--root", str(root), "--nodeps", "-i", str(rpm)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    query = subprocess.run(
        ["rpm", "--root", str(root), "-q", "kvmmanager-agent"], capture_output=True, text=True
    )
    assert query.stdout.strip() == f"kvmmanager-agent-{V}-1.noarch"
    pyz = root / "usr/lib/kvmmanager-agent/kvmmanager-agent.pyz"
    out = subprocess.run([sys.executable, str(pyz), "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == V


def test_agent_apk_carries_pkginfo_and_openrc_script(packages: dict[str, Path]) -> None:
    raw = gzip.decompress(packages["apk"].read_bytes())  # apk: concatenated gzip tars
    assert b"pkgname = kvmmanager-agent" in raw
    assert f"pkgver = {V}-r1".encode() in raw
    assert b"etc/init.d/kvmmanager-agent" in raw
    assert b"#!/sbin/openrc-run" in raw
    assert b".post-install" in raw


def test_manager_maintainer_scripts_against_a_fake_root(tmp_path: Path) -> None:
    """postinst makes the user, the venv (offline) and deploys; purge removes all of it."""
    root, bindir, log = tmp_path / "root", tmp_path / "bin", tmp_path / "log"
    (root / "run/systemd/system").mkdir(parents=True)
    bindir.mkdir()
    for tool in ("adduser", "deluser", "delgroup", "systemctl", "chown"):
        (bindir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >>{log}\n')
    # getent: nothing exists yet, except the libvirt group.
    (bindir / "getent").write_text('#!/bin/sh\n[ "$1 $2" = "group libvirt" ]\n')
    # python3 -m venv DIR: a venv whose pip and kvm-manager only record their calls.
    (bindir / "python3").write_text(
        "#!/bin/sh\n"
        f'echo "python3 $*" >>{log}\n'
        'mkdir -p "$3/bin"\n'
        "for t in pip kvm-manager; do\n"
        f'  printf \'#!/bin/sh\\necho "%s $*" >>{log}\\n\' "$t" >"$3/bin/$t"\n'
        '  chmod 755 "$3/bin/$t"\n'
        "done\n"
    )
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "DPKG_ROOT": str(root)}
    scripts = ROOT / "packaging/manager/scripts"

    res = subprocess.run(
        ["dash", str(scripts / "postinst.sh"), "configure"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    calls = log.read_text().splitlines()
    venv = f"{root}/opt/kvm-manager/venv"
    assert calls[0].startswith("adduser --system --group --home /var/lib/kvm-manager")
    assert "adduser kvm-manager libvirt" in calls
    assert f"python3 -m venv {venv}" in calls
    wheels = f"{root}/usr/share/kvm-manager/wheels"
    assert f"pip install --quiet --no-index --find-links {wheels} kvmmanager" in calls
    assert "systemctl enable kvm-manager.service" in calls
    assert "kvm-manager agent-iso deploy --local" in calls
    assert (root / "var/lib/kvm-manager").is_dir()
    assert "guest agent ISO is deployed" in res.stdout

    (root / "etc/kvm-manager").mkdir(parents=True)
    for step in (("prerm.sh", "remove"), ("postrm.sh", "purge")):
        res = subprocess.run(
            ["dash", str(scripts / step[0]), step[1]], env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
    assert not (root / "opt/kvm-manager").exists()
    assert not (root / "var/lib/kvm-manager").exists()
    assert not (root / "etc/kvm-manager").exists()
    assert "systemctl disable --now kvm-manager.service" in log.read_text()


def test_release_builds_every_artifact(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    res = subprocess.run(
        [str(ROOT / "scripts/release"), "--dist", str(dist)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    import kvmmanager

    mv = kvmmanager.__version__
    names = {p.name for p in dist.iterdir()}
    assert names == {
        f"kvmmanager-{mv}-py3-none-any.whl",
        f"kvmmanager-{mv}.tar.gz",
        f"kvmmanager-agent-{V}.pyz",
        f"kvmmanager-guest-agent-{V}.iso",
        f"kvmmanager-agent_{V}-1_all.deb",
        f"kvmmanager-agent-{V}-1.noarch.rpm",
        f"kvmmanager-agent-{V}-r1.apk",
        f"kvm-manager_{mv}-1_amd64.deb",
        "SHA256SUMS",
    }
    sums = dict(
        reversed(line.split("  ", 1)) for line in (dist / "SHA256SUMS").read_text().splitlines()
    )
    assert set(sums) == names - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((dist / name).read_bytes()).hexdigest() == digest, name

    with zipfile.ZipFile(dist / f"kvmmanager-{mv}-py3-none-any.whl") as whl:
        assert "kvmmanager/iso/builder.py" in whl.namelist()
        # The locator's "package" fallback: the ISO travels inside the wheel.
        assert (
            whl.read("kvmmanager/iso/kvmmanager-guest-agent.iso")
            == (dist / f"kvmmanager-guest-agent-{V}.iso").read_bytes()
        )
    with tarfile.open(dist / f"kvmmanager-{mv}.tar.gz") as sdist:
        assert f"kvmmanager-{mv}/pyproject.toml" in sdist.getnames()
    pyz = subprocess.run(
        [sys.executable, str(dist / f"kvmmanager-agent-{V}.pyz"), "--version"],
        capture_output=True,
        text=True,
    )
    assert pyz.stdout.strip() == V

    iso = pycdlib.PyCdlib()
    iso.open(str(dist / f"kvmmanager-guest-agent-{V}.iso"))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == VOLUME_LABEL
    finally:
        iso.close()

    manager_deb = dist / f"kvm-manager_{mv}-1_amd64.deb"
    assert lintian(manager_deb) == []
    assert lintian(dist / f"kvmmanager-agent_{V}-1_all.deb") == []
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(manager_deb)], capture_output=True, text=True
    ).stdout
    assert "./usr/share/kvm-manager/kvmmanager-guest-agent.iso" in listing
    assert f"./usr/share/kvm-manager/wheels/kvmmanager-{mv}-py3-none-any.whl" in listing
    assert "./lib/systemd/system/kvm-manager.service" in listing
    # Every runtime dependency travels as a wheel, so postinst needs no network.
    assert "./usr/share/kvm-manager/wheels/fastapi-" in listing
    assert "./usr/share/kvm-manager/wheels/libvirt_python-" in listing
    info = subprocess.run(
        ["rpm", "-qpi", str(dist / f"kvmmanager-agent-{V}-1.noarch.rpm")],
        capture_output=True,
        text=True,
    )
    assert info.returncode == 0 and "kvmmanager-agent" in info.stdout
