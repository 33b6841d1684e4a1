"""Session fixtures of the real-VM suite.

One manager (uvicorn in a thread, real libvirtd at qemu:///system) serves the whole
session; the network, the pool, the deployed agent ISO and the long-lived guests are
made once and shared, because booting is the expensive part (TCG). Everything the
suite makes is named `kvmm-e2e-<run id>-...` and removed at the end, through the API
first and then, as a safety net for a failed run, straight through libvirt.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .guest.build import GuestImage, build_guest
from .support.api import Api, ApiError
from .support.events import EventWatcher
from .support.guests import LIBVIRT_URI, Guest

PREFIX = "kvmm-e2e-"
# Every Guest made in this session, for the failure report and the final sweep.
GUESTS: list[Guest] = []


@dataclass(frozen=True)
class E2eServer:
    url: str
    token: str
    app: Any

    @property
    def manager(self) -> Any:
        return self.app.state.manager


@dataclass(frozen=True)
class Lab:
    """What every scenario shares: the API, the events, the network and the pool."""

    run_id: str
    api: Api
    events: EventWatcher
    image: GuestImage
    network: str
    subnet: str  # "10.213.N" : guests get .10, .11, ...
    pool: str
    pool_dir: Path
    log_dir: Path

    def name(self, role: str) -> str:
        return f"{PREFIX}{self.run_id}-{role}"

    def guest(self, role: str, mode: str, host_octet: int, echo_port: str | None = None) -> Guest:
        g = Guest(
            api=self.api,
            watcher=self.events,
            name=self.name(role),
            mode=mode,
            ip=f"{self.subnet}.{host_octet}",
            log_dir=self.log_dir,
            kernel=str(self.image.kernel),
            initrd=str(self.image.initrd),
            echo_port=echo_port,
        )
        GUESTS.append(g)
        return g


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The cleanup scenario deletes the shared VMs, pool and network: it runs last,
    whatever other e2e modules are named."""
    last = [i for i in items if i.path.name == "test_90_cleanup.py"]
    items[:] = [i for i in items if i.path.name != "test_90_cleanup.py"] + last


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """On a failing scenario, attach every guest's console and QEMU log to the report."""
    if call.excinfo is None or not GUESTS:
        return
    if item.get_closest_marker("vm") is None:
        return
    item.add_report_section(
        call.when, "guests", "\n".join(g.report() for g in GUESTS if g.uuid or g.created)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(2)


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return build_guest()


@pytest.fixture(scope="session")
def e2e_server(tmp_path_factory: pytest.TempPathFactory, run_id: str) -> Iterator[E2eServer]:
    """The real app under uvicorn against the real libvirtd, for the whole session
    (tests/conftest.py's `live_server` is per test and on the test driver)."""
    import uvicorn

    from kvmmanager.core.config import get_settings
    from kvmmanager.web.app import create_app  # API + web UI: browser scenarios too

    base = tmp_path_factory.mktemp("e2e-manager")
    mp = pytest.MonkeyPatch()
    mp.setenv("KVMM_CONFIG", str(base / "no-config.toml"))
    mp.setenv("KVMM_DATA_DIR", str(base / "data"))
    mp.setenv("KVMM_LIBVIRT__DEFAULT_URI", LIBVIRT_URI)
    mp.setenv("KVMM_AGENT__ISO_POOL", f"{PREFIX}{run_id}-pool")
    mp.setenv("XDG_CONFIG_HOME", str(base / "xdg"))
    for var in ("KVMM_URL", "KVMM_TOKEN", "KVMM_DATABASE__URL"):
        mp.delenv(var, raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    port = _free_port()
    settings.server.port = port
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="kvmm-e2e-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:  # uvicorn offers no start event to wait on
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the e2e manager did not start")
        time.sleep(0.05)
    _, token = app.state.manager.users.create_token("admin", f"{PREFIX}{run_id}")
    try:
        yield E2eServer(url=f"http://127.0.0.1:{port}", token=token, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        mp.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def lab(
    e2e_server: E2eServer,
    guest_image: GuestImage,
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    api = Api(e2e_server.url, e2e_server.token)
    events = EventWatcher(e2e_server.url, e2e_server.token).start()
    log_dir = Path(os.environ.get("KVMM_E2E_LOG_DIR") or tmp_path_factory.mktemp("e2e-logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    subnet = f"10.213.{random.randint(16, 250)}"
    network = f"{PREFIX}{run_id}-net"
    pool = f"{PREFIX}{run_id}-pool"
    pool_dir = Path(f"/var/tmp/{pool}")
    made: list[tuple[str, str]] = []
    _wait_host_connected(api, events)
    try:
        api.create_network(name=network, forward="isolated", address=f"{subnet}.1", prefix=24)
        made.append(("network", network))
        api.create_pool(name=pool, type="dir", target=str(pool_dir), autostart=False)
        made.append(("pool", pool))
        yield Lab(
            run_id=run_id,
            api=api,
            events=events,
            image=guest_image,
            network=network,
            subnet=subnet,
            pool=pool,
            pool_dir=pool_dir,
            log_dir=log_dir,
        )
    finally:
        for g in GUESTS:
            g.remove()
        for kind, name in reversed(made):
            try:
                (api.delete_network if kind == "network" else api.delete_pool)(name)
            except ApiError as exc:
                print(f"kvmm-e2e: API could not delete {kind} {name}: {exc}")
        events.close()
        api.close()
        leftovers = sweep_libvirt(f"{PREFIX}{run_id}")
        if leftovers:
            print(f"kvmm-e2e: removed through libvirt what the API left: {leftovers}")


def _wait_host_connected(api: Api, events: EventWatcher, timeout: float = 120) -> None:
    """The manager connects its hosts in the background: wait for `local` to answer."""
    deadline = time.monotonic() + timeout
    while True:
        mark = events.mark()
        try:
            api.networks()
            return
        except ApiError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                raise
        with contextlib.suppress(AssertionError):
            events.wait(
                lambda e: (
                    e.get("kind") == "host.status"
                    and (e.get("data") or {}).get("status") == "connected"
                ),
                timeout=5,
                after=mark,
            )


def sweep_libvirt(prefix: str) -> list[str]:
    """Destroys/undefines every libvirt object whose name starts with `prefix` (the
    safety net after a failed run); returns what it had to remove."""
    removed: list[str] = []
    conn = libvirt.open(LIBVIRT_URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix):
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                removed.append(f"domain {dom.name()}")
        for pool in conn.listAllStoragePools():
            if pool.name().startswith(prefix):
                if pool.isActive():
                    for vol in pool.listAllVolumes():
                        vol.delete()
                        removed.append(f"volume {vol.name()}")
                    pool.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    pool.delete(0)  # the (now empty) pool directory
                if pool.isPersistent():
                    pool.undefine()
                removed.append(f"pool {pool.name()}")
        for net in conn.listAllNetworks():
            if net.name().startswith(prefix):
                if net.isActive():
                    net.destroy()
                if net.isPersistent():
                    net.undefine()
                removed.append(f"network {net.name()}")
    finally:
        conn.close()
    return removed


def libvirt_leftovers(prefix: str) -> list[str]:
    """Names of libvirt objects (domains, pools, volumes, networks) starting with prefix."""
    conn = libvirt.open(LIBVIRT_URI)
    try:
        found = [f"domain {d.name()}" for d in conn.listAllDomains() if d.name().startswith(prefix)]
        found += [
            f"network {n.name()}" for n in conn.listAllNetworks() if n.name().startswith(prefix)
        ]
        for pool in conn.listAllStoragePools():
            if pool.name().startswith(prefix):
                found.append(f"pool {pool.name()}")
            if pool.isActive():
                found += [
                    f"volume {v.name()}"
                    for v in pool.listAllVolumes()
                    if v.name().startswith(prefix)
                ]
        return found
    finally:
        conn.close()


@pytest.fixture(scope="session")
def agent_iso(lab: Lab) -> dict:
    """The agent ISO deployed into the suite's pool through the manager."""
    result = lab.api.deploy_agent_iso(lab.pool)
    job_id = result.get("job_id") if isinstance(result, dict) else None
    if job_id:
        result = wait_job(lab, job_id)
    return result


def wait_job(lab: Lab, job_id: str, timeout: float = 300) -> dict:
    """Waits for job.done of `job_id` on the event stream, then returns the job."""
    lab.events.wait(
        lambda e: e.get("kind") == "job.done" and e.get("subject") == job_id,
        timeout=timeout,
    )
    job = lab.api.job(job_id)
    assert job["state"] == "done", job
    return job


@dataclass
class Fleet:
    agent: Guest  # our agent, installed from the ISO
    qga: Guest  # Debian's qemu-guest-agent
    boot_seconds: dict[str, float]
    install: dict  # what install-agent answered (incl. the commands for the guest)


@pytest.fixture(scope="session")
def fleet(lab: Lab, agent_iso: dict) -> Iterator[Fleet]:
    """The two long-lived guests, created and booted in parallel: one installs our agent
    from the ISO (install-agent, then start), one runs the stock qemu-guest-agent."""
    agent = lab.guest("agent", "agent", 10)
    qga = lab.guest("qga", "qga", 11)
    agent.create(lab.pool, lab.network)
    qga.create(lab.pool, lab.network)
    installed = lab.api.install_agent(agent.name, lab.pool)
    marks = {g.name: g.start() for g in (agent, qga)}

    def wait(g: Guest) -> float:
        return g.wait_agent(marks[g.name], channel="kvmm" if g.mode == "agent" else "qga")

    with ThreadPoolExecutor(2) as pool:
        secs = dict(zip((agent.name, qga.name), pool.map(wait, (agent, qga)), strict=True))
    yield Fleet(agent=agent, qga=qga, boot_seconds=secs, install=installed)
