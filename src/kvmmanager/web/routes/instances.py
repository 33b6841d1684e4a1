"""The dashboard's card of manager instances (admins): each instance sharing the database,
its address and version, how long ago it beat, and which one runs the singleton work.

The card re-renders on `instance.changed` (an instance started, stopped, took or lost the
lease, on any instance: the fleet-event relay carries them); between those, app.js moves
each row's heartbeat age on from `instance.heartbeat` events, so the page never polls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import AdminUser, ManagerDep
from kvmmanager.db.models import utcnow
from kvmmanager.services.fleet.instances import InstanceInfo
from kvmmanager.services.manager import Manager
from kvmmanager.web.templating import render

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class InstanceRow:
    info: InstanceInfo
    age_seconds: int  # since its last heartbeat, when the page was rendered


@dataclass(frozen=True)
class InstancesCard:
    rows: list[InstanceRow]
    # An instance whose last heartbeat is older is shown as not responding (the same
    # window as `alive` in GET /api/instances); app.js applies it as the age grows.
    stale_after_seconds: int


async def instances_card(manager: Manager) -> InstancesCard:
    infos = await asyncio.to_thread(manager.instances.list)
    now = utcnow()
    rows = [
        InstanceRow(info=i, age_seconds=max(0, int((now - i.last_seen).total_seconds())))
        for i in infos
    ]
    return InstancesCard(rows=rows, stale_after_seconds=int(manager.instances.stale_after_seconds))


@router.get("/dashboard/instances", name="web.dashboard_instances", response_class=HTMLResponse)
async def instances_fragment(
    request: Request, manager: ManagerDep, _admin: AdminUser
) -> HTMLResponse:
    return render(request, "_instances.html", instances=await instances_card(manager))
