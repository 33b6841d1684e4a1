"""The agent REST endpoints, with the real agent on a unix socket standing in for the
guest's channel of the test driver's VM `test`."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kvmmanager.agent.transports import UnixTransport

_path = Path(__file__).parents[2] / "kvmmanager_agent" / "conftest.py"
_spec = importlib.util.spec_from_file_location("kvmm_t_agent_fixtures_api", _path)
assert _spec is not None and _spec.loader is not None
_fx = importlib.util.module_from_spec(_spec)
sys.modules["kvmm_t_agent_fixtures_api"] = _fx
_spec.loader.exec_module(_fx)
roots = _fx.roots
start_agent = _fx.start_agent
agent = _fx.agent

BASE = "/api/hosts/local/vms/test/agent"
BASE_ROUTE = "/api/hosts/{host}/vms/{vm}/agent"


@pytest.fixture
def api(client: TestClient, agent: Any) -> TestClient:
    manager = client.app.state.manager  # type: ignore[attr-defined]
    host = manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    info = manager.inventory.domain("local", "test")
    manager.inventory.put_domain(dataclasses.replace(info, agent_status="connected"))

    async def opener(host_name: str, uuid: str) -> Any:
        return await UnixTransport.open(agent.path)

    manager.agents._opener = opener
    return client


def test_facts_for_viewer(api: TestClient, client_as: Callable[[str], TestClient]) -> None:
    viewer = client_as("viewer")
    assert viewer.get(f"{BASE}/ping").json()["pong"] is True
    info = viewer.get(f"{BASE}/info").json()
    assert "source" in info, info
    assert info["source"] == "kvmm" and info["kernel_version"] == os.uname().release
    for what in ("system", "network", "disks", "metrics", "users", "time", "agent-info"):
        r = viewer.get(f"{BASE}/{what}")
        assert r.status_code == 200, (what, r.text)
    assert viewer.get(f"{BASE}/bogus").status_code == 404
    assert viewer.get(f"{BASE}/processes", params={"limit": 3}).json()["processes"]
    st = viewer.get(f"{BASE}/status").json()
    assert st["agent_status"] == "connected" and st["transport"] == "unix"
    methods = {m["name"]: m for m in viewer.get(f"{BASE}/methods").json()}
    assert methods["ping"]["allowed"] and not methods["exec_command"]["allowed"]


def test_viewer_cannot_exec_read_files_or_power(
    api: TestClient, client_as: Callable[[str], TestClient], roots: dict[str, Path]
) -> None:
    viewer = client_as("viewer")
    assert viewer.post(f"{BASE}/exec", json={"command": "true"}).status_code == 403
    r = viewer.get(f"{BASE}/files", params={"path": str(roots["read"] / "x")})
    assert r.status_code == 403
    assert viewer.get(f"{BASE}/fsfreeze").status_code == 200
    assert viewer.post(f"{BASE}/shutdown").status_code == 403


def test_exec_and_stream(api: TestClient, client_as: Callable[[str], TestClient]) -> None:
    op = client_as("operator")
    r = op.post(f"{BASE}/exec", json={"command": "sh", "args": ["-c", "echo hi; exit 2"]}).json()
    assert (r["exit_code"], r["stdout"]) == (2, "hi\n")
    body = {"command": "sh", "args": ["-c", "echo a; echo b >&2; exit 5"]}
    with op.stream("POST", f"{BASE}/exec/stream", json=body) as resp:
        lines = [json.loads(x) for x in resp.iter_lines() if x]
    assert "exit_code" in lines[-1], lines
    out = "".join(x["data"] for x in lines if x.get("stream") == "stdout")
    err = "".join(x["data"] for x in lines if x.get("stream") == "stderr")
    assert (out, err, lines[-1]["exit_code"]) == ("a\n", "b\n", 5)
    bad = op.post(f"{BASE}/exec", json={"command": "rm"})
    assert bad.status_code == 403 and bad.json()["error"]["field"] == "command"


def test_files_simple_and_streamed(api: TestClient, roots: dict[str, Path]) -> None:
    path = str(roots["write"] / "f.txt")
    r = api.put(f"{BASE}/files", json={"path": path, "content": "hello"})
    assert r.json() == {"bytes_written": 5, "path": path}
    assert api.get(f"{BASE}/files", params={"path": path}).json()["content"] == "hello"
    data = os.urandom(1_300_000)
    r = api.put(f"{BASE}/files/content", params={"path": path + ".bin"}, content=data)
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    # A resumed download from an offset gives the rest of the file.
    whole = api.get(f"{BASE}/files/content", params={"path": path + ".bin"})
    rest = api.get(f"{BASE}/files/content", params={"path": path + ".bin", "offset": 700_000})
    assert whole.content == data and rest.content == data[700_000:]
    assert rest.headers["X-Offset"] == "700000"
    outside = api.get(f"{BASE}/files", params={"path": "/etc/shadow"})
    assert outside.status_code == 403 and outside.json()["error"]["field"] == "path"


def test_the_one_transfer_path_is_the_only_one(api: TestClient) -> None:
    """Issue 13: one transfer implementation; the per-chunk routes are gone."""
    routes = set(api.get("/api/openapi.json").json()["paths"])
    assert f"{BASE_ROUTE}/files/content" in routes
    assert not [p for p in routes if "/agent/files/{handle}" in p or p.endswith("/files/open")]


def test_power_freeze_and_generic_call(api: TestClient) -> None:
    r = api.post(f"{BASE}/reboot", json={"timeout_seconds": 2}).json()
    assert r["initiated"] is True and r["source"] == "kvmm"
    fr = api.post(f"{BASE}/fsfreeze/freeze", json={"timeout_seconds": 30}).json()
    assert fr["frozen"] == 2 and fr["mount_points"] == ["/var", "/"]
    assert api.get(f"{BASE}/fsfreeze").json()["status"] == "frozen"
    assert api.post(f"{BASE}/fsfreeze/thaw").json()["thawed"] == 2
    assert api.post(f"{BASE}/call/get_time").json()["timestamp"] > 0
    assert api.post(f"{BASE}/call/sync").status_code == 422
    r = api.post(f"{BASE}/call/file_read", json={"path": 5})
    assert r.status_code == 422 and r.json()["error"]["field"] == "path"


def test_whole_file_streams_and_aliases(api: TestClient, roots: dict[str, Path]) -> None:
    assert api.post(f"{BASE}/ping").json()["pong"] is True
    path = str(roots["write"] / "posted.txt")
    assert (
        api.post(f"{BASE}/files", json={"path": path, "content": "p"}).json()["bytes_written"] == 1
    )
    data = os.urandom(3 * 1024 * 1024 + 7)
    up = api.put(f"{BASE}/files/content", params={"path": path}, content=data).json()
    assert up["sha256"] == hashlib.sha256(data).hexdigest() and up["size_bytes"] == len(data)
    down = api.get(f"{BASE}/files/content", params={"path": path})
    assert down.content == data and down.headers["X-Size"] == str(len(data))
    st = api.post(f"{BASE}/reconnect").json()
    assert st["agent_status"] == "connected"
    assert st["agent_info"]["negotiated_protocol_version"] == 2


def test_facts_fall_back_to_qemu_guest_agent(client: TestClient) -> None:
    manager = client.app.state.manager  # type: ignore[attr-defined]
    host = manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    info = manager.inventory.domain("local", "test")
    manager.inventory.put_domain(dataclasses.replace(info, qga_status="connected"))
    net = client.get(f"{BASE}/network").json()
    assert net["source"] == "qga"
    assert net["interfaces"][0]["ipv4_addresses"] == ["192.168.122.3/24"]
    disks = client.get(f"{BASE}/disks").json()
    assert [f["mount_point"] for f in disks["filesystems"]] == ["/", "/boot"]
    assert client.get(f"{BASE}/system").json()["source"] == "qga"
    assert client.get(f"{BASE}/info").json()["source"] == "qga"
    # exec has no qemu-ga fallback here: the kvmmanager agent is required.
    assert client.post(f"{BASE}/exec", json={"command": "true"}).status_code == 503


def test_a_json_file_write_over_the_body_limit_is_sent_to_the_streaming_upload(
    api: TestClient, roots: dict[str, Path], agent: Any
) -> None:
    """JSON bodies are bounded (server.max_body_bytes, 1 MiB, docs/security.md): a 3 MiB
    JSON write is a 413 naming the limit and the raw upload route, and writes nothing;
    the same 3 MiB (beyond the agent's 1 MiB line) goes through PUT /files/content in
    chunks and arrives whole."""
    path = str(roots["write"] / "big.txt")
    text = "y" * (3 * 1024 * 1024)
    r = api.put(f"{BASE}/files", json={"path": path, "content": text, "permissions": "0600"})
    assert r.status_code == 413, r.text
    message = r.json()["error"]["message"]
    assert "1048576 bytes" in message and "server.max_body_bytes" in message
    assert f"PUT {BASE.replace('local', '{host}').replace('test', '{vm}')}/files/content" in (
        message
    )
    assert not Path(path).exists()
    r = api.put(f"{BASE}/files/content", params={"path": path}, content=text.encode())
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert Path(path).read_text() == text
    assert not agent.ctx.transfers.handles
    # Within the limit the JSON write still works, with its permissions.
    small = str(roots["write"] / "small.txt")
    r = api.put(
        f"{BASE}/files", json={"path": small, "content": "z" * 500_000, "permissions": "0600"}
    )
    assert r.json() == {"bytes_written": 500_000, "path": small}
    assert oct(Path(small).stat().st_mode & 0o777) == "0o600"


def test_streamed_upload_goes_in_raw_pipelined_chunks(
    api: TestClient, roots: dict[str, Path], agent: Any
) -> None:
    """PUT /files/content streams the body to the agent as raw chunks (0xFF and newlines
    are data), several in flight; the download gives the same bytes back."""
    data = (b"\xff\n" * 100_000 + os.urandom(700_001)) * 4
    path = str(roots["write"] / "streamed.bin")
    r = api.put(f"{BASE}/files/content", params={"path": path}, content=data)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert (roots["write"] / "streamed.bin").read_bytes() == data
    assert not agent.ctx.transfers.handles
    back = api.get(f"{BASE}/files/content", params={"path": path})
    assert back.status_code == 200 and back.content == data


def test_guest_file_reads_keep_to_the_vm_owner(
    api: TestClient, client_as: Callable[[str], TestClient], roots: dict[str, Path]
) -> None:
    """Reading a guest's files is that VM's data: an operator may not read another
    user's VM (issue 14's finding), whichever read route; the owner may."""
    (roots["read"] / "secret.txt").write_text("kvmm-t secret")
    path = str(roots["read"] / "secret.txt")
    opened = api.post(f"{BASE}/call/file_open", json={"path": path, "mode": "r"}).json()
    # Transfer handles are unguessable: no small integer names someone's transfer.
    assert opened["handle"] > 2**32
    manager = api.app.state.manager  # type: ignore[attr-defined]
    info = manager.inventory.domain("local", "test")
    operator = client_as("operator")
    try:
        manager.inventory.put_domain(dataclasses.replace(info, owner="kvmm-t-someone-else"))
        reads = [
            (f"{BASE}/files/content", {"path": path}),
            (f"{BASE}/files", {"path": path}),
            (f"{BASE}/files/stat", {"path": path, "sha256": True}),
        ]
        for url, params in reads:
            r = operator.get(url, params=params)
            assert r.status_code == 403 and "kvmm-t-someone-else" in r.text, (url, r.text)
        by_name = operator.post(f"{BASE}/call/file_read", json={"path": path})
        assert by_name.status_code == 403, by_name.text
        manager.inventory.put_domain(dataclasses.replace(info, owner=None))
        assert operator.get(f"{BASE}/files/content", params={"path": path}).content == (
            b"kvmm-t secret"
        )
    finally:
        manager.inventory.put_domain(info)
        api.post(f"{BASE}/call/file_close", json={"handle": opened["handle"]})


def test_download_resumes_from_an_offset_through_the_windowed_transfer(
    api: TestClient, roots: dict[str, Path]
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (roots["read"] / "big.bin").write_bytes(data)
    path = str(roots["read"] / "big.bin")
    whole = api.get(f"{BASE}/files/content", params={"path": path})
    assert whole.content == data and whole.headers["X-Size"] == str(len(data))
    tail = api.get(f"{BASE}/files/content", params={"path": path, "offset": 1_000_001})
    assert tail.content == data[1_000_001:]
    st = api.get(f"{BASE}/files/stat", params={"path": path, "sha256": True}).json()
    assert st["sha256"] == hashlib.sha256(data).hexdigest()
    bad = api.get(f"{BASE}/files/content", params={"path": path, "offset": -1})
    assert bad.status_code == 422
