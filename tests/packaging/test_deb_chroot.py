"""The manager .deb as a Debian administrator meets it: built by scripts/release, installed
with apt into a fresh `debootstrap --variant=minbase bookworm` chroot (dependencies from
Debian main, through the mirror this machine's apt uses), started exactly as the unit's
ExecStart/User/Environment say (no systemd in a chroot: by hand, as the service user with
its groups), logged into over HTTP, a VM created and started; then upgraded to a build
with a higher version, removed (config and data kept) and purged (nothing left). In the
same chroot (one debootstrap for both) the guest agent's .deb is installed, run with the
chroot's python3, removed and purged.

libvirt: the `test:///default` driver (inside libvirt0, which the package depends on);
qemu:///system would need a libvirtd, QEMU and /dev/kvm inside the chroot.
No daemon starts in the host's namespaces: a policy-rc.d refuses every start, and the
chroot has no /run/systemd/system, so the maintainer scripts never call systemctl.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import kvmmanager
from kvmmanager.iso import agent_version

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.slow,
    pytest.mark.chroot,
    # scripts/test runs this file on every run, in the background beside the other tests
    # (it is mostly downloads and dpkg, ~17 min), with KVMM_TEST_CHROOT=1; a plain pytest
    # run of tests/packaging skips it unless asked for the same way.
    pytest.mark.skipif(
        os.environ.get("KVMM_TEST_CHROOT") != "1",
        reason="the clean-chroot .deb proof runs with KVMM_TEST_CHROOT=1 (scripts/test sets it)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
UNIT = ROOT / "packaging/manager/kvm-manager.service"
PREFIX = "kvmm-t-pkg20"
RUNLEVEL_DIRS = [f"etc/rc{level}.d" for level in "0123456S"]
PORT_DEVICE = r"dev-virtio\x2dports-org.kvmmanager.agent.0.device"
# A service's enablement: systemd links, deb-systemd-helper's state, sysvinit links.
ENABLEMENT = re.compile(
    r"^/etc/systemd/system/.+|^/var/lib/systemd/deb-systemd-helper-.+"
    r"|^/etc/rc[0-6S]\.d/[SK]\d\dkvmmanager-agent$"
)
MANAGER_STATE = re.compile(
    r"^/etc/systemd/system(/multi-user\.target\.wants(/kvm-manager\.service)?)?$"
    r"|^/var/lib/systemd(/deb-systemd-helper-enabled(/.+)?)?$"
)
# What apt, dpkg and the shadow tools change in any install; everything else must go.
NOT_OURS = re.compile(
    r"^/(proc|tmp|root|var/cache|var/lib/apt|var/lib/dpkg|var/log|run)(/|$)"
    r"|^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$"
    r"|^/etc/ld\.so\.cache$"
)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or one-line lists)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*"))]:
        if path.is_file() and path.suffix in ("", ".list", ".sources"):
            texts.append(path.read_text())
    for text in texts:
        for m in re.finditer(r"^(?:URIs:|deb)\s+(\S+)", text, re.M):
            uri = m.group(1)
            if "security" not in uri and uri.startswith(("http://", "https://")):
                return uri
    return "http://deb.debian.org/debian"


def chroot(root: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(
        ["chroot", str(root), *cmd], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"{cmd}: {res.stdout[-3000:]}{res.stderr[-3000:]}"
    return res


def install_depends(root: Path, deb: Path) -> None:
    """apt installs a .deb's Depends (from Debian main), so that a snapshot taken after
    holds everything but the package itself."""
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(root / deb.relative_to("/")), "Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [d.split()[0] for d in depends.split(",")]
    chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *names)


def canonical_paths(root: Path, paths: Iterable[str]) -> set[str]:
    """dpkg's paths as the file walk sees them: dpkg names them as shipped (/lib/...),
    and bookworm's /lib is a link to /usr/lib. Only the directories are resolved (a
    path that is itself a link, like the venv's bin/python, stays itself)."""
    out = set()
    for path in paths:
        parent, name = os.path.split(path)
        real = os.path.relpath(os.path.realpath(f"{root}{parent}"), root)
        out.add(os.path.normpath(f"/{real}/{name}"))
    return out


def file_list(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root)
        if rel.startswith("/proc"):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = os.path.normpath(f"{rel}/{name}")
            if not NOT_OURS.search(path):
                out.add(path)
    return out


