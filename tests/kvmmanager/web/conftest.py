"""Fixtures for the web UI: logged-in TestClients per role, and a real Chromium.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright; Playwright's own browser
download does not work on these machines. The launch flags keep it off the network.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings

PASSWORD = "kvmm-t-web-password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def web_app(settings: Settings) -> FastAPI:
    from kvmmanager.web.app import create_app

    return create_app(settings)


@pytest.fixture
def web_as(web_app: FastAPI) -> Iterator[Callable[[str], TestClient]]:
    """`web_as("viewer")` -> a TestClient logged in through the login form as a new user
    with that role; `client.csrf` holds the page's CSRF token for writes."""
    # One client runs the app's lifespan (the Manager); the others share that app.
    started = TestClient(web_app)
    started.__enter__()
    clients: list[TestClient] = [started]
    counter = iter(range(1000))

    def make(role: str) -> TestClient:
        c = TestClient(web_app)
        clients.append(c)
        username = f"kvmm-t-web-{role}-{next(counter)}"
        web_app.state.manager.users.create(username, PASSWORD, role)
        r = c.post("/login", data={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        c.csrf = re.search(r'data-csrf="([^"]+)"', r.text).group(1)  # type: ignore[attr-defined]
        c.username = username  # type: ignore[attr-defined]
        return c

    yield make
    for c in clients[1:]:
        c.close()
    started.__exit__(None, None, None)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # Per module, not per session: Playwright's sync API keeps an asyncio loop running on
    # the main thread while it lives, which later async tests would trip over.
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup --dev installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_login(chromium: Any, live_server: Any) -> Iterator[Callable[..., Any]]:
    """`browser_login(role)` -> a Playwright page logged in as a new user of that role on
    the live server (1280x800 unless `viewport` is given)."""
    contexts: list[Any] = []
    counter = iter(range(1000))

    def login(
        role: str = "admin", viewport: dict[str, int] | None = None, bypass_csp: bool = False
    ) -> Any:
        # bypass_csp: only for a test that injects axe-core (the pages' scripts run under
        # the same policy either way).
        username = f"kvmm-t-web-{role}-{next(counter)}"
        live_server.manager.users.create(username, PASSWORD, role)
        context = chromium.new_context(
            viewport=viewport or {"width": 1280, "height": 800},
            base_url=live_server.url,
            bypass_csp=bypass_csp,
        )
        contexts.append(context)
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/$"))
        page.username = username
        return page

    yield login
    for context in contexts:
        context.close()
