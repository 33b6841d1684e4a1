"""The server builds FastAPI's per-route request state before it listens (issue 19 item 4).

FastAPI 0.165 builds an included route's dependant and pydantic fields on the first request
that walks past it, so the first users of a freshly started server paid for it (~0.25-1.2 s
over the ~290 routes). `serve` builds the app with `warm_routes=True`: the lifespan builds
them all before the server reports ready. The only way to see that state is FastAPI's own
bookkeeping (`_IncludedRouter._effective_candidates_version`, None until built), read here.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import _IncludedRouter
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings
from kvmmanager.web.app import create_app


def _unbuilt(routes: list[object]) -> list[str]:
    """Included routers (by their first route's path) whose route state is not built."""
    out: list[str] = []
    for route in routes:
        if not isinstance(route, _IncludedRouter):
            continue
        if route._effective_candidates_version is None:
            first = route.original_router.routes[0] if route.original_router.routes else None
            out.append(str(getattr(first, "path", route.include_context.prefix)))
        else:
            out += _unbuilt(list(route._effective_candidates))
    return out


def _included(app: FastAPI) -> int:
    return sum(1 for r in app.routes if isinstance(r, _IncludedRouter))


def test_the_served_app_builds_every_route_before_its_first_request(settings: Settings) -> None:
    app = create_app(settings, warm_routes=True)
    assert _included(app) > 50  # every REST router and web page module
    with TestClient(app):
        # Started (the lifespan ran), no request made yet.
        assert _unbuilt(list(app.routes)) == []
        assert app.state.route_state_built > 250


def test_without_warming_the_first_request_would_build_them(settings: Settings) -> None:
    """What `warm_routes` is for: left lazy, a started app has built none of them."""
    app = create_app(settings)
    with TestClient(app):
        unbuilt = _unbuilt(list(app.routes))
        assert len(unbuilt) == _included(app)
