"""The FastAPI application: `create_app(settings) -> FastAPI`.

The lifespan builds and starts the Manager (`app.state.manager`). Every module in
`kvmmanager.api.routers` exposing `router` is included; authentication and auditing
apply to all of them without the router doing anything.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.routing import iter_route_contexts

import kvmmanager
from kvmmanager.api import errors, routers, transport
from kvmmanager.api.auditing import AuditMiddleware
from kvmmanager.api.body_limits import BodyLimitMiddleware
from kvmmanager.api.deps import authenticate
from kvmmanager.api.docs import SPEC_URL, install_docs
from kvmmanager.api.input_text import reject_unencodable_text
from kvmmanager.core.config import Settings, get_settings
from kvmmanager.services.manager import Manager
from kvmmanager.virt.preopen import AheadOpens


def router_modules() -> list[str]:
    return sorted(
        f"{routers.__name__}.{m.name}"
        for m in pkgutil.iter_modules(routers.__path__)
        if not m.name.startswith("_")
    )


def build_route_state(app: FastAPI) -> int:
    """Build FastAPI's per-route request state for every included route now; returns how
    many routes it covers.

    FastAPI (0.165) builds each included route's dependant and pydantic fields lazily, on
    the first request that walks past the route (`_IncludedRouter.effective_candidates`),
    so the first users of a new server paid ~0.25-1.2 s for the ~290 routes. Walking every
    route context builds them all (idempotent, under FastAPI's own lock)."""
    return sum(1 for _ in iter_route_contexts(app.routes))


def create_app(
    settings: Settings | None = None,
    *,
    manager: Manager | None = None,
    warm_routes: bool = False,
    ahead: AheadOpens | None = None,
) -> FastAPI:
    """Build the app. With `manager`, the caller owns its start/stop (tests).

    `warm_routes` (what `serve` asks for): the lifespan builds every route's request
    state before the server listens, so no request pays it. Tests leave it off: most
    build an app for a few requests, which then build only the routes they walk past.
    `ahead`: the hosts' first connections, begun before the app was built (`serve`)."""
    settings = settings or (manager.settings if manager else get_settings())

    async def warm(app: FastAPI) -> None:
        if warm_routes:
            # In a thread: the Manager's loop keeps serving its hosts' opens meanwhile.
            app.state.route_state_built = await asyncio.to_thread(build_route_state, app)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manager is not None:
            app.state.manager = manager
            await warm(app)
            yield
            return
        own = Manager(settings, ahead=ahead)
        app.state.manager = own
        # The Manager first: its hosts start opening (libvirt's open runs in C, without
        # the GIL) while the routes are built.
        await own.start()
        await warm(app)
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
