"""App-wide: a request whose parsed body, query or path holds unencodable text is a 422.

One check for every route instead of one per field: FastAPI has already parsed the JSON
or form body (and cached it on the request) by the time dependencies run, so walking it
here costs no second parse. The 422 names the offending field as a dotted path
(`tags.1`, `description`), like pydantic's own errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.requests import HTTPConnection, Request

from kvmmanager.core.errors import InvalidInput
from kvmmanager.core.text import first_unencodable


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, text) for every string in a parsed JSON value, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            yield sub, str(key)
            yield from _strings(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}.{i}" if path else str(i))


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _parsed_body(request: Request) -> Any:
    """The body FastAPI parsed for this route (cached on the request), else None: a
    route without a body parameter, or one that streams its body, is not read here."""
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return None
    content_type = request.headers.get("content-type", "")
    if _is_json(content_type):
        body = await request.body()
        return await request.json() if body else None
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {k: v for k, v in form.multi_items() if isinstance(v, str)}
    return None


async def reject_unencodable_text(conn: HTTPConnection) -> None:
    sources: list[tuple[str, Any]] = [
        ("", dict(conn.path_params)),
        ("", dict(conn.query_params.multi_items())),
    ]
    if isinstance(conn, Request):
        sources.append(("", await _parsed_body(conn)))
    for root, value in sources:
        for field, text in _strings(value, root):
            problem = first_unencodable(text)
            if problem is not None:
                raise InvalidInput(f"{field}: contains {problem}", field=field or None)
