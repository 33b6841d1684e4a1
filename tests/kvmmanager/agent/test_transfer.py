"""Host-side chunked transfer helpers against the real agent: resume and sha256."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transfer import download, upload
from kvmmanager.agent.transports import UnixTransport
from kvmmanager.core.errors import InvalidInput


async def test_upload_resume_and_download(agent: Any, roots: dict[str, Path]) -> None:
    c = AgentClient(lambda: UnixTransport.open(agent.path))
    data = os.urandom(3 * 1024 * 1024 + 123)
    dest = str(roots["write"] / "up.bin")
    try:
        # A first, interrupted upload left 1 MiB behind.
        (roots["write"] / "up.bin").write_bytes(data[: 1024 * 1024])
        seen: list[int] = []
        r = await upload(
            c, io.BytesIO(data), dest, size=len(data), resume=True,
            progress=lambda done, total: seen.append(done),
        )  # fmt: skip
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert seen[0] > 1024 * 1024 and seen[-1] == len(data)
        out = io.BytesIO()
        d = await download(c, dest, out)
        assert out.getvalue() == data and d["sha256"] == r["sha256"]
        # Resuming from a source shorter than what the guest holds is refused.
        with pytest.raises(InvalidInput):
            await upload(c, io.BytesIO(b"short"), dest, resume=True)
    finally:
        await c.close()


class OldAgent:
    """An agent from before raw chunks: its file_open reply has no binary fields. Records
    what the host sends."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.writes: list[dict[str, Any]] = []
        self.reads: list[dict[str, Any]] = []

    async def call(self, method: str, params: Any = None, **kw: Any) -> Any:
        if method == "file_write_chunk":
            self.writes.append({**params, **kw})
        if method == "file_read_chunk":
            self.reads.append(dict(params))
        result = await self.client.call(method, params, **kw)
        if method == "file_open":
            result = {k: v for k, v in result.items() if "binary" not in k and "flight" not in k}
        return result


def _recording_results(client: AgentClient, rec: OldAgent) -> Any:
    """A call that records each file_read_chunk RESULT (what came back over the wire)."""

    async def call(method: str, params: Any = None, **kw: Any) -> Any:
        result = await client.call(method, params, **kw)
        if method == "file_read_chunk":
            rec.reads.append({k: v for k, v in result.items() if k != "@raw"})
        return result

    return call


async def test_pipelined_raw_upload_and_download_both_ways(
    agent: Any, roots: dict[str, Path]
) -> None:
    c = AgentClient(lambda: UnixTransport.open(agent.path))
    # 0xFF and newlines throughout: the raw chunks must not be taken for framing.
    data = (b"\xff\n" * 4096 + os.urandom(1 << 20)) * 9 + b"tail\xff"
    dest = str(roots["write"] / "raw.bin")
    try:
        r = await upload(c, io.BytesIO(data), dest, size=len(data))
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert (roots["write"] / "raw.bin").read_bytes() == data
        for window in (1, 4):
            out = io.BytesIO()
            d = await download(c, dest, out, window=window)
            assert out.getvalue() == data and d["sha256"] == r["sha256"]
        # Downloads are raw too: no base64 reply came back for them.
        seen = OldAgent(c)
        seen.call = _recording_results(c, seen)  # type: ignore[method-assign]
        out = io.BytesIO()
        await download(seen, dest, out)  # type: ignore[arg-type]
        assert out.getvalue() == data
        assert seen.reads and all("data" not in rd for rd in seen.reads)
        out = io.BytesIO()
        await download(c, dest, out, offset=len(data) - 5000)  # a resumed download
        assert out.getvalue() == data[-5000:]
    finally:
        await c.close()


async def test_an_older_agent_gets_base64_chunks_one_at_a_time(
    agent: Any, roots: dict[str, Path]
) -> None:
    c = AgentClient(lambda: UnixTransport.open(agent.path))
    old = OldAgent(c)
    data = os.urandom(2 * 1024 * 1024 + 9)
    try:
        r = await upload(old, io.BytesIO(data), str(roots["write"] / "o.bin"))  # type: ignore[arg-type]
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert all("data" in w and "payload" not in w for w in old.writes)
        assert len(old.writes) == 5  # 512 KiB each
        out = io.BytesIO()
        await download(old, str(roots["write"] / "o.bin"), out)  # type: ignore[arg-type]
        assert out.getvalue() == data
        assert old.reads and not any(rd.get("binary") for rd in old.reads)
    finally:
        await c.close()


async def test_a_failed_upload_keeps_the_file_and_resumes(
    agent: Any, roots: dict[str, Path]
) -> None:
    """The source fails after 5 MiB with chunks in flight: the guest's file is untouched,
    the handle is closed (abort), and a resume completes the file."""
    c = AgentClient(lambda: UnixTransport.open(agent.path))
    target = roots["write"] / "f.bin"
    target.write_bytes(b"old")
    data = os.urandom(8 * 1024 * 1024 + 1)

    class Breaks(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if self.tell() >= 5 * 1024 * 1024:
                raise OSError("source disk failed")
            return super().read(n)

    try:
        with pytest.raises(OSError, match="source disk failed"):
            await upload(c, Breaks(data), str(target))
        assert target.read_bytes() == b"old"
        kept = (roots["write"] / ".f.bin.kvmm-part").stat().st_size
        assert kept == 5 * 1024 * 1024  # every chunk sent before the failure landed
        assert not agent.ctx.transfers.handles  # closed with abort
        r = await upload(c, io.BytesIO(data), str(target), resume=True)
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert target.read_bytes() == data
    finally:
        await c.close()


async def test_a_cancelled_upload_leaves_no_handle(agent: Any, roots: dict[str, Path]) -> None:
    c = AgentClient(lambda: UnixTransport.open(agent.path))
    seen = asyncio.Event()
    task = asyncio.create_task(
        upload(
            c, io.BytesIO(os.urandom(64 * 1024 * 1024)), str(roots["write"] / "c.bin"),
            progress=lambda done, total: seen.set(),
        )
    )  # fmt: skip
    try:
        await asyncio.wait_for(seen.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not (roots["write"] / "c.bin").exists()
        # The abort reached the agent: no handle is left open.
        for _ in range(100):
            if not agent.ctx.transfers.handles:
                break
            await asyncio.sleep(0.05)
        assert not agent.ctx.transfers.handles
        assert (await c.call("ping"))["pong"] is True
    finally:
        await c.close()
