"""Host-side chunked transfer helpers against the real agent: resume and sha256."""

from __future__ import annotations

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
