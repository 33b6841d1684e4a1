"""The Performance tab: the fragment, and its graphs drawn live in a real browser."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from kvmmanager.core.config import Settings
from kvmmanager.services.metrics import store as metrics_store
from kvmmanager.services.metrics.rates import FIELDS

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
    assert 'data-graph="cpu"' in r.text
    assert viewer.get("/vms/local/kvmm-t-met-none/performance").status_code == 404


def test_range_buttons_live_to_30_days(web_as: Callable[[str], TestClient]) -> None:
    html = web_as("viewer").get("/vms/local/test/performance").text
    buttons = re.findall(r'<button type="button" data-graph-range="([^"]+)"([^>]*)>([^<]+)<', html)
    assert [(value, label) for value, _, label in buttons] == [
        ("live", "Live"),
        ("1h", "1 h"),
        ("6h", "6 h"),
        ("24h", "24 h"),
        ("7d", "7 d"),
        ("30d", "30 d"),
    ]
    # One pressed (Live), the others say they are not: a toggle group for screen readers.
    pressed = [value for value, attrs, _ in buttons if 'aria-pressed="true"' in attrs]
    assert pressed == ["live"]
    assert all("aria-pressed=" in attrs for _, attrs, _ in buttons)


def test_no_button_for_ranges_beyond_the_retention(web_as: Callable[[str], TestClient]) -> None:
    viewer = web_as("viewer")
    # As `metrics.retention_days = 7` would have set it when the manager started.
    viewer.app.state.manager.metrics.retention_seconds = 7 * 86400  # type: ignore[attr-defined]
    html = viewer.get("/vms/local/test/performance").text
    assert 'data-graph-range="7d"' in html and 'data-graph-range="30d"' not in html


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
    page.click("[data-graph-range='24h']")
    expect(page.locator("[data-graph-range='24h']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-graph-range='live']")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("[data-graph-status]")).to_have_text(
        re.compile("5-minute means|no data in this range yet"), timeout=DEADLINE * 1000
    )
    # Ten days ago, as an earlier run of the manager left it: the 30 d view draws it.
    uuid = live_server.manager.inventory.domain("local", "test").uuid
    old = (time.time() // 3600 - 240) * 3600
    metrics_store.save_bucket(
        live_server.manager.db, "local", old, 3600, {uuid: [55.0] * len(FIELDS)}
    )
    page.click("[data-graph-range='30d']")
    expect(page.locator("[data-graph-range='30d']")).to_have_attribute("aria-pressed", "true")
    status = page.locator("[data-graph-status]")
    expect(status).to_have_text("hourly means", timeout=DEADLINE * 1000)
    expect(page.locator("[data-graph] .uplot")).to_have_count(5)


# Pixels of each graph's canvas in its series' colours (graphs.js COLORS): the lines a
# person sees, per graph name.
DRAWN = """() => {
    const colours = [[0x2f, 0x7e, 0xd8], [0xd3, 0x54, 0x00]];
    const out = {};
    for (const box of document.querySelectorAll('[data-graph]')) {
        const c = box.querySelector('canvas');
        let n = 0;
        if (c && c.width && c.height) {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < d.length; i += 4)
                if (colours.some(([r, g, b]) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - g)
                        + Math.abs(d[i + 2] - b) < 40 && d[i + 3] > 200)) n++;
        }
        out[box.dataset.graph] = n;
    }
    return out;
}"""


@pytest.mark.browser
def test_performance_tab_of_the_vm_page_draws(
    browser_login: Callable[..., Any], live_server: Any
) -> None:
    """The tab as a person opens it (the VM page, then Performance): the graphs draw
    their lines from the first samples, and the range buttons switch what they show."""
    from tests.kvmmanager.web.shots import shot

    svc = live_server.manager.metrics
    deadline = time.monotonic() + DEADLINE
    while not ("local" in svc.hosts() and svc.host("local").cycles >= 3):
        assert time.monotonic() < deadline, "no collections"
        time.sleep(0.05)
    page = browser_login("viewer")
    page.goto("/vms/local/test")
    page.click("nav.tabs a[data-tab=performance]")
    expect(page.locator("[data-graph] .uplot")).to_have_count(5, timeout=DEADLINE * 1000)
    expect(page.locator("[data-graph-status]")).to_have_text("live", timeout=DEADLINE * 1000)
    # The test driver reports no CPU time or memory use (those graphs stay empty here;
    # tests/kvmmanager/web/test_console_browser.py draws them for a real guest).
    page.wait_for_function(
        f"() => {{ const n = ({DRAWN})(); return n.disk > 20 && n.iops > 20 && n.net > 20; }}",
        timeout=DEADLINE * 1000,
    )
    shot(page, "vm-performance-live")
    page.click("[data-graph-range='1h']")
    expect(page.locator("[data-graph-range='1h']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-graph-status]")).to_have_text(
        re.compile(r"every .* s|no data in this range yet"), timeout=DEADLINE * 1000
    )
    expect(page.locator("[data-graph] .uplot")).to_have_count(5)
    shot(page, "vm-performance-1h")


# Ink in a graph canvas's first three pixel columns: a y-axis label wider than the room
# its axis has is cut at the canvas's left edge (the column there holds nothing else).
LEFT_EDGE_INK = """(name) => {
    const c = document.querySelector(`[data-graph="${name}"] canvas`);
    const d = c.getContext('2d').getImageData(0, 0, 3, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
}"""


@pytest.mark.browser
def test_memory_axis_labels_are_not_cut_off(
    browser_login: Callable[..., Any], live_server: Any
) -> None:
    """A VM using about 1 GiB: the Memory graph's y-axis labels ("953.7 MiB") are drawn
    whole, inside the canvas, like the other graphs' labels."""
    from tests.kvmmanager.web.shots import shot

    manager = live_server.manager
    uuid = manager.inventory.domain("local", "test").uuid
    sample = [0.0] * len(FIELDS)
    sample[FIELDS.index("mem_bytes")] = 1000 * 2**20
    sample[FIELDS.index("net_rx_bps")] = 123456789.0
    hour = time.time() // 3600 * 3600
    for hours_ago in (30, 29, 28):
        metrics_store.save_bucket(
            manager.db, "local", hour - hours_ago * 3600, 3600, {uuid: sample}
        )
    page = browser_login("viewer")
    page.goto("/vms/local/test#performance")
    page.click("[data-graph-range='7d']")
    expect(page.locator("[data-graph-status]")).to_have_text(
        "hourly means", timeout=DEADLINE * 1000
    )
    expect(page.locator("[data-graph=mem] .uplot")).to_have_count(1)
    shot(page, "vm-performance-memory-axis")
    for graph in ("mem", "net"):
        assert page.evaluate(LEFT_EDGE_INK, graph) == 0, f"{graph}: a y-axis label is cut off"


# Each graph's legend as a person reads it away from the graph: label -> value.
LEGENDS = """() => {
    const out = {};
    for (const box of document.querySelectorAll('[data-graph]')) {
        out[box.dataset.graph] = Array.from(box.querySelectorAll('.u-legend .u-series')).map(
            (s) => [s.querySelector('.u-label')?.innerText || '',
                    s.querySelector('.u-value')?.innerText || '']);
    }
    return out;
}"""
UNIT = {
    "disk": re.compile(r"^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)/s$"),
    "net": re.compile(r"^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)/s$"),
    "iops": re.compile(r"^\d+(\.\d)? ops/s$"),
}


@pytest.mark.browser
def test_graph_legends_show_the_newest_values_with_their_units(
    browser_login: Callable[..., Any], live_server: Any
) -> None:
    """Without hovering, each graph's legend shows the newest sample's time and values,
    each value with its unit (a rate per second says "/s"): it read "--" and a dash until
    the cursor was on the graph, and disk and network rates were in plain bytes."""
    from tests.kvmmanager.web.shots import shot

    svc = live_server.manager.metrics
    deadline = time.monotonic() + DEADLINE
    while not ("local" in svc.hosts() and svc.host("local").cycles >= 3):
        assert time.monotonic() < deadline, "no collections"
        time.sleep(0.05)
    page = browser_login("viewer")
    page.goto("/vms/local/test#performance")
    expect(page.locator("[data-graph-status]")).to_have_text("live", timeout=DEADLINE * 1000)
    page.wait_for_function(
        f"() => {{ const n = ({DRAWN})(); return n.disk > 20 && n.iops > 20 && n.net > 20; }}",
        timeout=DEADLINE * 1000,
    )
    page.mouse.move(0, 0)  # the cursor away from every graph
    shot(page, "vm-performance-legends")
    legends = page.evaluate(LEGENDS)
    for graph, unit in UNIT.items():
        (time_label, when), *values = legends[graph]
        assert time_label.startswith("Time") and re.search(r"\d", when), (graph, when)
        assert values, graph
        for label, value in values:
            assert unit.match(value), (graph, label, value)
