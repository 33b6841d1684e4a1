"""The VM list page at 1,000 / 5,000 VMs in Debian's Chromium (issue 19 item 3).

The server is the real app (bench/server.py, own process) on a test-driver file of N
running domains; Chromium is /usr/bin/chromium driven by Playwright, logged in through
the login form. Per size:

- load: navigation start to DOMContentLoaded and to `load` (Navigation Timing), the
  HTML's size, and what the page fetched by itself afterwards (requests counted from
  Playwright, and the time until the page stayed quiet for `QUIET` seconds);
- one live update: a VM suspended through the REST API until its row shows `paused`
  (wall time), and the page's own main-thread cost of it (the Chrome DevTools Protocol's
  Performance metrics ScriptDuration + LayoutDuration + RecalcStyleDuration, delta);
- filter: the search box's input event to the list swapped and settled (htmx events),
  narrowing to one VM and back to all; the form's debounce (50 ms) is included.

The list shows pages of `PAGE_SIZE` rows (web/routes/vms.py): the live updates act on
VMs of the first page, the ones a user looking at the list sees.

    .venv/bin/python bench/browser_list.py --sizes 1000,5000
    .venv/bin/python bench/run.py --only browser
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Row, table  # noqa: E402
from server import WEB_USER, Server  # noqa: E402
from testdriver import PREFIX, uri, write_node  # noqa: E402

from kvmmanager.web.routes.vms import PAGE_SIZE  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# As tests/kvmmanager/web/conftest.py starts it: off the network, no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "kvmm-t-bench-web-password-19"
HOST = "local"
QUIET = 1.0
UPDATE_SECONDS = 60
COST_METRICS = ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


def _uuid(i: int) -> str:
    return str(uuid.UUID(int=0x6B766D6D_0000_4000_8000_000000000000 + i))


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def _cost(before: dict[str, float], after: dict[str, float]) -> float:
    return sum(after[k] - before[k] for k in COST_METRICS)


def _wait_quiet(requests: list[float], seconds: float = 300) -> float:
    """perf_counter when no request started for QUIET seconds (the page has settled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        last = requests[-1] if requests else 0.0
        if time.perf_counter() - last >= QUIET:
            return last
        time.sleep(0.1)
    raise RuntimeError("the page never settled")


FILTER_JS = """async (value) => {
  const input = document.querySelector("form.filters input[name=q]");
  const rows = document.getElementById("vm-rows");
  // The list's own swap (a row's refresh inside it bubbles the same event up).
  const settled = new Promise((resolve) => {
    const done = (e) => {
      if (e.target !== rows) return;
      rows.removeEventListener("htmx:afterSettle", done);
      resolve(performance.now());
    };
    rows.addEventListener("htmx:afterSettle", done);
  });
  const t0 = performance.now();
  input.value = value;
  input.dispatchEvent(new Event("input", {bubbles: true}));
  const t1 = await settled;
  return [t1 - t0, rows.querySelectorAll("tr[data-live-vm]").length];
}"""


# The page's own work for one row's live swap: htmx's beforeSwap to afterSettle of a VM
# row's answer (parse, swap, settle, the page's listeners), on the page's clock. Unlike
# the CDP metrics delta it counts nothing else the page did meanwhile.
SWAPS_JS = """() => {
  window.__rowSwaps = [];
  const began = new Map();
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    const row = e.detail.target && e.detail.target.matches("tr[data-live-vm]");
    if (row) began.set(e.detail.xhr, performance.now());
  });
  document.body.addEventListener("htmx:afterSettle", (e) => {
    const t = began.get(e.detail.xhr);
    if (t === undefined) return;
    began.delete(e.detail.xhr);
    window.__rowSwaps.push(performance.now() - t);
  });
}"""


def measure(srv: Server, browser: Any, n: int, updates: int = 5) -> list[Row]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=srv.url)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", WEB_USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    requests: list[float] = []
    kinds: dict[str, int] = {}

    def on_request(req: Any) -> None:
        requests.append(time.perf_counter())
        path = req.url.split("?", 1)[0]
        kind = "addresses" if path.endswith("/addresses") else path.rsplit("/", 1)[-1] or "/"
        kinds[kind] = kinds.get(kind, 0) + 1

    page.on("request", on_request)
    t0 = time.perf_counter()
    response = page.goto("/vms", wait_until="load", timeout=300_000)
    loaded = time.perf_counter() - t0
    assert response is not None
    html_bytes = len(response.body())
    nav = page.evaluate(
        "() => { const e = performance.getEntriesByType('navigation')[0];"
        " return [e.responseEnd, e.domContentLoadedEventEnd, e.loadEventEnd]; }"
    )
    rows = page.locator("#vm-rows tr[data-live-vm]").count()
    quiet_at = _wait_quiet(requests)
    settled = quiet_at - t0
    fetched = dict(kinds)
    out = [
        Row(
            f"browser /vms ({n} VMs)",
            f"HTML bytes; VM rows rendered (load {_load()})",
            f"{html_bytes / 1e6:.2f} MB; {rows} rows",
        ),
        Row(
            f"browser /vms ({n} VMs)",
            "navigation: response end / DOMContentLoaded / load",
            f"{nav[0]:.0f} / {nav[1]:.0f} / {nav[2]:.0f} ms",
            "",
            "",
            "<= 1 s to usable at 5,000 VMs",
        ),
        Row(
            f"browser /vms ({n} VMs)",
            "requests the page made by itself after the document, and when they stopped",
            f"{sum(fetched.values()) - 1} ({', '.join(f'{k}: {v}' for k, v in fetched.items())});"
            f" last one {settled:.1f} s after navigation start (goto->load {loaded:.1f} s)",
        ),
    ]
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.evaluate(SWAPS_JS)
    walls, costs = [], []
    missed = 0
    for k in range(updates):
        i = (k * 37) % min(n, PAGE_SIZE)
        row = page.locator(f'[data-live-vm="{HOST}/{_uuid(i)}"] [data-state]')
        name = f"{PREFIX}{i:05d}"
        for action, state in (("suspend", "paused"), ("resume", "running")):
            before = _metrics(cdp)
            t = time.perf_counter()
            r = httpx.post(
                f"{srv.url}/api/hosts/{HOST}/vms/{name}/actions/{action}",
                headers=srv.headers,
                timeout=60,
            )
            r.raise_for_status()
            try:
                row.filter(has_text=state).wait_for(timeout=UPDATE_SECONDS * 1000)
            except PlaywrightTimeout:
                # A figure too: the row did not show the change within the bound.
                missed += 1
                continue
            walls.append(time.perf_counter() - t)
            # The row's fetch and swap may still be settling: give it a moment.
            time.sleep(0.3)
            costs.append(_cost(before, _metrics(cdp)))
    out.append(
        Row(
            f"browser /vms ({n} VMs)",
            f"one live row update ({len(walls)}x suspend/resume via REST): REST -> row shows "
            "it, median; page main-thread cost (script + layout + style), median / max",
            (
                f"{statistics.median(walls) * 1000:.0f} ms; "
                f"{statistics.median(costs) * 1000:.1f} / {max(costs) * 1000:.1f} ms"
                if walls
                else "-"
            )
            + (
                f"; {missed} of {2 * updates} not shown within {UPDATE_SECONDS} s" if missed else ""
            ),
            "",
            "",
            "<= 16 ms per live update",
        )
    )
    swaps = page.evaluate("() => window.__rowSwaps")
    out.append(
        Row(
            f"browser /vms ({n} VMs)",
            "one VM row's live swap on the page (htmx beforeSwap -> afterSettle), "
            "median / max over the updates' row swaps",
            f"{statistics.median(swaps):.1f} / {max(swaps):.1f} ms ({len(swaps)} swaps)"
            if swaps
            else "-",
            "",
            "",
            "<= 16 ms per live update",
        )
    )
    _wait_quiet(requests)
    one, rows_one = page.evaluate(FILTER_JS, f"{PREFIX}{n // 2:05d}")
    back, rows_back = page.evaluate(FILTER_JS, "")
    out.append(
        Row(
            f"browser /vms ({n} VMs)",
            "filter: input -> list settled (50 ms debounce included), to 1 VM / back to all",
            f"{one:.0f} ms ({rows_one} row) / {back:.0f} ms ({rows_back} rows)",
            "",
            "",
            "<= 100 ms per keystroke",
        )
    )
    context.close()
    return out


def run(workdir: Path, sizes: tuple[int, ...] = (1000, 5000), updates: int = 5) -> list[Row]:

    rows: list[Row] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for n in sizes:
                node = write_node(workdir / f"browser-{n}.xml", n)
                with Server(uri(node), workdir, n, web_password=PASSWORD) as srv:
                    got = measure(srv, browser, n, updates)
                    # As they come: a later size may take long on a loaded machine.
                    for r in got:
                        print(f"{r.bench} | {r.measure} | {r.ours}", file=sys.stderr, flush=True)
                    rows += got
        finally:
            browser.close()
    return rows


def main() -> None:

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kvmm-bench-browser-"))
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
        rows = run(workdir, sizes, args.updates)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(table(rows, args.markdown))


if __name__ == "__main__":
    main()
