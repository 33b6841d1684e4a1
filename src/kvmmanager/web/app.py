"""The whole server: the REST API plus the web UI, as `kvm-manager serve` runs it."""

from __future__ import annotations

from fastapi import FastAPI

from kvmmanager.api.app import create_app as create_api_app
from kvmmanager.core.config import Settings
from kvmmanager.services.manager import Manager
from kvmmanager.virt.preopen import AheadOpens
from kvmmanager.web import install


def create_app(
    settings: Settings | None = None,
    *,
    manager: Manager | None = None,
    warm_routes: bool = False,
    ahead: AheadOpens | None = None,
) -> FastAPI:
    """`warm_routes`, `ahead`: see `kvmmanager.api.app.create_app` (what `serve` passes)."""
    return install(create_api_app(settings, manager=manager, warm_routes=warm_routes, ahead=ahead))
