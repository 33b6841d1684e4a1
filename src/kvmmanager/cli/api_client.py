"""A small synchronous client of the REST API for the CLI.

Base URL: `--url`, else $KVMM_URL, else the URL saved by `kvm-manager login`, else
settings.server. Token: $KVMM_TOKEN, else the one saved by `kvm-manager login` in
~/.config/kvm-manager/credentials.json (0600). API errors come back as the matching
KvmmError subclass, so the CLI prints the server's message and its exit code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import typer

from kvmmanager.core import errors
from kvmmanager.core.config import get_settings

DEFAULT_TIMEOUT = 60.0


def _error_classes() -> dict[str, type[errors.KvmmError]]:
    found: dict[str, type[errors.KvmmError]] = {}
    stack: list[type[errors.KvmmError]] = [errors.KvmmError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


def credentials_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kvm-manager" / "credentials.json"


def load_credentials() -> dict[str, Any]:
    path = credentials_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise errors.InvalidInput(f"cannot read {path}: {e}", field="credentials") from None
    return data if isinstance(data, dict) else {}


def save_credentials(url: str, token: str, username: str, token_id: int | None = None) -> Path:
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "username": username, "id": token_id}, f)
    os.chmod(path, 0o600)
    return path


def default_url() -> str:
    server = get_settings().server
    if server.base_url:
        return server.base_url.rstrip("/")
    host = server.host if server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


def error_from_response(response: httpx.Response) -> errors.KvmmError:
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
        field = body.get("field")
    except (ValueError, KeyError, TypeError):
        code, message, field = "http_error", f"HTTP {response.status_code}", None
    cls = _error_classes().get(code)
    if cls is None:
        err = errors.KvmmError(message, field=field)
        err.code, err.status = code, response.status_code
        return err
    return cls(message, field=field)


class ApiClient:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        anonymous: bool = False,
    ) -> None:
        saved = load_credentials()
        self.url = (url or os.environ.get("KVMM_URL") or saved.get("url") or default_url()).rstrip(
            "/"
        )
        self.token = (
            None if anonymous else token or os.environ.get("KVMM_TOKEN") or saved.get("token")
        )
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    @property
    def http(self) -> httpx.Client:
        """The underlying httpx client (cookies persist across requests)."""
        return self._http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; the decoded JSON body (None when empty), or a KvmmError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise errors.HostUnavailable(
                f"cannot reach kvm-manager at {self.url}: {e}", field="url"
            ) from None
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (downloads); raises the API error before yielding."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as e:
            raise errors.HostUnavailable(
                f"cannot reach kvm-manager at {self.url}: {e}", field="url"
            ) from None


def client(ctx: typer.Context | None = None) -> ApiClient:
    """The client for a command, honouring the global `--url` option."""
    from kvmmanager.cli.output import state

    url = state(ctx).url if ctx is not None else None
    return ApiClient(url)
