"""Two managers, one guest (design.md decision 6, issue 16 item 4): a second manager
process with its own data dir and port runs against the same libvirtd next to the
suite's. QEMU's end of the agent channel takes one client: each manager holds it only
while it talks, so interleaved calls through both get their own answers and both show
the agent connected (from libvirt's channel state)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .conftest import PREFIX, Fleet, Lab
from .support.api import Api, ApiError
from .support.guests import LIBVIRT_URI

# Run alone, this module also pays for booting the suite's guests.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

PREPARE = """
from kvmmanager.core.config import get_settings
from kvmmanager.services.manager import Manager
m = Manager(get_settings())
m.prepare_database()
print(m.users.create_token("admin", "{name}")[1])
m.engine.dispose()
"""
SERVE = "import sys; from kvmmanager.cli.main import main; sys.argv[0] = 'kvm-manager'; main()"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def second_manager(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    base = tmp_path_factory.mktemp("e2e-second-manager")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMM_")}
    env.update(
        KVMM_CONFIG=str(base / "no-config.toml"),
        KVMM_DATA_DIR=str(base / "data"),
        KVMM_LIBVIRT__DEFAULT_URI=LIBVIRT_URI,
        XDG_CONFIG_HOME=str(base / "xdg"),
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    name = f"{PREFIX}{lab.run_id}-second"
    token = (
        subprocess.run(
            [sys.executable, "-c", PREPARE.format(name=name)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = _free_port()
    log = (base / "manager.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = Api(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 120
        while True:  # up, and its libvirt connection made (503 until then)
            assert proc.poll() is None, Path(log.name).read_text()[-4000:]
            with contextlib.suppress(ApiError, httpx.HTTPError):
                api.networks()
                break
            assert time.monotonic() < deadline, "the second manager did not come up"
            time.sleep(0.5)
        yield api
    finally:
        api.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _connected(api: Api, vm: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = api.agent_status(vm)
        if status["agent_status"] == "connected":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def test_two_managers_both_talk_to_one_agent(lab: Lab, fleet: Fleet, second_manager: Api) -> None:
    g = fleet.agent
    managers = {"first": lab.api, "second": second_manager}
    for api in managers.values():
        _connected(api, g.name)

    def echo(who: str, i: int) -> str:
        return managers[who].exec(g.name, "echo", f"{who}-{i}")["stdout"].strip()

    with ThreadPoolExecutor(4) as pool:
        for i in range(6):
            calls = {who: pool.submit(echo, who, i) for who in managers}
            facts = {who: pool.submit(managers[who].agent, g.name, "system") for who in managers}
            for who, fut in calls.items():
                assert fut.result(timeout=120) == f"{who}-{i}"
            for fut in facts.values():
                assert fut.result(timeout=120)["hostname"] == g.hostname
    for api in managers.values():
        assert api.ping(g.name)["pong"] is True
        # Both still see the agent connected: no manager marked it unresponsive.
        assert _connected(api, g.name, timeout=5)["agent_status"] == "connected"
