"""`kvm-manager serve`: run the API (and web UI) with uvicorn."""

from __future__ import annotations

import contextlib

import typer

from kvmmanager.core.config import get_settings
from kvmmanager.core.errors import InvalidInput
from kvmmanager.core.logs import logging_config
from kvmmanager.virt.preopen import AheadOpens


def serve(
    host: str | None = typer.Option(None, help="Listen address (default: settings.server.host)."),
    port: int | None = typer.Option(None, help="Listen port (default: settings.server.port)."),
) -> None:
    """Run the server in the foreground."""
    import uvicorn

    from kvmmanager.api.server import uvicorn_options
    from kvmmanager.services.manager import Manager

    # The whole server: the REST API plus the web UI on top of it.
    from kvmmanager.web.app import create_app

    settings = get_settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    manager = Manager(settings)
    # SQLite takes one instance: a second one is refused here (DatabaseInUse, one line
    # naming the file and its owner) before it migrates or listens. The claim is held
    # until the server ends; the app's own Manager shares it (db/sqlite_owner.py).
    manager.claim_database()
    # Migrate and create the first admin before listening, so the banner can say where
    # the password is (only its path is printed: stdout is the journal under systemd).
    manager.prepare_database()
    shown_host = settings.server.host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    url = settings.server.base_url or f"http://{shown_host}:{settings.server.port}"
    # The stored hosts start opening now, while the web app is built (their opens are
    # mostly C without the GIL; the app's build is Python): virt/preopen.py. Only URIs the
    # allow-list accepts, as the Manager's start checks them.
    uris: list[str] = []
    for _name, uri in manager.host_rows():
        with contextlib.suppress(InvalidInput):  # the Manager's start logs it, leaves it out
            uris.append(manager.hosts.check_uri(uri))
    ahead = AheadOpens()
    ahead.start(uris)
    pw_file = manager.users.initial_password_file()
    print(f"kvm-manager: serving on {url}", flush=True)
    if pw_file.exists():
        print(f"kvm-manager: the first admin password is in {pw_file}", flush=True)
    manager.engine.dispose()
    try:
        uvicorn.run(
            # Every route's request state is built before the server listens.
            create_app(settings, warm_routes=True, ahead=ahead),
            host=settings.server.host,
            port=settings.server.port,
            log_level=settings.log_level.lower(),
            # One line per record whatever guests put in a message (core/logs.py).
            log_config=logging_config(settings.log_level),
            # Header deadline and size, connection caps, keep-alive (api/server.py).
            **uvicorn_options(settings.server),
        )
    finally:
        manager.release_database()


def register(root: typer.Typer) -> None:
    root.command("serve")(serve)
