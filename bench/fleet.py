"""Many hosts from one manager (issue 19 item 1): what N libvirt connections cost the real
server, how long its cold start takes to a complete inventory, and how it rides out faults.

The manager is the real `kvm-manager serve` in its own process (migrated, given a token
and its hosts beforehand by `bench/server.py --prepare-only`, the way an admin's
`host add` leaves them stored), read only through its REST API and /proc:

- N test-driver hosts, each `test:///<own file>` with its own domains (`bench/testdriver.py`,
  numbered apart so every name and UUID is unique across the fleet). The test driver runs
  inside the manager's process: its memory is counted in the manager's RSS (on real hosts
  it is libvirtd's), so the RSS here is an upper bound.
- K real libvirtd daemons (`--real K`), each in its own mount, network and UTS namespace
  with its own config, sockets, state and logs (tests/migration/second_host.py, the
  migration tests' second host), reached as `qemu+tcp://10.231.x.2/system` over its own
  veth: separate connections with their own keepalive and events, and the shared
  libvirtd (qemu:///system) untouched. Each gets `--real-vms` defined (inactive) domains.

Fault scenarios on the real daemons, each ending when every host is connected again and
the inventory holds every VM (no VM lost), bounded by a deadline:
- `storm`: every private libvirtd restarted at once (all connections dropped);
- `slow`: one libvirtd stopped (SIGSTOP) for a while, then continued: the other hosts'
  stats collections must go on meanwhile (their cycle counts are the figure);
- `flap`: one libvirtd restarted over and over; the others must see no status change.
Status changes are counted from the manager's own SSE stream (`host.status` events).

    .venv/bin/python bench/fleet.py --hosts 100 --vms 10000            # test-driver fleet
    .venv/bin/python bench/fleet.py --hosts 10 --vms 1000 --real 4     # + 4 real libvirtd
    .venv/bin/python bench/run.py --only fleet                         # the runner's sizes
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench/ (common, server) and the repo (tests.*)

from common import Row, ratio, table  # noqa: E402
from server import free_port, server_env  # noqa: E402
from testdriver import uri, write_node  # noqa: E402

REAL_PREFIX = "kvmm-t-fleet"


@dataclass(frozen=True)
class FleetHost:
    name: str
    uri: str
    vms: int


def test_driver_hosts(workdir: Path, hosts: int, vms: int) -> list[FleetHost]:
    """`hosts` test-driver hosts sharing `vms` domains (the first ones get the remainder)."""
    out: list[FleetHost] = []
    first = 0
    for h in range(hosts):
        count = vms // hosts + (1 if h < vms % hosts else 0)
        node = write_node(workdir / f"fleet-{h:03d}.xml", count, first=first)
        out.append(FleetHost(f"t{h:03d}", uri(node), count))
        first += count
    return out


@dataclass
class ProcCounts:
    """What the manager process holds, from /proc (counts that load does not distort)."""

    threads: int
    rss_mb: float
    fds: int
    tcp: int
    cpu_s: float  # user + system CPU of the process so far (load stretches wall time, not this)

    @classmethod
    def of(cls, pid: int) -> ProcCounts:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status if ":" in line)
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
        tcp = sum(1 for fd in fds if _is_socket(fd))
        # utime and stime, fields 14 and 15 of stat (after the parenthesised name).
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return cls(
            threads=int(fields["Threads"].strip()),
            rss_mb=int(fields["VmRSS"].split()[0]) / 1024,
            fds=len(fds),
            tcp=tcp,
            cpu_s=(int(stat[11]) + int(stat[12])) / ticks,
        )


def _is_socket(fd: Path) -> bool:
    try:
        return os.readlink(fd).startswith("socket:")
    except OSError:
        return False


class StatusCounter:
    """Counts `host.status` events per host and status from the server's SSE stream."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(30)

    def _read(self, url: str, headers: dict[str, str]) -> None:
        # The stream ends with the server (the last scenario stops it): not an error.
        with contextlib.suppress(httpx.HTTPError):
            self._read_stream(url, headers)

    def _read_stream(self, url: str, headers: dict[str, str]) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(30, read=None)) as client,
            client.stream(
                "GET", f"{url}/api/events", params={"kind": "host.status"}, headers=headers
            ) as r,
        ):
            self._ready.set()
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("data:"):
                    ev = json.loads(line[5:])
                    with self._lock:
                        self.counts[ev["host"]][ev["data"]["status"]] += 1

    def take(self) -> dict[str, collections.Counter[str]]:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, collections.defaultdict(collections.Counter)
        return counts

    def close(self) -> None:
        self._stop.set()


