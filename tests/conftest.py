"""Shared fixtures for the whole suite (owned by the platform work; ask before changing).

Every fixture runs against an isolated data dir (SQLite file in tmp_path) and libvirt's
test driver (`test:///default`) unless a test overrides `settings`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.migrated_template import TemplateUpgrade

from kvmmanager.core import security
from kvmmanager.core.config import Settings, get_settings
from kvmmanager.db import migrate

# A production-strength argon2id hash costs ~0.3 s and ~240 tests create a user: the suite
# hashes with the cheapest parameters instead. Only pytest can switch them (core/security.py);
# tests/kvmmanager/core/test_security.py proves the product itself still uses RFC 9106's.
security.use_test_password_hashing()

# Hypothesis' timing checks are wall-clock thresholds: on the 2-core CI machine with part 1
# on both cores, one draw of tests/kvmmanager_agent/test_jsonwire.py took 1.6 s and its
# "too_slow" health check failed the run. What a property test proves does not depend on
# how fast the machine was, so no test here has a deadline or a speed check (the rule for
# every test: no wall-clock thresholds). A test's own @settings still adds to this.
hypothesis.settings.register_profile(
    "kvmm", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("kvmm")

ADMIN_TOKEN_NAME = "kvmm-t-plat-fixture"
_REAL_UPGRADE = migrate.upgrade


@pytest.fixture(scope="session")
def _template_upgrade(tmp_path_factory: pytest.TempPathFactory) -> TemplateUpgrade:
    return TemplateUpgrade(_REAL_UPGRADE, tmp_path_factory.mktemp("migrated-template"))


@pytest.fixture(autouse=True)
def _copy_migrated_template(
    request: pytest.FixtureRequest,
    _template_upgrade: TemplateUpgrade,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new SQLite database migrated to head is a copy of one migrated once per process
    (tests/migrated_template.py): alembic on an empty file costs ~1 s and nearly every
    Manager a test builds does it. Tests marked `real_migrations` run alembic itself."""
    if request.node.get_closest_marker("real_migrations") is None:
        monkeypatch.setattr(migrate, "upgrade", _template_upgrade)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for one test: data_dir under tmp_path (SQLite there), libvirt URI
    `test:///default`, no config file. The same values are in the environment (KVMM_*),
    so `get_settings()` (used by the CLI and anything reading the global config) agrees;
    XDG_CONFIG_HOME points into tmp_path so CLI credentials never touch the real home."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("KVMM_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("KVMM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("KVMM_LIBVIRT__DEFAULT_URI", "test:///default")
    # The test driver is refused as a host URI unless enabled (services/hosts/uris.py).
    monkeypatch.setenv("KVMM_LIBVIRT__ALLOW_TEST_DRIVER", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    for var in ("KVMM_URL", "KVMM_TOKEN", "KVMM_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def outbound_loopback(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Allow webhooks and e-mail to reach 127.0.0.0/8 (a test's local receiver): refused
    by default like every internal address (services/alerts/outbound.py)."""
    settings.outbound.allow_networks = ["127.0.0.0/8"]
    monkeypatch.setenv("KVMM_OUTBOUND__ALLOW_NETWORKS", '["127.0.0.0/8"]')
    return settings


@pytest.fixture
async def manager(settings: Settings) -> AsyncIterator[Any]:
    """A started Manager (migrated DB, first admin, `local` host on the test driver) on
    the test's event loop; stopped afterwards. For service-level async tests."""
    from kvmmanager.services.manager import Manager

    m = Manager(settings)
    await m.start()
    try:
        yield m
    finally:
        await m.stop()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The real FastAPI app (every router), not started: enter a TestClient to start it.
    Its Manager is `app.state.manager` once started."""
    from kvmmanager.web.app import create_app

    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A started TestClient of `app`, authenticated as `admin` with a bearer token.
    The app's lifespan (Manager start/stop) runs around the test."""
    with TestClient(app) as c:
        manager = app.state.manager
        _, secret = manager.users.create_token("admin", ADMIN_TOKEN_NAME)
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c


@pytest.fixture
def client_as(app: FastAPI, client: TestClient) -> Iterator[Callable[[str], TestClient]]:
    """Factory: `client_as("viewer")` -> a TestClient authenticated (bearer token) as a
    fresh user with that role (admin, operator or viewer), on the same started app."""
    counter = iter(range(1_000_000))
    made: list[TestClient] = []

    def make(role: str) -> TestClient:
        manager = app.state.manager
        username = f"kvmm-t-{role}-{next(counter)}"
        manager.users.create(username, "kvmm-t-password", role)
        _, secret = manager.users.create_token(username, ADMIN_TOKEN_NAME)
        c = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
        # Share the started client's event loop: loop-bound objects (libvirt connections,
        # agent clients) must not be touched from a per-request loop.
        c.portal = client.portal
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@dataclass(frozen=True)
class LiveServer:
    url: str
    token: str
    app: FastAPI

    @property
    def manager(self) -> Any:
        return self.app.state.manager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """The real app under uvicorn on 127.0.0.1:<free port> in a thread. Yields
    `LiveServer(url, token, app)`; `token` is an admin bearer token. For CLI and browser
    tests."""
    import uvicorn

    from kvmmanager.web.app import create_app

    port = _free_port()
    settings.server.port = port
    application = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="kvmm-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("live server did not start")
        time.sleep(0.02)
    _, secret = application.state.manager.users.create_token("admin", ADMIN_TOKEN_NAME)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", token=secret, app=application)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def cli(live_server: LiveServer) -> Callable[..., Any]:
    """`cli("vm", "list", "--json")` runs `kvm-manager` in-process (typer CliRunner)
    against `live_server` as admin; returns the click Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from kvmmanager.cli.main import app as cli_app

    runner = CliRunner()
    env = {"KVMM_URL": live_server.url, "KVMM_TOKEN": live_server.token, "COLUMNS": "200"}

    def run(*args: str, input: str | None = None, env_extra: dict[str, str] | None = None):
        return runner.invoke(cli_app, list(args), input=input, env={**env, **(env_extra or {})})

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the real-VM suite (tests/e2e) last. Its session-wide server keeps libvirt's
    event loop (one per process) running until the session ends; every other test starts
    its own loop, so none may come after it."""
    e2e = [i for i in items if "/tests/e2e/" in str(i.path)]
    if e2e:
        rest = [i for i in items if "/tests/e2e/" not in str(i.path)]
        items[:] = rest + e2e
