"""Every `kvm-manager ...` example README.md shows, run as written against a real server
on qemu:///system (issue 17, item 1: `vm list --json` answered "No such option").

The examples are parsed out of README.md itself (its ```sh blocks, `\\` continuations
joined, comments dropped, plus the inline `kvm-manager ...` spans), so a new example
cannot be added without this test running it. Only the names that would collide on a
shared libvirtd are made unique (VMs, the `default` pool and network, the `lab` host's
URI, the `weekly` policy); flags and their order stay exactly as printed.

Each example has the outcome a user gets on this machine in EXPECTED: exit code 0, or a
clear refusal (never a usage error, exit code 2) whose reason is named.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.kvmmanager.conftest import drop_vm
from tests.libvirtd_pools import LIBVIRTD_URI, drop_pool, qemu_dir

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.libvirtd

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_examples(text: str) -> list[str]:
    """The `kvm-manager ...` command lines of README.md: code-block lines (continuations
    joined, `# comments` dropped) and inline code spans, in the order they appear."""
    found: list[str] = []
    in_block = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            words = shlex.split(pending, comments=True)
            pending = ""
            if words and words[0] == "kvm-manager":
                found.append(shlex.join(words))
        else:
            for span in re.findall(r"`(kvm-manager [^`]+)`", line):
                found.append(shlex.join(shlex.split(span)))
    return found


@dataclass(frozen=True)
class Outcome:
    exit_codes: tuple[int, ...]
    says: str = ""  # text the output (stdout+stderr) must contain


# Keyed by the README's own text. A failure here with "not in EXPECTED" means README.md
# gained an example: run it by hand, then add what a user sees.
EXPECTED: dict[str, Outcome] = {
    "kvm-manager host add lab qemu+ssh://root@lab.example/system": Outcome((0,), "lab"),
    "kvm-manager vm create web1 --memory 2048 --disk default:20 --network default "
    "--iso default/debian.iso": Outcome((0,), "web1"),
    "kvm-manager vm start web1": Outcome((0,), "running"),
    "kvm-manager agent-iso deploy --host lab": Outcome((0,), "kvmmanager-guest-agent.iso"),
    "kvm-manager vm install-agent web1": Outcome((0,), "mount"),
    # No guest OS runs in web1 (its ISO is a placeholder): the agent commands say so.
    "kvm-manager agent system web1": Outcome((6,), "no guest agent answers"),
    "kvm-manager agent exec web1 uname -a": Outcome((6,), "agent is not running"),
    "kvm-manager agent cp ./big.tar web1:/var/tmp/big.tar": Outcome((6,), "agent is not running"),
    "kvm-manager vol upload default disk.qcow2 ./disk.qcow2": Outcome((0,), "disk.qcow2"),
    "kvm-manager vm create-from-image web2 --image default/debian-12.qcow2 --size 20G "
    "--user deb --ssh-key '~/.ssh/id_ed25519.pub'": Outcome((0,), "web2"),
    # web1 runs: a full clone of a running VM needs --consistent snapshot.
    "kvm-manager clone create web1 web1-test": Outcome((5,), "ask for --consistent snapshot"),
    # `lab` is this same libvirtd here: the pre-flight refuses before libvirt does.
    "kvm-manager migrate start web1 lab --copy-storage": Outcome((2,), "same machine"),
    "kvm-manager backup take weekly web1": Outcome((0,), "full"),
    # Exits 1 when a check fails, which depends on this host (its `default` network).
    "kvm-manager doctor": Outcome((0, 1), "dev_kvm"),
    "kvm-manager vm list --json": Outcome((0,), '"name"'),
    "kvm-manager login": Outcome((0,), "token"),
    "kvm-manager config show": Outcome((0,), "[server]"),
}


def test_readme_examples_are_parsed() -> None:
    examples = readme_examples(README.read_text())
    assert "kvm-manager vm list --json" in examples
    assert set(examples) == set(EXPECTED), set(examples) ^ set(EXPECTED)


@pytest.fixture
def names() -> dict[str, str]:
    tag = f"kvmm-t-rd{uuid.uuid4().hex[:6]}"
    return {
        "web1": f"{tag}-web1",
        "web2": f"{tag}-web2",
        "web1-test": f"{tag}-web1-test",
        "lab": f"{tag}-lab",
        "pool": f"{tag}-pool",
        "net": f"{tag}-net",
        "weekly": f"{tag}-weekly",
    }


@pytest.fixture
def settings(settings: Settings, names: dict[str, str]) -> Settings:
    settings.libvirt.default_uri = LIBVIRTD_URI
    settings.agent.iso_pool = names["pool"]
    return settings


def _wait_connected(live_server: Any, host: str) -> None:
    conn = live_server.manager.registry.get(host)
    deadline = time.monotonic() + 60
    while not conn.connected:
        assert time.monotonic() < deadline, conn.status_reason
        time.sleep(0.05)


@pytest.fixture
def lab(
    cli: Any, live_server: Any, names: dict[str, str], tmp_path: Path, monkeypatch: Any
) -> Iterator[dict[str, str]]:
    """The README's world on qemu:///system under unique names: a pool holding debian.iso
    and debian-12.qcow2, an isolated network, the `weekly` backup policy, ./big.tar,
    ./disk.qcow2 and ~/.ssh/id_ed25519.pub."""
    _wait_connected(live_server, "local")
    pool_dir = qemu_dir("kvmm-t-readme-")
    work = tmp_path / "cwd"
    (work / "home" / ".ssh").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work / "home"))
    try:
        made = cli("pool", "create", names["pool"], "--target", str(pool_dir / "p"))
        assert made.exit_code == 0, made.stderr
        made = cli("net", "create", names["net"], "--forward", "isolated", "--no-autostart")
        assert made.exit_code == 0, made.stderr
        (work / "debian.iso").write_bytes(b"\0" * 65536)
        for image in ("debian-12.qcow2", "disk.qcow2"):
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(work / image), "64M"], check=True
            )
        for vol in ("debian.iso", "debian-12.qcow2"):
            up = cli("vol", "upload", names["pool"], vol, str(work / vol))
            assert up.exit_code == 0, up.stderr
        (work / "big.tar").write_bytes(b"x" * 4096)
        key = work / "home" / ".ssh" / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        policy = cli(
            "backup",
            "add",
            names["weekly"],
            names["web1"],
            "--method",
            "backup",
            "--pool",
            names["pool"],
        )
        assert policy.exit_code == 0, policy.stderr
        yield names
    finally:
        for vm in ("web1", "web2", "web1-test"):
            drop_vm(names[vm])
        conn = libvirt.open(LIBVIRTD_URI)
        try:
            net = conn.networkLookupByName(names["net"])
            if net.isActive():
                net.destroy()
            net.undefine()
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
        drop_pool(names["pool"], pool_dir)


def localise(example: str, names: dict[str, str]) -> list[str]:
    """The example's argv with the shared names made this test's own."""
    out: list[str] = []
    words = shlex.split(example)[1:]
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        if word.startswith("qemu+ssh://"):
            word = LIBVIRTD_URI  # the only libvirtd here stands in for the remote lab
        elif word in ("web1", "web2", "web1-test", "lab", "weekly"):
            word = names[word]
        elif word == "default" and prev == "--network":
            word = names["net"]
        elif word == "default" or word.startswith(("default:", "default/")):
            word = names["pool"] + word[len("default") :]
        elif word.startswith("web1:"):
            word = names["web1"] + word[len("web1") :]
        elif word.startswith("~/"):
            word = str(Path(word).expanduser())
        out.append(word)
    if out == ["login"]:
        out += ["--username", "kvmm-t-readme", "--password-stdin"]
    return out


def test_every_readme_example_runs(cli: Any, live_server: Any, lab: dict[str, str]) -> None:
    live_server.manager.users.create(
        "kvmm-t-readme", "kvmm-t-readme-violet-harbor-lantern-4412", "admin"
    )
    seen: dict[str, tuple[int, str]] = {}
    for example in readme_examples(README.read_text()):
        argv = localise(example, lab)
        res = cli(
            *argv,
            input="kvmm-t-readme-violet-harbor-lantern-4412\n" if argv[0] == "login" else None,
        )
        seen[example] = (res.exit_code, res.stdout + res.stderr)
        if argv[:2] == ["host", "add"]:
            _wait_connected(live_server, lab["lab"])
    wrong = {
        ex: got
        for ex, got in seen.items()
        if got[0] not in EXPECTED[ex].exit_codes or EXPECTED[ex].says not in got[1]
    }
    assert not wrong, json.dumps(wrong, indent=1)
    listed = json.loads(seen["kvm-manager vm list --json"][1])
    assert lab["web1"] in {v["name"] for v in listed}
