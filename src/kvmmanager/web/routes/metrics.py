"""The VM page's Performance tab: a fragment with uPlot graphs of the VM's metrics.

The fragment carries only URLs and the VM's identity; `static/graphs.js` (loaded by the
page) draws the history from `GET /api/hosts/{host}/vms/{vm}/metrics/history` (a named
range per button) and, in the Live view, keeps the graphs current from the SSE stream
`.../metrics/stream`.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import ManagerDep
from kvmmanager.services.metrics.service import WINDOWS
from kvmmanager.web.templating import render

router = APIRouter(include_in_schema=False)

# (label, value of data-graph-range): "live" is the last 10 minutes kept current by the
# stream; the others are the history API's named ranges (`?range=`).
RANGES = (
    ("Live", "live"),
    ("1 h", "1h"),
    ("6 h", "6h"),
    ("24 h", "24h"),
    ("7 d", "7d"),
    ("30 d", "30d"),
)


@router.get("/vms/{host}/{vm}/performance", name="web.vm_performance", response_class=HTMLResponse)
def performance_tab(request: Request, host: str, vm: str, manager: ManagerDep) -> HTMLResponse:
    info = manager.vms.get(host, vm)
    # Ranges longer than the history kept (metrics.retention_days) get no button.
    available = {"live"} | {
        name for name, seconds in WINDOWS.items() if seconds <= manager.metrics.retention_seconds
    }
    api = f"/api/hosts/{quote(host, safe='')}/vms/{info.uuid}/metrics"
    return render(
        request,
        "vms/_performance.html",
        vm=info,
        history_url=f"{api}/history",
        stream_url=f"{api}/stream",
        current_url=api,
        interval=manager.metrics.interval,
        ranges=[(label, value) for label, value in RANGES if value in available],
    )
