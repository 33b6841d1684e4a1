"""Guest-side metrics from the project's agent (`get_metrics`), polled on a slower interval
than the host stats and only for VMs whose agent is connected.

Guests are untrusted (design decision 7): a reply is reduced to known fields of the
right types, numbers must be finite and in range, strings are cut short and lists are
capped, before anything reaches the API, a page or Prometheus. One slow or hostile guest
costs at most its timeout and one of a few concurrent slots; it never delays the host
stats collection, which runs in another task.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_LIST = 32
MAX_TEXT = 256
MAX_NUMBER = 1e18
CONCURRENCY = 4
TIMEOUT_SECONDS = 5.0


def _num(v: Any, hi: float = MAX_NUMBER) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    if not math.isfinite(f) or f < 0 or f > hi:
        return None
    return f


def _text(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    return "".join(c for c in v[:MAX_TEXT] if c.isprintable())


def _pick(src: Any, numbers: tuple[str, ...], texts: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(src, dict):
        return {}
    out: dict[str, Any] = {}
    for k in numbers:
        n = _num(src.get(k))
        if n is not None:
            out[k] = n
    for k in texts:
        t = _text(src.get(k))
        if t is not None:
            out[k] = t
    return out


def sanitize(reply: Any) -> dict[str, Any]:
    """The known parts of a `get_metrics` reply, validated; anything else is dropped."""
    if not isinstance(reply, dict):
        return {}
    out: dict[str, Any] = {}
    cpu = _num(reply.get("cpu_percent"), hi=100.0)
    if cpu is not None:
        out["cpu_percent"] = cpu
    load = reply.get("load_average")
    if isinstance(load, list) and len(load) == 3:
        values = [_num(v, hi=1e6) for v in load]
        if all(v is not None for v in values):
            out["load_average"] = values
    mem = _pick(reply.get("memory"), ("total_kb", "available_kb", "used_kb", "used_percent"))
    if mem:
        out["memory"] = mem
    swap = _pick(reply.get("swap"), ("total_kb", "free_kb", "used_kb"))
    if swap:
        out["swap"] = swap
    up = _num(reply.get("uptime_seconds"))
    if up is not None:
        out["uptime_seconds"] = up
    fs = reply.get("filesystems")
    if isinstance(fs, list):
        out["filesystems"] = [
            _pick(
                f,
                ("total_bytes", "used_bytes", "available_bytes", "used_percent"),
                ("mount_point", "device", "fstype"),
            )
            for f in fs[:MAX_LIST]
            if isinstance(f, dict)
        ]
    net = reply.get("network")
    if isinstance(net, list):
        out["network"] = [
            _pick(
                n,
                ("rx_bytes", "rx_packets", "rx_errors", "tx_bytes", "tx_packets", "tx_errors"),
                ("name",),
            )
            for n in net[:MAX_LIST]
            if isinstance(n, dict)
        ]
    return out


async def poll_guests(
    targets: list[tuple[str, str]],
    call: Callable[[str], Awaitable[Any]],
    store: dict[str, dict[str, Any]],
    per_call_seconds: float = TIMEOUT_SECONDS,
    concurrency: int = CONCURRENCY,
) -> int:
    """Call `get_metrics` for each (uuid, name) through `call(uuid)`; store sanitized
    replies by uuid (with `ts`). Failures drop that VM's guest figures (stale numbers
    would look current). Returns how many answered."""
    sem = asyncio.Semaphore(concurrency)
    answered = 0

    async def one(uuid: str, name: str) -> None:
        nonlocal answered
        async with sem:
            try:
                async with asyncio.timeout(per_call_seconds):
                    reply = await call(uuid)
            except Exception as e:  # a guest must never break the poller
                log.debug("guest metrics of %s failed: %s", name, e)
                store.pop(uuid, None)
                return
        store[uuid] = {**sanitize(reply), "ts": time.time()}
        answered += 1

    await asyncio.gather(*(one(u, n) for u, n in targets))
    return answered
