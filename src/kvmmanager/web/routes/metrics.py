"""The VM page's Performance tab: a fragment with uPlot graphs of the VM's metrics.

The fragment carries only URLs and the VM's identity; `static/graphs.js` (loaded by the
page) draws the history from `GET /api/hosts/{host}/vms/{vm}/metrics/history` and keeps
the graphs live from the SSE stream `.../metrics/stream`.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import get_manager
from kvmmanager.services.manager import Manager
from kvmmanager.web.templating import render

router = APIRouter(include_in_schema=False)

RANGES = (("10 min", 600), ("1 h", 3600), ("6 h", 6 * 3600), ("24 h", 86400))


@router.get("/vms/{host}/{vm}/performance", name="web.vm_performance", response_class=HTMLResponse)
def performance_tab(
    request: Request, host: str, vm: str, manager: Manager = Depends(get_manager)
) -> HTMLResponse:
    info = manager.vms.get(host, vm)
    api = f"/api/hosts/{quote(host, safe='')}/vms/{info.uuid}/metrics"
    return render(
        request,
        "vms/_performance.html",
        vm=info,
        history_url=f"{api}/history",
        stream_url=f"{api}/stream",
        current_url=api,
        interval=manager.metrics.interval,
        ranges=RANGES,
    )
