"""The FastAPI application: `create_app(settings) -> FastAPI`.

The lifespan builds and starts the Manager (`app.state.manager`). Every module in
`kvmmanager.api.routers` exposing `router` is included; authentication and auditing
apply to all of them without the router doing anything.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

import kvmmanager
from kvmmanager.api import errors, routers, transport
from kvmmanager.api.auditing import AuditMiddleware
from kvmmanager.api.body_limits import BodyLimitMiddleware
from kvmmanager.api.deps import authenticate
from kvmmanager.api.docs import SPEC_URL, install_docs
from kvmmanager.api.input_text import reject_unencodable_text
from kvmmanager.core.config import Settings, get_settings
from kvmmanager.services.manager import Manager


def router_modules() -> list[str]:
    return sorted(
        f"{routers.__name__}.{m.name}"
        for m in pkgutil.iter_modules(routers.__path__)
        if not m.name.startswith("_")
    )


def create_app(settings: Settings | None = None, *, manager: Manager | None = None) -> FastAPI:
    """Build the app. With `manager`, the caller owns its start/stop (tests)."""
    settings = settings or (manager.settings if manager else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manager is not None:
            app.state.manager = manager
            yield
            return
        own = Manager(settings)
        app.state.manager = own
        await own.start()
        try:
            yield
        finally:
            await own.stop()

    app = FastAPI(
        title="KVM Manager",
        version=kvmmanager.__version__,
        docs_url=None,  # our own page (api/docs.py): no CDN, no inline script
        redoc_url=None,
        openapi_url=SPEC_URL,
        lifespan=lifespan,
        # Who is calling first (an anonymous caller learns nothing), then the text check.
        dependencies=[Depends(authenticate), Depends(reject_unencodable_text)],
    )
    app.state.settings = settings
    errors.install(app)
    install_docs(app)
    app.add_middleware(AuditMiddleware)
    # Outside the audit: the audit's copy of a body never sees more than the limit.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.server.max_body_bytes,
        timeout_seconds=settings.server.body_timeout_seconds,
    )
    transport.install(app, settings.server)
    for name in router_modules():
        module = importlib.import_module(name)
        router = getattr(module, "router", None)
        if router is not None:
            app.include_router(router)
    return app
