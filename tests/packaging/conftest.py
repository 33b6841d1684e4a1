"""Fixtures for running install.sh/uninstall.sh against fake roots with recorded commands.

A "guest" here is a temporary root (os-release, systemd or OpenRC markers) plus a PATH
made only of the basic tools the scripts need and recorders standing in for the
system commands (package tools, init tools, id, python3). Recorders append their
argv to a log; their answers are steered through FAKE_* environment variables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvmmanager.iso import agent_version
from kvmmanager.iso.builder import collect_files
from kvmmanager.iso.packages import packaging_dirs

BASIC_TOOLS = [
    "cat",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "chmod",
    "sed",
    "tr",
    "cmp",
    "cut",
    "grep",
    "head",
    "sha256sum",
    "dirname",
    "rmdir",
    "printf",
]

# name -> shell body; $LOG is the recorder log.
RECORDERS = {
    "id": 'echo "${FAKE_UID:-0}"',
    "dpkg": 'echo "dpkg $*" >>"$LOG"; exit "${FAKE_DPKG_RC:-0}"',
    "dpkg-query": (
        'echo "dpkg-query $*" >>"$LOG"\n'
        '[ -n "${FAKE_DPKG_VERSION:-}" ] || exit 1\n'
        'case "$*" in *Status*) echo "install ok installed" ;; *) echo "$FAKE_DPKG_VERSION" ;; esac'
    ),
    "rpm": (
        'echo "rpm $*" >>"$LOG"\n'
        'case "$*" in *" -q "*|*" -q") exit "${FAKE_RPM_Q_RC:-1}" ;; esac\nexit 0'
    ),
    "apk": (
        'echo "apk $*" >>"$LOG"\ncase "$*" in *"info -e"*) exit "${FAKE_APK_INFO_RC:-1}" ;; esac'
    ),
    "systemctl": 'echo "systemctl $*" >>"$LOG"',
    "udevadm": 'echo "udevadm $*" >>"$LOG"',
    "rc-update": 'echo "rc-update $*" >>"$LOG"',
    "rc-service": 'echo "rc-service $*" >>"$LOG"',
    "service": 'echo "service $*" >>"$LOG"',
    "update-rc.d": 'echo "update-rc.d $*" >>"$LOG"',
}

OLD_PYTHON = 'case "$1" in -V) echo "Python 3.6.9" ;; *) exit 1 ;; esac'

SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}


def write_cd(base: Path) -> Path:
    """The agent CD's files, exactly as the ISO builder lays them out, under base/cd."""
    files = collect_files(packaging_dirs(), base, agent_version(), 1700000000, base / "cache")
    cd = base / "cd"
    for rel, (data, mode) in files.items():
        path = cd / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    return cd


@dataclass
class Guest:
    root: Path
    bin: Path
    log: Path
    cd: Path
    shell: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def os_release(self, os_id: str, like: str = "") -> Guest:
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        text = f'ID="{os_id}"\n' + (f'ID_LIKE="{like}"\n' if like else "")
        (self.root / "etc/os-release").write_text(text)
        return self

    def systemd(self) -> Guest:
        (self.root / "run/systemd/system").mkdir(parents=True, exist_ok=True)
        return self

    def openrc(self) -> Guest:
        (self.root / "sbin").mkdir(parents=True, exist_ok=True)
        marker = self.root / "sbin/openrc-run"
        marker.write_text("#!/bin/sh\n")
        marker.chmod(0o755)
        return self

    def port(self) -> Guest:
        (self.root / "dev/virtio-ports").mkdir(parents=True, exist_ok=True)
        (self.root / "dev/virtio-ports/org.kvmmanager.agent.0").write_text("")
        return self

    def tool(self, *names: str) -> Guest:
        for name in names:
            script = self.bin / name
            script.write_text(f"#!/bin/sh\nLOG={self.log}\n{RECORDERS[name]}\n")
            script.chmod(0o755)
        return self

    def without(self, name: str) -> Guest:
        (self.bin / name).unlink(missing_ok=True)
        return self

    def old_python(self) -> Guest:
        self.without("python3")
        script = self.bin / "python3"
        script.write_text(f"#!/bin/sh\n{OLD_PYTHON}\n")
        script.chmod(0o755)
        return self

    def run(self, script: str = "install.sh", *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": str(self.bin), "KVMM_ROOT": str(self.root), "HOME": str(self.root)}
        env.update(self.env)
        return subprocess.run(
            [*self.shell, str(self.cd / script), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def make_guest(shell: list[str], tmp_path: Path, cd_dir: Path) -> Guest:
    if shutil.which(shell[0]) is None:
        pytest.skip(f"{shell[0]} is not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in BASIC_TOOLS:
        real = shutil.which(name)
        if real is not None:
            os.symlink(real, bindir / name)
    os.symlink(sys.executable, bindir / "python3")
    g = Guest(
        root=tmp_path / "root", bin=bindir, log=tmp_path / "calls.log", cd=cd_dir, shell=shell
    )
    g.root.mkdir()
    g.tool("id")
    return g


@pytest.fixture(scope="session")
def cd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cd(tmp_path_factory.mktemp("kvmm-t-iso-cd"))


@pytest.fixture(params=sorted(SHELLS))
def guest(request: pytest.FixtureRequest, tmp_path: Path, cd_dir: Path) -> Guest:
    program, *args = SHELLS[request.param]
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return make_guest([path, *args], tmp_path, cd_dir)


@pytest.fixture(autouse=True)
def _agent_bytecode_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zipapp run by a test keeps its bytecode cache in a temporary directory, never
    in the host's /var/cache/kvmmanager-agent."""
    cache = tmp_path_factory.mktemp("agent-cache") / "cache"
    monkeypatch.setenv("KVMMANAGER_AGENT_CACHE", str(cache))
