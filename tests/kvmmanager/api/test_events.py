"""GET /api/events streams bus events as SSE, per client, with resync on overflow."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from kvmmanager.api.routers import events as events_router
from kvmmanager.virt.events import Event

DEADLINE = 60


def publish(live_server: Any, event: Event) -> None:
    m = live_server.manager
    m.loop.call_soon_threadsafe(m.bus.publish, event)


def read_events(response: httpx.Response, until_kind: str) -> list[dict[str, Any]]:
    got, current = [], {}
    for line in response.iter_lines():
        if line.startswith("event:"):
            current["event"] = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            current["data"] = json.loads(line.split(":", 1)[1])
        elif line == "" and current:
            got.append(current)
            if current.get("event") == until_kind:
                return got
            current = {}
    return got


def wait_subscribers(live_server: Any, count: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while live_server.manager.bus.subscriber_count < count:
        assert time.monotonic() < deadline, "SSE client never subscribed"
        time.sleep(0.02)


def test_events_need_auth(live_server: Any) -> None:
    r = httpx.get(f"{live_server.url}/api/events", timeout=DEADLINE)
    assert r.status_code == 401


def test_stream_delivers_filtered_events(live_server: Any) -> None:
    headers = {"Authorization": f"Bearer {live_server.token}"}
    base = live_server.manager.bus.subscriber_count
    with httpx.stream(
        "GET",
        f"{live_server.url}/api/events",
        params={"kind": ["kvmm-t-plat.", "stop"]},
        headers=headers,
        timeout=DEADLINE,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        wait_subscribers(live_server, base + 1)
        publish(live_server, Event("domain.updated", host="local", subject="ignored"))
        publish(live_server, Event("kvmm-t-plat.a", host="local", subject="s1", data={"n": 1}))
        publish(live_server, Event("stop", host="local"))
        got = read_events(r, "stop")
    assert [g["event"] for g in got] == ["kvmm-t-plat.a", "stop"]
    assert got[0]["data"]["data"] == {"n": 1} and got[0]["data"]["subject"] == "s1"


def test_slow_client_gets_resync(live_server: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(events_router, "QUEUE_SIZE", 3)
    headers = {"Authorization": f"Bearer {live_server.token}"}
    base = live_server.manager.bus.subscriber_count
    with httpx.stream(
        "GET", f"{live_server.url}/api/events", headers=headers, timeout=DEADLINE
    ) as r:
        wait_subscribers(live_server, base + 1)
        m = live_server.manager

        def burst() -> None:
            # In one loop iteration, so the stream cannot drain between publishes.
            for i in range(10):
                m.bus.publish(Event("kvmm-t-plat.flood", host="local", data={"i": i}))

        m.loop.call_soon_threadsafe(burst)
        got = read_events(r, "resync")
    assert got[-1]["event"] == "resync"


def _ids(response: httpx.Response, until_kind: str) -> list[tuple[str, str | None, Any]]:
    """(event, id, data) of each event up to `until_kind`."""
    got: list[tuple[str, str | None, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(("event:", "id:", "data:")):
            key, value = line.split(":", 1)
            current[key] = value.strip()
        elif line == "" and current:
            data = json.loads(current["data"]) if "data" in current else None
            got.append((current.get("event", ""), current.get("id"), data))
            if current.get("event") == until_kind:
                return got
            current = {}
    return got


def test_reconnect_with_last_event_id_replays_what_was_missed_per_user(
    live_server: Any,
) -> None:
    """Issue 17 item 18: events had ids but a reconnect got nothing it missed. The replay
    goes through the caller's filter: another user's job events are not replayed to it."""
    m = live_server.manager
    operator = m.users.create("kvmm-t-sse-op", "kvmm-t-sse-password-1", "operator")
    _, op_token = m.users.create_token(operator.username, "kvmm-t-sse")
    url = f"{live_server.url}/api/events"
    base = m.bus.subscriber_count
    op = {"Authorization": f"Bearer {op_token}"}
    with httpx.stream("GET", url, headers=op, timeout=DEADLINE) as r:
        wait_subscribers(live_server, base + 1)
        publish(live_server, Event("kvmm-t-sse.first", host="local"))
        [(_, last_id, _)] = _ids(r, "kvmm-t-sse.first")
    assert last_id is not None

    # Missed while disconnected: one for everyone, one job of the admin's, then a marker.
    publish(live_server, Event("kvmm-t-sse.missed", host="local", data={"n": 2}))
    publish(live_server, Event("job.progress", host="local", data={"created_by": "admin"}))
    publish(live_server, Event("kvmm-t-sse.last", host="local"))
    # (call_soon_threadsafe keeps their order: published before the reconnect subscribes.)

    with httpx.stream("GET", url, headers={**op, "Last-Event-ID": last_id}, timeout=DEADLINE) as r:
        got = _ids(r, "kvmm-t-sse.last")
    assert [g[0] for g in got] == ["kvmm-t-sse.missed", "kvmm-t-sse.last"]
    assert got[0][2]["data"] == {"n": 2} and int(got[0][1]) > int(last_id)

    # An id the ring no longer covers (or from another process): one resync, no id.
    with httpx.stream(
        "GET", url, headers={**op, "Last-Event-ID": "99999999999"}, timeout=DEADLINE
    ) as r:
        [(kind, rid, data)] = _ids(r, "resync")
    assert (kind, rid, data["data"]) == ("resync", None, {"reason": "replay_gap"})
