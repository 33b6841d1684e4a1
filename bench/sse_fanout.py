"""Benchmark 3: a VM state change to connected SSE clients (GET /api/events), p50/p99.

The server (bench/server.py, own process, test driver) is asked to suspend or resume a
VM over REST; libvirt's lifecycle event goes through the inventory and the event bus to
every client's stream. Two latencies per client and change:
- end to end: from sending the REST request to the client reading the event;
- fan-out: from the server publishing the event (the event's own `ts`) to the client
  reading it (same machine, same clock).
Clients are raw asyncio sockets in this process (100 of them share one loop, so the last
one read also waits for this process to handle the 99 before it).

Then the slow-client check, on a server whose socket send buffers are pinned to 4 KiB (as
on slow links; Linux would otherwise buffer megabytes per stalled socket first): extra
clients that never read stay connected through a burst of changes; the healthy clients'
latency is measured after it. The bus's overflow path (bounded queue emptied, one
`resync` left) is measured directly: publish cost with overflowing subscribers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
from common import Row, median, ms, pct
from server import Server

from kvmmanager.virt.events import RESYNC, Event, EventBus

VM = "test"
TOGGLES = 40
BURST = 700
SLOW_CLIENTS = 5
SNDBUF = 4096


class Client:
    def __init__(self, srv: Server, kinds: list[str]) -> None:
        self.srv, self.kinds = srv, kinds
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.got: list[tuple[float, dict]] = []
        self.waiter: asyncio.Event = asyncio.Event()

    async def connect(self) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.srv.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        query = "&".join(f"kind={k}" for k in self.kinds)
        self.writer.write(
            f"GET /api/events?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.srv.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await self.writer.drain()
        status = await self.reader.readline()
        assert b" 200 " in status, status
        while (await self.reader.readline()).strip():
            pass

    async def pump(self) -> None:
        """Read events forever, noting when each arrived."""
        assert self.reader is not None
        event = ""
        while line := await self.reader.readline():
            text = line.decode().strip()
            if text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:") and event:
                self.got.append((time.time(), {"event": event, **json.loads(text[5:])}))
                self.waiter.set()

    async def until(self, pred, seconds: float = 30.0) -> tuple[float, dict]:
        deadline = time.monotonic() + seconds
        while True:
            for item in self.got:
                if pred(item[1]):
                    return item
            self.waiter.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("event never arrived")
            await asyncio.wait_for(self.waiter.wait(), left)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class StalledClient:
    """Subscribes to every event, then reads nothing (a plain socket: an asyncio stream
    would keep reading into memory behind our back)."""

    def __init__(self, srv: Server) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        self.sock.connect(("127.0.0.1", srv.port))
        self.sock.sendall(
            f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {srv.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )

    def close(self) -> None:
        self.sock.close()


async def toggles(
    http: httpx.AsyncClient, clients: list[Client], n: int, state: list[str]
) -> tuple[list[float], list[float]]:
    e2e: list[float] = []
    fan: list[float] = []
    for _ in range(n):
        action = "resume" if state[0] == "paused" else "suspend"
        want = "resumed" if action == "resume" else "suspended"
        for c in clients:
            c.got.clear()
        t0 = time.time()
        r = await http.post(f"/api/hosts/local/vms/{VM}/actions/{action}")
        r.raise_for_status()
        state[0] = "running" if action == "resume" else "paused"
        results = await asyncio.gather(
            *(c.until(lambda e, w=want: e["data"].get("event") == w) for c in clients)
        )
        for recv, ev in results:
            e2e.append(recv - t0)
            fan.append(recv - ev["ts"])
    return e2e, fan


async def measure(
    srv: Server, n_clients: int, slow: int = 0, n: int = TOGGLES, burst: int = BURST
) -> dict[str, float]:
    out: dict[str, float] = {}
    clients = [Client(srv, ["domain.lifecycle"]) for _ in range(n_clients)]
    for c in clients:
        await c.connect()
    stalled = [StalledClient(srv) for _ in range(slow)]
    pumps = [asyncio.create_task(c.pump()) for c in clients]
    state = ["running"]
    try:
        async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=60) as http:
            # Warm-up: also proves every subscription is live before timing starts.
            await toggles(http, clients, 2, state)
            e2e, fan = await toggles(http, clients, n, state)
            out |= {
                "e2e_p50": median(e2e),
                "e2e_p99": pct(e2e, 99),
                "fan_p50": median(fan),
                "fan_p99": pct(fan, 99),
            }
            if stalled:
                await toggles(http, clients, burst, state)
                e2e, fan = await toggles(http, clients, n, state)
                out |= {"slow_e2e_p50": median(e2e), "slow_e2e_p99": pct(e2e, 99)}

    finally:
        for t in pumps:
            t.cancel()
        for c in clients + stalled:
            c.close()
    return out


def run(
    workdir: Path,
    clients: int = 100,
    n: int = TOGGLES,
    burst: int = BURST,
    bus_events: int = 3000,
    bus_queue: int = 1000,
) -> list[Row]:
    rows: list[Row] = []
    with Server("test:///default", workdir, 1) as srv:
        one = asyncio.run(measure(srv, 1, n=n * 2))
        hundred = asyncio.run(measure(srv, clients, n=n))
    # Send buffers pinned small, as on slow links: otherwise Linux lets megabytes pile up
    # in a stalled client's socket before the server ever has to wait for it.
    with Server("test:///default", workdir, 1, sndbuf=SNDBUF) as srv:
        slow = asyncio.run(measure(srv, clients, slow=SLOW_CLIENTS, n=n, burst=burst))
    label = "3 events to SSE"
    rows += [
        Row(
            label,
            "1 client: REST change -> event read, p50 / p99",
            f"{ms(one['e2e_p50'])} / {ms(one['e2e_p99'])}",
        ),
        Row(
            label,
            "1 client: publish -> read (fan-out), p50 / p99",
            f"{ms(one['fan_p50'])} / {ms(one['fan_p99'])}",
        ),
        Row(
            label,
            f"{clients} clients: REST change -> event read, p50 / p99",
            f"{ms(hundred['e2e_p50'])} / {ms(hundred['e2e_p99'])}",
            "",
            "",
            "p99 < 200 ms",
        ),
        Row(
            label,
            f"{clients} clients: publish -> read (fan-out), p50 / p99",
            f"{ms(hundred['fan_p50'])} / {ms(hundred['fan_p99'])}",
        ),
        Row(
            label,
            f"{clients} clients + {SLOW_CLIENTS} that never read, after a burst: p50 / p99",
            f"{ms(slow['slow_e2e_p50'])} / {ms(slow['slow_e2e_p99'])}",
            f"without: {ms(slow['e2e_p50'])} / {ms(slow['e2e_p99'])}",
        ),
    ]
    return rows + bus_overflow(bus_events, healthy=clients, queue=bus_queue)


def bus_overflow(
    events: int = 3000, healthy: int = 100, stuck: int = 5, queue: int = 1000
) -> list[Row]:
    """The bus itself: publish cost per event to `healthy` drained subscribers plus
    `stuck` never-drained ones (bounded queues, 1,000 like the SSE route), and whether each
    stuck one holds a single `resync` once it overflowed."""

    async def go() -> tuple[list[float], list[float], int]:
        bus = EventBus()
        subs = [bus.subscribe(maxsize=queue) for _ in range(healthy)]

        def drain() -> None:
            for s in subs:
                while not s._queue.empty():
                    s._queue.get_nowait()

        def timed(n: int) -> list[float]:
            out = []
            for i in range(n):
                ev = Event("domain.updated", host="bench", subject=str(i), data={"state": "x"})
                t0 = time.perf_counter()
                bus.publish(ev)
                out.append(time.perf_counter() - t0)
                drain()
            return out

        base = timed(events)
        stuck_subs = [bus.subscribe(maxsize=queue) for _ in range(stuck)]
        with_stuck = timed(events)
        resynced = 0
        for s in stuck_subs:
            first = s._queue.get_nowait()
            resynced += first.kind == RESYNC and s.dropped > 0
        return base, with_stuck, resynced

    base, with_stuck, resynced = asyncio.run(go())
    label = "3 event bus"
    return [
        Row(
            label,
            f"publish to {healthy} subscribers + {stuck} overflowing ones, p50 / p99",
            f"{median(with_stuck) * 1e6:.0f} / {pct(with_stuck, 99) * 1e6:.0f} µs",
            f"without: {median(base) * 1e6:.0f} / {pct(base, 99) * 1e6:.0f} µs",
        ),
        Row(label, "overflowed subscribers holding one `resync`", f"{resynced} of {stuck}"),
    ]
