"""The REST API of a browser test's live server, as its admin token."""

from __future__ import annotations

from typing import Any

import httpx


def api_client(live_server: Any) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    )
