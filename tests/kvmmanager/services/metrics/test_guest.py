"""Guest metrics polling: hostile, failing and hung guests cost nothing but their slot."""

from __future__ import annotations

import asyncio
from typing import Any

from kvmmanager.services.metrics.guest import poll_guests, sanitize


async def test_bad_guests_are_dropped_good_ones_kept() -> None:
    hang = asyncio.Event()

    async def call(uuid: str) -> Any:
        if uuid == "hung":
            await hang.wait()
        if uuid == "broken":
            raise ConnectionResetError("guest went away")
        if uuid == "liar":
            return ["not", "a", "dict"]
        return {"cpu_percent": 3.0, "uptime_seconds": 12}

    store: dict[str, dict[str, Any]] = {"broken": {"cpu_percent": 99.0, "ts": 0.0}}
    targets = [(u, u) for u in ("ok", "hung", "broken", "liar")]
    answered = await poll_guests(targets, call, store, per_call_seconds=0.05, concurrency=2)
    assert answered == 2  # ok, and liar (whose reply sanitizes to nothing)
    assert store["ok"]["cpu_percent"] == 3.0 and store["ok"]["uptime_seconds"] == 12.0
    assert set(store["liar"]) == {"ts"}
    # A failed poll removes the old figures: stale numbers would look current.
    assert "broken" not in store and "hung" not in store


def test_sanitize_rejects_wrong_types_and_ranges() -> None:
    out = sanitize(
        {
            "cpu_percent": 1e9,
            "memory": {"used_kb": -1, "total_kb": True, "available_kb": 5},
            "swap": "lots",
            "uptime_seconds": float("inf"),
            "network": [{"name": "eth0\x00", "rx_bytes": 10, "tx_bytes": "1"}, 7],
            "load_average": [1, 2],
        }
    )
    assert out == {
        "memory": {"available_kb": 5.0},
        "network": [{"name": "eth0", "rx_bytes": 10.0}],
    }