class FleetServer:
    """`kvm-manager serve` on the stored fleet, in its own process; stopped on exit."""

    def __init__(self, hosts: list[FleetHost], workdir: Path, interval: float = 2.0) -> None:
        self.hosts = hosts
        self.expect = sum(h.vms for h in hosts)
        self.interval = interval
        self.data = workdir / f"fleet-data-{os.getpid()}-{time.monotonic_ns()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.env: dict[str, str] = {}
        self.not_current = 0
        self.first_answer: float | None = None  # perf_counter of the first API answer

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def prepare(self) -> None:
        """Migrate, token, store the hosts (a separate process: the settings come from the
        environment, as the server's do)."""
        self.data.mkdir(parents=True)
        hosts_file = self.data / "hosts.json"
        hosts_file.write_text(json.dumps([[h.name, h.uri] for h in self.hosts]))
        token_file = self.data / "token"
        first = self.hosts[0].uri
        subprocess.run(
            [
                sys.executable,
                str(HERE / "server.py"),
                "--uri",
                first,
                "--port",
                str(self.port),
                "--data",
                str(self.data),
                "--token-file",
                str(token_file),
                "--interval",
                str(self.interval),
                "--hosts-file",
                str(hosts_file),
                "--prepare-only",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.token = token_file.read_text()
        self.env = {**os.environ, **server_env(first, self.data, self.interval)}

    def start(self) -> float:
        """Start `kvm-manager serve`; returns the perf_counter of the start."""
        self.first_answer = None
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from kvmmanager.cli.main import main; sys.exit(main())",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=(self.data / "serve.log").open("wb"),
        )
        return t0

    def host_rows(self) -> list[dict[str, object]]:
        r = httpx.get(f"{self.url}/api/hosts", headers=self.headers, timeout=60)
        r.raise_for_status()
        rows: list[dict[str, object]] = r.json()
        return rows

    def complete(self) -> bool:
        """Every host connected and the inventory holding every VM of the fleet."""
        try:
            rows = self.host_rows()
        except (httpx.TransportError, httpx.HTTPStatusError):
            return False
        if self.first_answer is None:
            self.first_answer = time.perf_counter()
        return (
            len(rows) == len(self.hosts)
            and all(r["status"] == "connected" for r in rows)
            and sum(int(str(r["vm_count"])) for r in rows) == self.expect
        )

    def wait_complete(self, seconds: float = 600, poll: float = 0.1) -> float:
        """Seconds until `complete()`; RuntimeError past the deadline (naming the hosts)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + seconds
        while not self.complete():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvm-manager serve exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                bad = [r for r in self.host_rows() if r["status"] != "connected"]
                raise RuntimeError(f"fleet not complete after {seconds:g} s: {bad[:5]}")
            time.sleep(poll)
        return time.perf_counter() - t0

    def vm_names(self) -> set[tuple[str, str]]:
        r = httpx.get(f"{self.url}/api/vms", headers=self.headers, timeout=120)
        r.raise_for_status()
        body = r.json()
        # {"vms": [...], "hosts_not_current": [...]} since issue 21; a bare list before.
        vms = body["vms"] if isinstance(body, dict) else body
        self.not_current = len(body.get("hosts_not_current") or []) if isinstance(body, dict) else 0
        return {(v["host"], v["name"]) for v in vms}

    def collector_cycles(self) -> dict[str, int]:
        r = httpx.get(f"{self.url}/api/metrics/collectors", headers=self.headers, timeout=60)
        r.raise_for_status()
        return {c["host"]: int(c["cycles"]) for c in r.json()}

    def counts(self) -> ProcCounts:
        assert self.proc is not None
        return ProcCounts.of(self.proc.pid)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data / "serve.log").read_text()[-2000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- real daemons ----------------------------------------------------------------------


@dataclass
class RealHosts:
    """K private libvirtd daemons (the migration tests' SecondHost), each with `vms`
    defined domains named kvmm-t-fleet-<tag>-NNN."""

    k: int
    vms: int
    hosts: list[object] = field(default_factory=list)

    def start(self) -> list[FleetHost]:
        from tests.libvirtd_pools import qcow2_domain_xml
        from tests.migration.second_host import SecondHost

        out = []
        for i in range(self.k):
            h = SecondHost()
            self.hosts.append(h)
            h.start()
            conn = h.open()
            try:
                for j in range(self.vms):
                    name = f"{REAL_PREFIX}-{h.tag}-{j:03d}"
                    conn.defineXML(qcow2_domain_xml(name, f"/var/tmp/{name}.qcow2"))
            finally:
                conn.close()
            out.append(FleetHost(f"r{i:02d}", h.uri, self.vms))
        return out

    def pid(self, i: int) -> int:
        return int((self._root(i) / "libvirtd.pid").read_text().strip())

    def _root(self, i: int) -> Path:
        return Path(self.hosts[i].root)  # type: ignore[attr-defined]

    def kill(self, i: int) -> None:
        self.hosts[i]._kill_pidfile(self._root(i) / "libvirtd.pid")  # type: ignore[attr-defined]

    def launch(self, i: int) -> None:
        h = self.hosts[i]
        h.nsenter("libvirtd", "-d", "--listen", "-p", str(self._root(i) / "libvirtd.pid"))  # type: ignore[attr-defined]

    def restart(self, *which: int) -> None:
        """Stop the daemons (all first: every connection drops at once), then start them."""
        threads = [threading.Thread(target=self.kill, args=(i,)) for i in which]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        threads = [threading.Thread(target=self.launch, args=(i,)) for i in which]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()  # type: ignore[attr-defined]


# ---- scenarios -------------------------------------------------------------------------


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


@contextlib.contextmanager
def fleet(
    workdir: Path, hosts: int, vms: int, real: int = 0, real_vms: int = 20, interval: float = 2.0
) -> Iterator[tuple[FleetServer, RealHosts]]:
    daemons = RealHosts(real, real_vms)
    try:
        members = test_driver_hosts(workdir, hosts, vms) + (daemons.start() if real else [])
        srv = FleetServer(members, workdir, interval)
        srv.prepare()
        try:
            yield srv, daemons
        finally:
            srv.stop()
    finally:
        daemons.stop()


def virsh_listing(hosts: list[FleetHost]) -> tuple[float, float, int]:
    """The peer: `virsh -c <URI> list --all --name` for every host in turn, as a script
    over the same URIs would (each opens its host: the test driver parses its file in
    virsh's process as it does in ours). Returns (seconds, CPU seconds of the virsh
    processes, domains listed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    listed = 0
    for h in hosts:
        out = subprocess.run(
            ["virsh", "-c", h.uri, "list", "--all", "--name"],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
        listed += sum(1 for line in out.splitlines() if line.strip())
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, listed


def list_page(srv: FleetServer) -> bool:
    """The VM list page a user opens first (page 1 of 100 rows): correct when its pager
    counts every VM of the fleet."""
    r = httpx.get(f"{srv.url}/vms", headers=srv.headers, timeout=120)
    r.raise_for_status()
    return f"of {srv.expect} VMs \u00b7 page 1 of" in r.text


def cold_start(srv: FleetServer, label: str) -> list[Row]:
    t0 = srv.start()
    srv.wait_complete()
    seconds = time.perf_counter() - t0
    cpu_at_complete = srv.counts().cpu_s
    listening = srv.first_answer - t0 if srv.first_answer is not None else float("nan")
    page_ok = list_page(srv)
    page_s = time.perf_counter() - t0
    names = srv.vm_names()
    api_s = time.perf_counter() - t0
    correct = len(names) == srv.expect
    counts = srv.counts()
    load = _load()
    peer_s, peer_cpu, peer_n = virsh_listing(srv.hosts)
    rows = [
        Row(
            "fleet cold start",
            f"{label}: `kvm-manager serve` -> its API answers (load {load})",
            f"{listening:.1f} s",
        ),
        Row(
            "fleet cold start",
            f"{label}: `kvm-manager serve` -> every host connected, all VMs listed; peer: "
            f"`virsh list --all` over the same URIs, one after another ({peer_n} listed)",
            f"{seconds:.1f} s",
            f"{peer_s:.1f} s",
            ratio(seconds, peer_s),
            "<= 10 s (5,000 VMs, 1 host), <= 20 s (10,000 VMs, 100 hosts)",
        ),
        Row(
            "fleet cold start",
            f"{label}: CPU of the manager's process (user + system) up to that point; "
            "peer: of the virsh processes",
            f"{cpu_at_complete:.1f} s",
            f"{peer_cpu:.1f} s",
            ratio(cpu_at_complete, peer_cpu),
        ),
        Row(
            "fleet cold start",
            f"{label}: -> then the first VM list page (/vms, 100 rows) counting every VM",
            f"{page_s:.1f} s" + ("" if page_ok else " (INCOMPLETE)"),
        ),
        Row(
            "fleet cold start",
            f"{label}: -> then GET /api/vms: distinct (host, name); hosts_not_current",
            f"{api_s:.1f} s: {len(names)} of {srv.expect}"
            + ("" if correct else " (INCOMPLETE)")
            + f"; {srv.not_current}",
        ),
    ]
    return rows + footprint(srv, label, counts)


def footprint(srv: FleetServer, label: str, counts: ProcCounts) -> list[Row]:
    # Python does not name OS threads (every /proc comm is "python"): the count alone.
    return [
        Row("fleet footprint", f"{label}: manager threads", str(counts.threads)),
        Row(
            "fleet footprint",
            f"{label}: manager RSS right after the inventory (test drivers in-process)",
            f"{counts.rss_mb:.0f} MB",
        ),
        Row(
            "fleet footprint",
            f"{label}: open fds (of them sockets)",
            f"{counts.fds} ({counts.tcp})",
        ),
    ]


def steady(srv: FleetServer, label: str, cycles: int = 3) -> list[Row]:
    """RSS and threads once every host's collector ran `cycles` times (history rings are
    preallocated on a VM's first sample, so this includes a full hour of history)."""
    deadline = time.monotonic() + 600
    while True:
        got = srv.collector_cycles()
        if len(got) == len(srv.hosts) and min(got.values()) >= cycles:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"collectors did not reach {cycles} cycles: {got}")
        time.sleep(0.5)
    c = srv.counts()
    return [
        Row(
            "fleet footprint",
            f"{label}: after {cycles} stats cycles of every host (1 h rings allocated), "
            f"load {_load()}",
            f"RSS {c.rss_mb:.0f} MB, {c.threads} threads",
            "",
            "",
            "RSS <= 500 MB (10,000 VMs, 100 hosts)",
        )
    ]


def storm(srv: FleetServer, daemons: RealHosts, status: StatusCounter) -> list[Row]:
    status.take()
    t0 = time.perf_counter()
    daemons.restart(*range(daemons.k))
    restarted = time.perf_counter() - t0
    seconds = srv.wait_complete(seconds=300)
    counts = status.take()
    real = [h.name for h in srv.hosts if h.name.startswith("r")]
    attempts = sum(counts[h]["connecting"] + counts[h]["reconnecting"] for h in real)
    others = sum(sum(c.values()) for h, c in counts.items() if h not in real)
    return [
        Row(
            "fleet faults",
            f"storm: {daemons.k} libvirtd restarted at once ({restarted:.1f} s) -> all back, "
            f"no VM lost (load {_load()})",
            f"{restarted + seconds:.1f} s",
        ),
        Row(
            "fleet faults",
            "storm: host.status changes of the restarted hosts (reconnecting/connected) / "
            "of the other hosts",
            f"{attempts}/{sum(counts[h]['connected'] for h in real)} / {others}",
        ),
    ]


def slow(srv: FleetServer, daemons: RealHosts, status: StatusCounter, stall: float) -> list[Row]:
    status.take()
    before = srv.collector_cycles()
    pid = daemons.pid(0)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(stall)
        during = srv.collector_cycles()
    finally:
        os.kill(pid, signal.SIGCONT)
    seconds = srv.wait_complete(seconds=300)
    counts = status.take()
    stalled = "r00"
    others = [h for h in before if h != stalled]
    advanced = [during.get(h, 0) - before[h] for h in others]
    own = during.get(stalled, 0) - before.get(stalled, 0)
    return [
        Row(
            "fleet faults",
            f"slow: libvirtd of {stalled} stopped {stall:g} s: stats cycles of the other "
            f"{len(others)} hosts meanwhile, min / max (load {_load()})",
            f"{min(advanced)} / {max(advanced)} (stalled host: {own})",
            "",
            "",
            f"~{stall / srv.interval:.0f} each",
        ),
        Row(
            "fleet faults",
            f"slow: after SIGCONT -> all back, no VM lost; status changes of {stalled} / others",
            f"{seconds:.1f} s; {dict(counts[stalled])} / "
            f"{sum(sum(c.values()) for h, c in counts.items() if h != stalled)}",
        ),
    ]


def flap(
    srv: FleetServer, daemons: RealHosts, status: StatusCounter, flaps: int, period: float
) -> list[Row]:
    i = min(1, daemons.k - 1)
    name = f"r{i:02d}"
    status.take()
    for _ in range(flaps):
        daemons.restart(i)
        time.sleep(period)
    seconds = srv.wait_complete(seconds=300)
    counts = status.take()
    others = sum(sum(c.values()) for h, c in counts.items() if h != name)
    return [
        Row(
            "fleet faults",
            f"flap: {name}'s libvirtd restarted {flaps}x every {period:g} s -> all back, no VM "
            f"lost; status changes of {name} / of the others (load {_load()})",
            f"{seconds:.1f} s after the last; {dict(counts[name])} / {others}",
        )
    ]


def run(
    workdir: Path,
    sizes: tuple[tuple[int, int], ...] = ((1, 5000), (10, 10000), (100, 10000)),
    real: int = 0,
    real_vms: int = 20,
    stall: float = 20.0,
    flaps: int = 4,
    period: float = 3.0,
    restart: bool = True,
) -> list[Row]:
    rows: list[Row] = []
    for hosts, vms in sizes:
        label = f"{hosts} hosts, {vms} VMs" + (
            f" + {real} real libvirtd x {real_vms}" if real else ""
        )
        with fleet(workdir, hosts, vms, real, real_vms) as (srv, daemons):
            rows += cold_start(srv, label)
            rows += steady(srv, label)
            if real:
                status = StatusCounter(srv.url, srv.headers)
                try:
                    rows += storm(srv, daemons, status)
                    rows += slow(srv, daemons, status, stall)
                    rows += flap(srv, daemons, status, flaps, period)
                finally:
                    status.close()
            if restart:
                # The restart of the same data dir: hosts and history come back from disk.
                srv.stop()
                rows += cold_start(srv, f"{label}, restart on the same data dir")
    return rows


def main() -> None:

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--real", type=int, default=0, help="private libvirtd daemons (root)")
    ap.add_argument("--real-vms", type=int, default=20)
    ap.add_argument("--stall", type=float, default=20.0)
    ap.add_argument("--no-restart", action="store_true", help="skip the second cold start")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kvmm-bench-fleet-"))
    try:
        rows = run(
            workdir,
            ((args.hosts, args.vms),),
            args.real,
            args.real_vms,
            args.stall,
            restart=not args.no_restart,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, args.markdown))


if __name__ == "__main__":
    main()
