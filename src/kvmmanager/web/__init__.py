"""The web UI: server-rendered Jinja2 + htmx pages on top of the same services as the API.

`install(app)` adds the pages, the static files and the browser-facing security headers
to an app built by `kvmmanager.api.app.create_app`. The UI holds no business logic: every
page and form calls a service of the Manager, exactly as the REST routers do.
"""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import FastAPI

from kvmmanager.web import routes
from kvmmanager.web.assets import mount_assets
from kvmmanager.web.security import SecurityHeadersMiddleware, install_error_pages


def route_modules() -> list[str]:
    return sorted(
        f"{routes.__name__}.{m.name}"
        for m in pkgutil.iter_modules(routes.__path__)
        if not m.name.startswith("_")
    )


def install(app: FastAPI) -> FastAPI:
    mount_assets(app)
    for name in route_modules():
        app.include_router(importlib.import_module(name).router)
    install_error_pages(app)
    app.add_middleware(SecurityHeadersMiddleware)
    return app