def unit_exec() -> tuple[str, str, str, dict[str, str]]:
    """(ExecStart, User, Group, Environment) of the shipped unit."""
    fields: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        else:
            fields[key] = value
    return fields["ExecStart"], fields["User"], fields["Group"], env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Debs:
    first: Path
    upgrade: Path
    version: str
    agent: Path  # the guest agent's .deb (arch all), of agent_version()
    agent_upgrade: Path  # the same payload as Debian revision 2


@dataclass
class Chroot:
    root: Path
    debs: Debs


def _rebuild_with_revision(deb: Path, out: Path, revision: str) -> Path:
    """The same payload under a higher Debian revision: what an upgrade meets."""
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    text = re.sub(
        r"^Version: (.*)-\d+$", rf"Version: \1-{revision}", control.read_text(), count=1, flags=re.M
    )
    control.write_text(text)
    target = out / deb.name.replace("-1_", f"-{revision}_")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(target)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return target


@pytest.fixture(scope="session")
def debian_chroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    for tool in ("debootstrap", "chroot", "dpkg-deb", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    base = tmp_path_factory.mktemp(PREFIX)
    root = base / "chroot"
    # debootstrap (mostly downloads and dpkg) runs while the release builds.
    boot = subprocess.Popen(
        ["debootstrap", "--variant=minbase", SUITE, str(root), debian_mirror()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc_mounted = False
    try:
        dist = base / "dist"
        env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
        rel = subprocess.run(
            [str(ROOT / "scripts/release"), "--dist", str(dist)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        assert rel.returncode == 0, rel.stdout[-2000:] + rel.stderr[-2000:]
        version = kvmmanager.__version__
        first = dist / f"kvm-manager_{version}-1_amd64.deb"
        (base / "up").mkdir()
        upgrade = _rebuild_with_revision(first, base / "up", "2")
        agent = dist / f"kvmmanager-agent_{agent_version()}-1_all.deb"
        (base / "agent-up").mkdir()
        agent_upgrade = _rebuild_with_revision(agent, base / "agent-up", "2")
        out, _ = boot.communicate(timeout=1200)
        assert boot.returncode == 0, out[-3000:]
        # No service may start from a maintainer script (none should try: no systemd).
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (root / "etc/dpkg/dpkg.cfg.d/kvmm-unsafe-io").write_text("force-unsafe-io\n")
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        proc_mounted = True
        debs = (first, upgrade, agent, agent_upgrade)
        for deb in debs:
            shutil.copy2(deb, root / "tmp" / deb.name)
        chroot(root, "apt-get", "update", "-q")
        in_root = [Path("/tmp") / deb.name for deb in debs]
        yield Chroot(root, Debs(in_root[0], in_root[1], version, in_root[2], in_root[3]))
    finally:
        if boot.poll() is None:
            boot.kill()
            boot.wait()
        if proc_mounted:
            subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        if not any(m.startswith(str(root)) for m in mounted):
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def served(box: Chroot) -> Iterator[str]:
    """kvm-manager as its unit runs it: ExecStart as User/Group with the user's groups,
    only the unit's Environment (plus the test driver and a free port)."""
    exec_start, user, group, unit_env = unit_exec()
    port = free_port()
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        **unit_env,
        "KVMM_LIBVIRT__DEFAULT_URI": "test:///default",
        "KVMM_SERVER__PORT": str(port),
    }
    argv = ["chroot", str(box.root), "setpriv", f"--reuid={user}", f"--regid={group}"]
    argv += ["--init-groups", "env", "-i", *(f"{k}={v}" for k, v in env.items())]
    argv += exec_start.split()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate()[0]
                raise AssertionError(f"kvm-manager serve did not come up (rc {proc.poll()}): {out}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def login(url: str, data_dir: Path) -> tuple[httpx.Client, dict[str, str]]:
    """The first admin logs in with the generated password, and changes it first."""
    secret = data_dir / "initial-admin-password"
    password = secret.read_text().strip()
    c = httpx.Client(base_url=url, timeout=60)
    r = c.post("/api/auth/login", json={"username": "admin", "password": password})
    assert r.status_code == 200, r.text
    csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
    if r.json().get("password_change_required"):
        new = password + "-pkg20"
        r = c.post(
            "/api/auth/password",
            json={"current_password": password, "new_password": new},
            headers=csrf,
        )
        assert r.status_code == 200, r.text
        secret.write_text(new + "\n")
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
    return c, csrf


# Setup included (pytest-timeout counts fixtures): ~17 min alone, more when it runs niced
# beside the rest of scripts/test on 2 cores; still well inside the other parts' time.
@pytest.mark.timeout(2400)
def test_manager_deb_installs_serves_upgrades_and_purges_in_a_clean_chroot(
    debian_chroot: Chroot,
) -> None:
    box = debian_chroot
    root = box.root
    # Snapshot after the package's Depends (from Debian main) are in, before it is.
    install_depends(root, box.debs.first)
    before = file_list(root)

    res = chroot(
        root, "apt-get", "install", "-y", "-q", "--no-install-recommends", str(box.debs.first)
    )
    assert "Setting up kvm-manager" in res.stdout
    # dpkg owns the venv: every file of it is the package's (no pip ran at install).
    owned = set(chroot(root, "dpkg", "-L", "kvm-manager").stdout.splitlines())
    venv = root / "usr/lib/kvm-manager/venv"
    for path in venv.rglob("*"):
        if "__pycache__" not in path.parts:
            assert "/" + str(path.relative_to(root)) in owned, path
    chroot(root, "dpkg", "-S", "/usr/lib/kvm-manager/venv/bin/kvm-manager")
    # Every other path the install added is the package's too, but for what maintainer
    # scripts make in every Debian package of their kind: bytecode (as py3compile), the
    # service's enablement, the data directory, the user's and group's entries.
    canonical = canonical_paths(root, owned)
    added = file_list(root) - before
    unowned = {
        p
        for p in added - canonical
        if "/__pycache__" not in p
        and not MANAGER_STATE.match(p)
        and not p.startswith("/var/lib/kvm-manager")
    }
    assert unowned == set(), sorted(unowned)
    groups = chroot(root, "id", "-nG", "kvm-manager").stdout.split()
    # Installed before libvirt-daemon-system (not installed at all here): still in libvirt,
    # and in kvm (/dev/kvm's group), which a minbase chroot does not have either.
    assert "libvirt" in groups and "kvm" in groups, groups
    data_dir = root / "var/lib/kvm-manager"
    vm = f"{PREFIX}-vm"
    with served(box) as url:
        c, csrf = login(url, data_dir)
        # The web UI's front-end libraries come from the package (no node_modules).
        for asset in ("/vendor/htmx/htmx.min.js", "/vendor/uplot/uPlot.iife.min.js"):
            assert c.get(asset).status_code == 200, asset
        page = c.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        r = c.post("/api/hosts/local/vms", json={"name": vm, "memory_mib": 64}, headers=csrf)
        assert r.status_code == 201, r.text
        r = c.post(f"/api/hosts/local/vms/{vm}/actions/start", headers=csrf)
        assert r.status_code == 200, r.text
        # The list is the inventory, which learns the new state from libvirt's lifecycle
        # event: under load it may still say shutoff for a moment after the start.
        deadline = time.monotonic() + 60
        while True:
            vms = {v["name"]: v for v in c.get("/api/hosts/local/vms").json()}
            if vms[vm]["state"] == "running" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert vms[vm]["state"] == "running"
        c.close()

    # Upgrade to a higher version: the same data and login still work.
    res = chroot(root, "apt-get", "install", "-y", "-q", str(box.debs.upgrade))
    assert f"{box.debs.version}-2" in chroot(root, "dpkg-query", "-W", "kvm-manager").stdout
    with served(box) as url:
        c, _ = login(url, data_dir)
        assert c.get("/api/auth/me").status_code == 200
        c.close()

    # remove: the program goes, configuration and data stay.
    chroot(root, "apt-get", "remove", "-y", "-q", "kvm-manager")
    assert not (root / "usr/lib/kvm-manager").exists()
    assert (root / "etc/kvm-manager/config.toml").is_file()
    assert (data_dir / "initial-admin-password").is_file()

    # purge: nothing of the package is left.
    chroot(root, "apt-get", "purge", "-y", "-q", "kvm-manager")
    assert not (root / "var/cache/kvmmanager-agent").exists()
    after = file_list(root)
    assert after - before == set()
    assert before - after == set()
    assert subprocess.run(["chroot", str(root), "getent", "passwd", "kvm-manager"]).returncode


@pytest.mark.timeout(900)
def test_agent_deb_installs_runs_and_purges_in_the_clean_chroot(debian_chroot: Chroot) -> None:
    """The guest agent's .deb in the same chroot: apt installs it with its Depends from
    Debian main, dpkg knows every file it put there, its unit and udev rule are in place
    (no systemd runs in a chroot: the postinst starts nothing), the installed zipapp runs
    with the chroot's own python3, and remove then purge leave nothing of it."""
    box = debian_chroot
    root = box.root
    install_depends(root, box.debs.agent)
    # The directories an init system's own packages make (systemd, sysv-rc) on any
    # installed system; minbase has no init, and the agent's enablement goes there.
    for directory in ("etc/systemd/system", "var/lib/systemd", *RUNLEVEL_DIRS):
        (root / directory).mkdir(parents=True, exist_ok=True)
    before = file_list(root)

    res = chroot(
        root, "apt-get", "install", "-y", "-q", "--no-install-recommends", str(box.debs.agent)
    )
    assert "Setting up kvmmanager-agent" in res.stdout
    status = chroot(root, "dpkg-query", "-W", "-f", "${Status} ${Version}", "kvmmanager-agent")
    assert status.stdout == f"install ok installed {agent_version()}-1"
    # Everything the install added is the package's (`dpkg -S` finds each path).
    listed = chroot(root, "dpkg", "-L", "kvmmanager-agent").stdout.splitlines()
    owned = canonical_paths(root, listed)
    added = file_list(root) - before
    for path in (
        "/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz",
        "/lib/systemd/system/kvmmanager-agent.service",
        "/lib/udev/rules.d/60-kvmmanager-agent.rules",
        "/etc/kvmmanager-agent/config.json",
        "/etc/init.d/kvmmanager-agent",
    ):
        assert path in listed and (root / path.lstrip("/")).is_file(), path
    # Enabled though no systemd runs (an image build): the unit's link where its
    # WantedBy says, as deb-systemd-helper makes it, and the init script's runlevel links
    # for sysvinit (issue 20: the .deb had no init script and enabled nothing here).
    wants = root / "etc/systemd/system" / f"{PORT_DEVICE}.wants/kvmmanager-agent.service"
    assert wants.is_symlink(), sorted(added - owned)
    assert sorted(p.name for p in (root / "etc/rc2.d").iterdir()) == ["S01kvmmanager-agent"]
    # Everything else the install added is the package's (`dpkg -S` finds each path);
    # enablement links and deb-systemd-helper's state are no package's, as in Debian.
    state = {p for p in added - owned if ENABLEMENT.match(p)}
    assert added - state <= owned, sorted(added - state - owned)
    chroot(root, "dpkg", "-S", "/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz")
    # The agent runs with the interpreter its Depends brought (Debian 12's python3).
    version = chroot(root, "python3", "/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz", "--version")
    assert version.stdout.strip() == agent_version()

    # upgrade (revision 2 of the same payload): the admin's edited config stays, the unit
    # stays enabled, and every file is still the package's.
    config = root / "etc/kvmmanager-agent/config.json"
    edited = config.read_text().replace("{", '{"kvmm_t_admin_edit": true, ', 1)
    config.write_text(edited)
    res = chroot(
        root,
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confold",
        str(box.debs.agent_upgrade),
    )
    assert "Unpacking kvmmanager-agent" in res.stdout, res.stdout
    status = chroot(root, "dpkg-query", "-W", "-f", "${Status} ${Version}", "kvmmanager-agent")
    assert status.stdout == f"install ok installed {agent_version()}-2"
    assert config.read_text() == edited
    assert wants.is_symlink()
    added = file_list(root) - before
    state = {p for p in added - owned if ENABLEMENT.match(p) or "/__pycache__/" in p}
    assert added - state <= owned, sorted(added - state - owned)
    version = chroot(root, "python3", "/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz", "--version")
    assert version.stdout.strip() == agent_version()

    # remove: the program goes, the conffile stays; purge: nothing of it is left (the
    # bytecode cache the run above made included).
    chroot(root, "apt-get", "remove", "-y", "-q", "kvmmanager-agent")
    assert not (root / "usr/lib/kvmmanager-agent").exists()
    assert (root / "etc/kvmmanager-agent/config.json").is_file()
    chroot(root, "apt-get", "purge", "-y", "-q", "kvmmanager-agent")
    assert not (root / "var/cache/kvmmanager-agent").exists()
    after = file_list(root)
    assert after - before == set()
    assert before - after == set()
