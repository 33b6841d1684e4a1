"""`kvm-manager agent ...`: talk to the guest agent of a VM through the manager's REST API.

`exec` streams the command's stdout/stderr and exits with the guest's exit code (exact
to a pipe or file; on a terminal its control characters are shown as escapes unless
`--raw`, so a guest cannot drive the user's terminal by default); `cp`
copies files of any size either way (VM:/path on one side) in verified chunks, with a
progress bar and `--resume`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from kvmmanager.cli.api_client import ApiClient, client
from kvmmanager.cli.helpers import HOST_OPTION, api_get, api_post, progress
from kvmmanager.cli.output import emit, info, wants_json, write_output
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import GuestError, InvalidInput
from kvmmanager.core.sanitize import inert
from kvmmanager_agent import protocol

NAME = "agent"
app = typer.Typer(
    help="The guest agent: facts, exec, file copy, power, freeze.", no_args_is_help=True
)

IFACE_COLUMNS = ["name", "mac_address", "ipv4_addresses", "ipv6_addresses", "state", "mtu"]
FS_COLUMNS = ["mount_point", "device", "fs_type", "total_bytes", "used_bytes", "used_percent"]
PROC_COLUMNS = ["pid", "user", "name", "state", "rss_kb", "cmdline"]


def _base(host: str, vm: str) -> str:
    return f"/api/hosts/{q(host)}/vms/{q(vm)}/agent"


def _get(ctx: typer.Context, host: str, vm: str, path: str, **kw: Any) -> Any:
    return api_get(ctx, f"{_base(host, vm)}/{path}", **kw)


def _post(ctx: typer.Context, host: str, vm: str, path: str, body: Any = None) -> Any:
    return api_post(ctx, f"{_base(host, vm)}/{path}", body)


def _shows(
    name: str, doc: str, path: str, *, post: bool = False, columns: list[str] | None = None
) -> None:
    """A command `NAME VM [--host]` that asks the agent route `path` and prints the answer."""

    def command(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
        emit(ctx, (_post if post else _get)(ctx, host, vm, path), columns)

    command.__doc__ = doc
    app.command(name)(command)


_shows(
    "status",
    "Agent status of the VM (absent, connecting, connected, unresponsive) and qemu-ga's.",
    "status",
)
_shows("ping", "Ping the guest agent (ours, else qemu-guest-agent).", "ping")


@app.command("info")
def guest_info(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Guest facts (OS, addresses, filesystems, users) from whichever agent answers."""
    data = _get(ctx, host, vm, "info")
    if wants_json(ctx):
        emit(ctx, data)
        return
    flat = {k: v for k, v in data.items() if k not in ("interfaces", "filesystems", "users")}
    emit(ctx, flat, title="guest")
    emit(ctx, data["interfaces"], IFACE_COLUMNS, title="interfaces")
    emit(ctx, data["filesystems"], FS_COLUMNS, title="filesystems")


