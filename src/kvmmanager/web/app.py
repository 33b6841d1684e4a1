"""The whole server: the REST API plus the web UI, as `kvm-manager serve` runs it."""

from __future__ import annotations

from fastapi import FastAPI

from kvmmanager.api.app import create_app as create_api_app
from kvmmanager.core.config import Settings
from kvmmanager.services.manager import Manager
from kvmmanager.web import install


def create_app(
    settings: Settings | None = None,
    *,
    manager: Manager | None = None,
    warm_routes: bool = False,
) -> FastAPI:
    """`warm_routes`: see `kvmmanager.api.app.create_app` (`serve` turns it on)."""
    return install(create_api_app(settings, manager=manager, warm_routes=warm_routes))
