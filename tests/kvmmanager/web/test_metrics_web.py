"""The Performance tab: the fragment, and its graphs drawn live in a real browser."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from kvmmanager.core.config import Settings

DEADLINE = 60.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.metrics.interval_seconds = 0.2
    return settings


def test_fragment_carries_the_vm_urls(web_as: Callable[[str], TestClient]) -> None:
    viewer = web_as("viewer")
    r = viewer.get("/vms/local/test/performance")
    assert r.status_code == 200
    uuid = viewer.app.state.manager.inventory.domain("local", "test").uuid  # type: ignore[attr-defined]
    assert f'data-history-url="/api/hosts/local/vms/{uuid}/metrics/history"' in r.text
    assert f'data-stream-url="/api/hosts/local/vms/{uuid}/metrics/stream"' in r.text
    assert 'data-graph="cpu"' in r.text and 'data-graph-range="86400"' in r.text
    assert viewer.get("/vms/local/kvmm-t-met-none/performance").status_code == 404


@pytest.mark.browser
def test_graphs_draw_and_go_live(browser_login: Callable[..., Any], live_server: Any) -> None:
    svc = live_server.manager.metrics
    deadline = time.monotonic() + DEADLINE
    while not ("local" in svc.hosts() and svc.host("local").cycles >= 3):
        assert time.monotonic() < deadline, "no collections"
        time.sleep(0.05)
    page = browser_login("viewer")
    # As the VM page will: the fragment, then uPlot and graphs.js from this server.
    page.goto("/vms/local/test/performance")
    page.add_style_tag(url="/vendor/uplot/uPlot.min.css")
    page.add_script_tag(url="/vendor/uplot/uPlot.iife.min.js")
    page.add_script_tag(url="/static/graphs.js")
    expect(page.locator("[data-graph] .uplot")).to_have_count(5, timeout=DEADLINE * 1000)
    expect(page.locator("[data-graph-status]")).to_have_text("live", timeout=DEADLINE * 1000)
    points = page.evaluate("() => document.querySelectorAll('[data-graph] canvas').length")
    assert points == 5
    if shots := os.environ.get("KVMM_SCREENSHOTS"):
        page.screenshot(path=str(Path(shots) / "performance.png"), full_page=True)
    page.click("[data-graph-range='86400']")
    expect(page.locator("[data-graph-range='86400']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-graph-status]")).to_have_text("every 300 s", timeout=DEADLINE * 1000)
