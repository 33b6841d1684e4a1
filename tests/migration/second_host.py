"""A second real libvirt host on this machine, for migration tests.

A libvirtd of its own runs in a private mount, network and UTS namespace:

- mounts: /etc/libvirt (a copy of this host's config with its own `host_uuid`),
  /var/lib/libvirt, /run/libvirt (= /var/run/libvirt), /var/log/libvirt and
  /var/cache/libvirt are bind mounts over directories under one temp dir, so its
  domains, QEMU runtime dirs, sockets, virtlogd and logs are its own;
- network: a veth pair, `<prefix>.1` on this side and `<prefix>.2` in the namespace;
  libvirtd listens there with `listen_tcp` (no auth) and is reached as
  `qemu+tcp://<prefix>.2/system`, by the manager and by the main libvirtd (peer-to-peer
  migration); QEMU's migration stream and the NBD disk copy use the same address;
- hostname `kvmm-h2-...`, so libvirt's "same host" checks see two machines.

`private_dir(path)` gives the second host an empty directory of its own at the same
path as one of this host's: a pool there is "the same pool on another machine", which
is what a copy-storage migration needs (libvirt creates the disk at the same path).

Everything lives under one temp dir in /var/tmp (QEMU runs as libvirt-qemu and must
traverse it) and is removed by `stop()`, which first destroys every domain the second
libvirtd runs. Needs root and iproute2, like the main libvirtd. Manual use:
`python -m tests.migration.second_host` starts one and stops it on Enter.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import libvirt

# What the namespace's first process runs: the bind mounts, then it only holds the
# namespaces open (its PID is what nsenter joins).
HOLDER = r"""
set -eu
T=$1
mount --bind "$T/etc" /etc/libvirt
mount --bind "$T/lib" /var/lib/libvirt
mount --bind "$T/run" /run/libvirt
mount --bind "$T/log" /var/log/libvirt
mount --bind "$T/cache" /var/cache/libvirt
hostname "$2"
ip link set lo up
echo $$ > "$T/holder.pid"
exec sleep infinity
"""
LIB_DIRS = ("boot", "images", "dnsmasq", "qemu")


class SecondHostError(RuntimeError):
    """The second host could not be set up; the message carries the exact error."""


def _run(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SecondHostError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _free_prefix() -> str:
    """A 10.231.X.0/30 no interface here uses yet (several sessions may run at once)."""
    used = _run("ip", "-4", "-o", "addr", "show")
    for _ in range(100):
        prefix = f"10.231.{random.randrange(256)}"
        if f" {prefix}." not in used:
            return prefix
    raise SecondHostError("no free 10.231.X.0/30 subnet for the veth pair")


class SecondHost:
    def __init__(self, base: str = "/var/tmp") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kvmm-t-h2-", dir=base))
        self.tag = uuid.uuid4().hex[:6]
        prefix = _free_prefix()
        self.peer_addr = f"{prefix}.1"  # this side of the veth
        self.addr = f"{prefix}.2"  # the second host
        self.uri = f"qemu+tcp://{self.addr}/system"
        self.host_uuid = str(uuid.uuid4())
        self.hostname = f"kvmm-h2-{self.tag}"
        self.veth = f"kvh2{self.tag}"  # + "h"/"n": 11 chars, under IFNAMSIZ
        self.holder: int | None = None
        self._unshare: subprocess.Popen[bytes] | None = None
        self._private = 0

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        try:
            self._prepare_dirs()
            self._enter_namespaces()
            self._connect_veth()
            self._start_daemons()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Destroy the second host's domains, stop its daemons, drop the namespaces and
        the temp dir. Safe to call twice and after a partial start."""
        with contextlib.suppress(libvirt.libvirtError):
            self._destroy_everything()
        for name in ("libvirtd", "virtlogd"):
            self._kill_pidfile(self.root / f"{name}.pid")
        self._kill_namespace_leftovers()
        if self.holder is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.holder, signal.SIGKILL)
            self.holder = None
        if self._unshare is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._unshare.wait(10)
            self._unshare = None
        # The namespace's end takes its veth end, and so the pair, with it.
        subprocess.run(["ip", "link", "del", f"{self.veth}h"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def private_dir(self, path: str | Path) -> Path:
        """Give the second host an empty directory of its own at `path` (which must exist
        here): returns where its content really lives."""
        self._private += 1
        own = self.root / "private" / str(self._private)
        own.mkdir(parents=True)
        own.chmod(0o755)
        self.nsenter("mount", "--bind", str(own), str(path))
        return own

    def nsenter(self, *cmd: str) -> str:
        assert self.holder is not None, "start() first"
        return _run("nsenter", "-t", str(self.holder), "-m", "-n", "-u", "--", *cmd)

    def open(self) -> libvirt.virConnect:
        return libvirt.open(self.uri)

    # ---- steps -------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        r = self.root
        r.chmod(0o755)
        for d in ("etc", "lib", "run", "log", "cache", "private"):
            (r / d).mkdir(mode=0o755)
        etc = Path("/etc/libvirt")
        for conf in etc.glob("*.conf"):
            shutil.copy2(conf, r / "etc" / conf.name)
        if (etc / "nwfilter").is_dir():
            shutil.copytree(etc / "nwfilter", r / "etc" / "nwfilter")
        with (r / "etc" / "libvirtd.conf").open("a") as f:
            f.write(
                "\n# kvmm-t second host\n"
                'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n'
                f'listen_addr = "{self.addr}"\nhost_uuid = "{self.host_uuid}"\n'
                'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
            )
        for d in LIB_DIRS:
            src, dst = Path("/var/lib/libvirt") / d, r / "lib" / d
            dst.mkdir()
            if src.exists():
                st = src.stat()
                os.chown(dst, st.st_uid, st.st_gid)
                dst.chmod(st.st_mode & 0o7777)
        (r / "log" / "qemu").mkdir()
        # Same QEMU binary and libvirt: the probed capabilities are valid here too and
        # save the second daemon seconds of probing.
        cache = Path("/var/cache/libvirt/qemu")
        if cache.is_dir():
            shutil.copytree(cache, r / "cache" / "qemu", symlinks=True)

    def _enter_namespaces(self) -> None:
        cmd = [
            "unshare", "--mount", "--net", "--uts", "--fork", "--propagation", "private",
            "--", "sh", "-c", HOLDER, "holder", str(self.root), self.hostname,
        ]  # fmt: skip
        log = (self.root / "holder.log").open("wb")
        self._unshare = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        pidfile = self.root / "holder.pid"
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            if self._unshare.poll() is not None or time.monotonic() > deadline:
                raise SecondHostError(
                    f"unshare failed ({self._unshare.returncode}): "
                    f"{(self.root / 'holder.log').read_text().strip()}"
                )
            time.sleep(0.02)
        self.holder = int(pidfile.read_text())

    def _connect_veth(self) -> None:
        host_end, ns_end = f"{self.veth}h", f"{self.veth}n"
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _run("ip", "link", "set", ns_end, "netns", str(self.holder))
        _run("ip", "addr", "add", f"{self.peer_addr}/30", "dev", host_end)
        _run("ip", "link", "set", host_end, "up")
        self.nsenter("ip", "addr", "add", f"{self.addr}/30", "dev", ns_end)
        self.nsenter("ip", "link", "set", ns_end, "up")
        assert ipaddress.ip_address(self.addr)

    def _start_daemons(self) -> None:
        self.nsenter("virtlogd", "-d", "-p", str(self.root / "virtlogd.pid"))
        self.nsenter("libvirtd", "-d", "--listen", "-p", str(self.root / "libvirtd.pid"))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = self.open()
            except libvirt.libvirtError as exc:
                if time.monotonic() > deadline:
                    log = self.root / "log" / "libvirtd.log"
                    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
                    raise SecondHostError(f"{self.uri} did not answer: {exc}\n{tail}") from exc
                time.sleep(0.1)
                continue
            conn.close()
            return

    # ---- teardown helpers ----------------------------------------------------------------

    def _destroy_everything(self) -> None:
        if not (self.root / "libvirtd.pid").exists():
            return
        conn = self.open()
        try:
            for dom in conn.listAllDomains(0):
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                    if dom.isPersistent():
                        dom.undefine()
            for pool in conn.listAllStoragePools(0):
                with contextlib.suppress(libvirt.libvirtError):
                    if pool.isActive():
                        pool.destroy()
                    if pool.isPersistent():
                        pool.undefine()
            for net in conn.listAllNetworks(0):
                with contextlib.suppress(libvirt.libvirtError):
                    if net.isActive():
                        net.destroy()
                    if net.isPersistent():
                        net.undefine()
        finally:
            conn.close()

    @staticmethod
    def _kill_pidfile(pidfile: Path) -> None:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def _kill_namespace_leftovers(self) -> None:
        """Any process still in our network namespace (a QEMU the daemon left behind)
        was started by this fixture: end it by its PID."""
        if self.holder is None:
            return
        try:
            ours = os.readlink(f"/proc/{self.holder}/ns/net")
        except OSError:
            return
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.holder:
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "net") == ours:
                    os.kill(int(entry.name), signal.SIGKILL)


if __name__ == "__main__":
    h = SecondHost()
    h.start()
    print(f"second host up: {h.uri} (root {h.root}); Enter stops it")
    try:
        input()
    finally:
        h.stop()