def _fact(name: str, what: str, key: str | None = None, columns: list[str] | None = None) -> None:
    def command(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
        data = _get(ctx, host, vm, what)
        emit(ctx, data[key] if key and not wants_json(ctx) else data, columns)

    command.__doc__ = f"The guest's {what} ({protocol.METHODS[_FACTS[what]].description})"
    app.command(name)(command)


_FACTS = {
    "system": "get_system_info",
    "network": "get_network_info",
    "disks": "get_disk_usage",
    "metrics": "get_metrics",
    "users": "get_users",
    "time": "get_time",
}
_fact("system", "system")
_fact("network", "network", "interfaces", IFACE_COLUMNS)
_fact("disks", "disks", "filesystems", FS_COLUMNS)
_fact("metrics", "metrics")
_fact("users", "users", "users")
_fact("time", "time")


@app.command("processes")
def processes(
    ctx: typer.Context, vm: str, limit: int = typer.Option(30, "--limit"), host: str = HOST_OPTION
) -> None:
    """Guest processes, largest memory first."""
    data = _get(ctx, host, vm, "processes", params={"limit": limit})
    emit(ctx, data if wants_json(ctx) else data["processes"], PROC_COLUMNS)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_command(
    ctx: typer.Context,
    vm: str,
    command: str,
    timeout: float = typer.Option(300, "--timeout", help="Seconds before the guest kills it."),
    workdir: str | None = typer.Option(None, "--workdir", "-w"),
    wait: bool = typer.Option(False, "--wait", help="Wait and print at the end (no streaming)."),
    raw: bool = typer.Option(
        False, "--raw", help="Pass the output to a terminal as is (escape sequences too)."
    ),
    host: str = HOST_OPTION,
) -> None:
    """Run COMMAND [ARGS...] in the guest (no shell); exits with the guest's exit code."""
    body = {
        "command": command, "args": list(ctx.args), "timeout_seconds": timeout,
        "working_directory": workdir,
    }  # fmt: skip
    if wait or wants_json(ctx):
        data = _post(ctx, host, vm, "exec", body)
        if wants_json(ctx):
            emit(ctx, data)
        else:
            write_output(sys.stdout, data["stdout"], raw=raw)
            write_output(sys.stderr, data["stderr"], raw=raw)
        raise typer.Exit(_exit_code(data["exit_code"]))
    code = 1
    with client(ctx) as api, api.stream("POST", f"{_base(host, vm)}/exec/stream", json=body) as r:
        for line in r.iter_lines():
            if not line:
                continue
            msg = json.loads(line)
            if "error" in msg:
                raise GuestError(str(msg["error"].get("message", "exec failed")))
            if msg.get("stream") == "stdout":
                write_output(sys.stdout, msg["data"], raw=raw)
            elif msg.get("stream") == "stderr":
                write_output(sys.stderr, msg["data"], raw=raw)
            elif "exit_code" in msg:
                if msg.get("timed_out"):
                    info("error: the command timed out and was killed")
                code = _exit_code(msg["exit_code"])
    raise typer.Exit(code)


def _exit_code(code: Any) -> int:
    if not isinstance(code, int):
        return 1
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N, like a shell


def _split_remote(spec: str) -> tuple[str, str] | None:
    vm, sep, path = spec.partition(":")
    if sep and path.startswith("/") and vm and "/" not in vm:
        return vm, path
    return None


def _label(text: str) -> str:
    # The progress bar renders its description as markup: file names stay text.
    return escape(inert(text))


# Request body pieces of an upload (the server cuts them into the agent's chunks).
UPLOAD_PIECE = 1 << 20


def _upload(api: ApiClient, base: str, src: Path, dest: str, resume: bool, quiet: bool) -> dict:
    """PUT /files/content: the server's windowed raw transfer. With --resume the whole
    file is sent again over HTTP and the server skips what the guest already holds."""
    size = src.stat().st_size
    digest = hashlib.sha256()
    with open(src, "rb") as fh, progress(quiet=quiet) as bar:
        task = bar.add_task(_label(f"{src.name} -> {dest}"), total=size, visible=not quiet)

        def body() -> Iterator[bytes]:
            while data := fh.read(UPLOAD_PIECE):
                digest.update(data)
                bar.update(task, advance=len(data))
                yield data

        result = api.put(
            f"{base}/files/content", params={"path": dest, "resume": resume}, content=body()
        )
    if result["sha256"] != digest.hexdigest():
        raise GuestError(f"verification failed: sha256 of {dest} differs from {src}")
    return {"path": dest, "size_bytes": result["size_bytes"], "sha256": result["sha256"]}


def _receive(
    api: ApiClient, base: str, src: str, dest: Path, done: int, digest: Any, quiet: bool
) -> int:
    """Append the guest's `src` from offset `done` to `dest`; the bytes it now holds."""
    with open(dest, "r+b" if done else "wb") as fh, progress(quiet=quiet) as bar:
        while fh.tell() < done:
            digest.update(fh.read(min(1 << 20, done - fh.tell())))
        with api.stream("GET", f"{base}/files/content", params={"path": src, "offset": done}) as r:
            size = int(r.headers.get("X-Size") or 0)
            task = bar.add_task(
                _label(f"{src} -> {dest}"), total=size, completed=done, visible=not quiet
            )
            for data in r.iter_bytes():
                fh.write(data)
                digest.update(data)
                done += len(data)
                bar.update(task, completed=done)
        fh.truncate(done)
    return done


def _download(api: ApiClient, base: str, src: str, dest: Path, resume: bool, quiet: bool) -> dict:
    """GET /files/content (the server's windowed transfer) from where a --resume left
    off, then the guest's sha256 of the whole file against ours."""
    digest = hashlib.sha256()
    done = dest.stat().st_size if resume and dest.exists() else 0
    existed = dest.exists()
    try:
        size = _receive(api, base, src, dest, done, digest, quiet)
    except BaseException:
        # A refused copy leaves no empty file behind; a partial one stays for --resume.
        if not existed and dest.exists() and dest.stat().st_size == 0:
            dest.unlink()
        raise
    done = size
    stat = api.get(f"{base}/files/stat", params={"path": src, "sha256": True})
    if stat.get("sha256") != digest.hexdigest():
        raise GuestError(f"verification failed: sha256 of {dest} differs from the guest's {src}")
    return {"path": str(dest), "size_bytes": done, "sha256": stat["sha256"]}


@app.command("cp")
def cp(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Local path or VM:/guest/path."),
    dest: str = typer.Argument(..., help="Local path or VM:/guest/path."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted copy."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    host: str = HOST_OPTION,
) -> None:
    """Copy a file of any size into or out of a VM, verified with sha256."""
    remote_src, remote_dst = _split_remote(source), _split_remote(dest)
    if bool(remote_src) == bool(remote_dst):
        raise InvalidInput("exactly one of SOURCE and DEST must be VM:/absolute/path", field="dest")
    quiet = quiet or wants_json(ctx) or not sys.stderr.isatty()
    with client(ctx) as api:
        if remote_dst:
            vm, path = remote_dst
            local = Path(source)
            if not local.is_file():
                raise InvalidInput(f"{source} is not a file", field="source")
            result = _upload(api, _base(host, vm), local, path, resume, quiet)
        else:
            assert remote_src is not None
            vm, path = remote_src
            target = Path(dest)
            if target.is_dir():
                target = target / os.path.basename(path)
            result = _download(api, _base(host, vm), path, target, resume, quiet)
    emit(ctx, result)


def _power(ctx: typer.Context, host: str, vm: str, action: str, delay: int, force: bool) -> None:
    emit(ctx, _post(ctx, host, vm, action, {"timeout_seconds": delay, "force": force}))


# shutdown and reboot stay two commands on purpose: each has its own help and the same
# options; what they do alike is _power.
@app.command("shutdown")
def shutdown(
    ctx: typer.Context, vm: str, delay: int = typer.Option(0, "--delay"),
    force: bool = typer.Option(False, "--force"), host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """Power the guest off from inside (our agent, else qemu-ga)."""
    _power(ctx, host, vm, "shutdown", delay, force)


@app.command("reboot")
def reboot(
    ctx: typer.Context, vm: str, delay: int = typer.Option(0, "--delay"),
    force: bool = typer.Option(False, "--force"), host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """Reboot the guest from inside."""
    _power(ctx, host, vm, "reboot", delay, force)


@app.command("freeze")
def freeze(
    ctx: typer.Context, vm: str,
    thaw_after: float = typer.Option(60, "--thaw-after", help="Automatic thaw (seconds)."),
    host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """Freeze the guest's filesystems (thawed automatically after --thaw-after)."""
    emit(ctx, _post(ctx, host, vm, "fsfreeze/freeze", {"timeout_seconds": thaw_after}))


_shows("thaw", "Thaw the guest's filesystems.", "fsfreeze/thaw", post=True)
_shows("freeze-status", "Whether the guest's filesystems are frozen.", "fsfreeze")


@app.command("service")
def service(
    ctx: typer.Context, vm: str, name: str,
    action: str = typer.Argument("status", help="status, start, stop, restart, ..."),
    host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """Show or change a guest service (systemd or OpenRC)."""
    if action == "status":
        emit(ctx, _get(ctx, host, vm, f"services/{q(name)}"))
    else:
        emit(ctx, _post(ctx, host, vm, f"services/{q(name)}/{q(action)}"))


@app.command("ssh-keys")
def ssh_keys(
    ctx: typer.Context, vm: str, user: str,
    add: str | None = typer.Option(None, "--add", help="A public key line to add."),
    remove: str | None = typer.Option(None, "--remove", help="A public key line to remove."),
    host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """List, add or remove a guest user's SSH authorized keys."""
    if add and remove:
        raise InvalidInput("use --add or --remove, not both", field="add")
    if add or remove:
        body = {"user": user, "action": "add" if add else "remove", "key": add or remove}
        emit(ctx, _post(ctx, host, vm, "ssh-keys", body))
    else:
        emit(ctx, _get(ctx, host, vm, "ssh-keys", params={"user": user}))


_shows(
    "methods",
    "Every protocol method and whether you may call it.",
    "methods",
    columns=["name", "capability", "role", "allowed"],
)


@app.command("call")
def call(
    ctx: typer.Context, vm: str, method: str,
    params: str = typer.Option("{}", "--params", "-p", help="JSON object of parameters."),
    host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """Call any agent method by name (see `methods` and docs/protocol.md)."""
    try:
        body = json.loads(params)
    except ValueError as exc:
        raise InvalidInput(f"--params is not JSON: {exc}", field="params") from None
    if not isinstance(body, dict):
        raise InvalidInput("--params must be a JSON object", field="params")
    emit(ctx, _post(ctx, host, vm, f"call/{q(method)}", body))
