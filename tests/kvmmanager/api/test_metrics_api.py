"""Metrics over REST, SSE and Prometheus, on libvirt's test driver."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings

DEADLINE = 60.0
SCRAPE_TOKEN = "kvmm-t-met-scrape-token"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.metrics.interval_seconds = 0.1
    settings.metrics.prometheus_token = SCRAPE_TOKEN
    return settings


def wait_cycles(get: Callable[[str], Any], n: int = 2) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        r = get("/api/metrics/collectors")
        if r.status_code == 200 and any(c["cycles"] >= n for c in r.json()):
            return
        assert time.monotonic() < deadline, "no metrics collections"
        time.sleep(0.05)


def test_current_and_history(client: TestClient) -> None:
    wait_cycles(client.get, 3)
    host = client.get("/api/hosts/local/metrics").json()
    assert host["collector"]["errors"] == 0
    assert [v["name"] for v in host["vms"]] == ["test"]
    vm = client.get("/api/hosts/local/vms/test/metrics").json()
    assert vm["state"] == "running" and vm["totals"]["disk_rd_bytes"] == 0
    by_uuid = client.get(f"/api/hosts/local/vms/{vm['uuid']}/metrics").json()
    assert by_uuid["name"] == "test"
    hist = client.get("/api/hosts/local/vms/test/metrics/history", params={"last": 600}).json()
    series = hist["series"]
    assert set(series) == {"ts", *hist["fields"]}
    assert len(series["ts"]) >= 3 and all(len(v) == len(series["ts"]) for v in series.values())
    assert hist["until"] - hist["since"] == pytest.approx(600, abs=1)


@pytest.mark.parametrize(
    ("window", "seconds", "step"),
    [
        ("1h", 3600, None),
        ("6h", 21600, 300),
        ("24h", 86400, 300),
        ("7d", 604800, 3600),
        ("30d", 2592000, 3600),
    ],
)
def test_history_by_named_range(
    client: TestClient, window: str, seconds: int, step: int | None
) -> None:
    wait_cycles(client.get, 2)
    r = client.get("/api/hosts/local/vms/test/metrics/history", params={"range": window})
    assert r.status_code == 200, r.text
    hist = r.json()
    assert hist["until"] - hist["since"] == pytest.approx(seconds, abs=1)
    # 1 h is the collection interval itself; longer ranges are 5-minute or hourly means.
    assert hist["step"] == (step or client.app.state.manager.metrics.interval)  # type: ignore[attr-defined]
    assert all(len(v) == len(hist["series"]["ts"]) for v in hist["series"].values())


def test_viewer_reads_metrics(client: TestClient, client_as: Callable[[str], TestClient]) -> None:
    viewer = client_as("viewer")
    wait_cycles(viewer.get)
    assert viewer.get("/api/hosts/local/vms/test/metrics").status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/api/hosts/local/vms/kvmm-t-met-none/metrics", {}, 404, "vm"),
        ("/api/hosts/kvmm-t-met-none/metrics", {}, 404, "host"),
        ("/api/hosts/local/vms/test/metrics/history", {"since": 10, "until": 5}, 422, "since"),
        ("/api/hosts/local/vms/test/metrics/history", {"last": 60, "since": 1}, 422, "last"),
        ("/api/hosts/local/vms/test/metrics/history", {"since": 0, "until": 1e9}, 422, "since"),
        ("/api/hosts/local/vms/test/metrics/history", {"last": -5}, 422, None),
        ("/api/hosts/local/vms/test/metrics/history", {"since": "yesterday"}, 422, None),
        ("/api/hosts/local/vms/test/metrics/history", {"range": "2w"}, 422, "range"),
        ("/api/hosts/local/vms/test/metrics/history", {"range": "1h", "since": 1}, 422, "range"),
        ("/api/hosts/local/vms/test/metrics/history", {"range": "1h", "last": 60}, 422, "last"),
        ("/api/hosts/local/vms/test/metrics/history", {"last": 90 * 86400}, 422, "last"),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, path: str, params: dict[str, Any], status: int, field: str | None
) -> None:
    wait_cycles(client.get, 1)
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if field is not None:
        assert error["field"] == field
    else:
        assert error["code"]


def test_prometheus_needs_a_token_or_a_user(client: TestClient, app: Any) -> None:
    wait_cycles(client.get)
    anon = TestClient(app)
    r = anon.get("/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert anon.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scraped = anon.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'kvmm_host_up{host="local"} 1.0' in text
    assert 'kvmm_vm_active{host="local",vm="test"} 1.0' in text
    assert 'kvmm_host_vms{host="local",state="running"} 1.0' in text
    assert "kvmm_metrics_collections_total" in text
    # A user's own API token works too.
    assert client.get("/metrics").status_code == 200


def test_prometheus_token_disabled_when_empty(client: TestClient, app: Any) -> None:
    app.state.manager.settings.metrics.prometheus_token = ""
    anon = TestClient(app)
    assert anon.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_live_stream_sends_samples(live_server: Any) -> None:
    headers = {"Authorization": f"Bearer {live_server.token}"}
    url = f"{live_server.url}/api/hosts/local/vms/test/metrics"
    deadline = time.monotonic() + DEADLINE
    while httpx.get(url, headers=headers, timeout=DEADLINE).status_code != 200:
        assert time.monotonic() < deadline, "no first sample"
        time.sleep(0.05)
    samples: list[dict[str, Any]] = []
    with httpx.stream("GET", url + "/stream", headers=headers, timeout=DEADLINE) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "sample":
                samples.append(json.loads(line.split(":", 1)[1]))
                if len(samples) == 2:
                    break
    assert [s["name"] for s in samples] == ["test", "test"]
    assert samples[1]["ts"] > samples[0]["ts"]


def test_stream_of_unknown_vm_is_404(client: TestClient) -> None:
    wait_cycles(client.get, 1)
    r = client.get("/api/hosts/local/vms/kvmm-t-met-none/metrics/stream")
    assert r.status_code == 404
