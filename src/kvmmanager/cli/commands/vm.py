"""`kvm-manager vm ...`: list, show, create, power actions, edit, delete, CD-ROM media."""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.flags import in_cli_words
from kvmmanager.cli.helpers import api_get, api_post
from kvmmanager.cli.output import emit, info, state, wants_json, write_output
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import InvalidInput
from kvmmanager.core.sanitize import inert
from kvmmanager.virt.xml.sizes import parse_size
from kvmmanager_agent.config import DEFAULTS as AGENT_DEFAULTS

NAME = "vm"
app = typer.Typer(help="Virtual machines: create, power, edit, delete.", no_args_is_help=True)
media_app = typer.Typer(help="CD-ROM media: insert and eject.", no_args_is_help=True)
app.add_typer(media_app, name="media")

HOST_OPTION = typer.Option("local", "--host", "-H", envvar="KVMM_HOST", help="Host name.")
COLUMNS = ["name", "host", "state", "vcpus", "memory", "tags", "agent"]


def _vm(host: str, vm: str) -> str:
    return f"/api/hosts/{q(host)}/vms/{q(vm)}"


def _row(v: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": v["name"],
        "host": v["host"],
        "state": v["state"],
        "vcpus": v["vcpus"],
        "memory": f"{v['memory_kib'] // 1024} MiB",
        "tags": v.get("tags") or [],
        "agent": v.get("agent_status"),
    }


def _pool_volume(text: str, option: str) -> tuple[str, str]:
    pool, sep, volume = text.partition("/")
    if not sep or not pool or not volume:
        raise InvalidInput(f"{option} must look like POOL/VOLUME", field=option)
    return pool, volume


def _disk(text: str) -> dict[str, Any]:
    """POOL:SIZE_GIB for a new volume, POOL/VOLUME for an existing one."""
    if "/" in text:
        pool, volume = _pool_volume(text, "--disk")
        return {"pool": pool, "volume": volume}
    pool, _, size = text.partition(":")
    try:
        return {"pool": pool, "size_gib": float(size)}
    except ValueError:
        raise InvalidInput("--disk must be POOL:SIZE_GIB or POOL/VOLUME", field="--disk") from None


@app.command("list")
def list_vms(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", "-H", help="Only this host."),
    state: str | None = typer.Option(
        None,
        "--state",
        help="running, blocked, paused, shutdown, shutoff, crashed, pmsuspended or nostate.",
    ),
    tag: str | None = typer.Option(None, "--tag"),
    query: str | None = typer.Option(None, "--query", "-q", help="Name/description contains."),
) -> None:
    """VMs of every host (or one)."""
    params = {k: v for k, v in {"host": host, "state": state, "tag": tag, "q": query}.items() if v}
    body = api_get(ctx, "/api/vms", params=params)
    vms = body["vms"]
    emit(ctx, vms if wants_json(ctx) else [_row(v) for v in vms], COLUMNS)
    # On stderr, so --json stdout stays the list: a host missing from it must not read as
    # a host without VMs.
    for gap in body.get("hosts_not_current", []):
        info(_gap_line(gap))


def _gap_line(gap: dict[str, Any]) -> str:
    why = f": {gap['reason']}" if gap.get("reason") else ""
    if gap.get("missing"):
        # "since the manager started": the inventory lives in the manager's memory, so a
        # host listed before a restart and frozen since is missing too.
        return (
            f"host {gap['host']} is {gap['status']} and has not been listed since the "
            f"manager started: its VMs are missing from this list{why}"
        )
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gap["stale_since"]))
    return f"host {gap['host']} is {gap['status']}: its VMs are shown as of {since}{why}"


@app.command("show")
def show(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """One VM, with its disks, NICs and agent status."""
    emit(ctx, api_get(ctx, _vm(host, vm)))


@app.command("xml")
def xml(
    ctx: typer.Context,
    vm: str,
    inactive: bool = typer.Option(False, "--inactive", help="The persistent definition."),
    host: str = HOST_OPTION,
) -> None:
    """Print the domain XML."""
    with client(ctx) as api:
        text = api.get(_vm(host, vm) + "/xml", params={"inactive": inactive})["xml"]
    if wants_json(ctx):
        emit(ctx, {"xml": text})
    else:
        write_output(sys.stdout, text + "\n")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    vcpus: int = typer.Option(1, "--vcpus"),
    memory_mib: int = typer.Option(512, "--memory", "-m", help="MiB."),
    max_vcpus: int | None = typer.Option(
        None, "--max-vcpus", help="Most vCPUs it may hot-plug while running (default: --vcpus)."
    ),
    max_memory_mib: int | None = typer.Option(
        None,
        "--max-memory",
        help="MiB; most memory it may grow to while running (default: --memory).",
    ),
    disk: list[str] = typer.Option([], "--disk", help="POOL:SIZE_GIB (new) or POOL/VOLUME."),
    network: list[str] = typer.Option([], "--network", help="libvirt network (repeat)."),
    bridge: list[str] = typer.Option([], "--bridge", help="Host bridge (repeat)."),
    user_net: bool = typer.Option(
        False,
        "--user-net",
        help="A user-mode NIC (passt where libvirt offers it, else slirp; no host network).",
    ),
    iso: str | None = typer.Option(None, "--iso", help="POOL/VOLUME to install from."),
    import_: str | None = typer.Option(None, "--import", help="POOL/VOLUME disk to boot."),
    kernel: str | None = typer.Option(None, "--kernel", help="Direct boot: kernel path."),
    initrd: str | None = typer.Option(None, "--initrd"),
    cmdline: str | None = typer.Option(None, "--cmdline"),
    uefi: bool = typer.Option(False, "--uefi", help="UEFI firmware (when the host offers it)."),
    secure_boot: bool = typer.Option(False, "--secure-boot"),
    tpm: bool = typer.Option(False, "--tpm", help="Emulated TPM 2.0 (when offered)."),
    tag: list[str] = typer.Option([], "--tag"),
    description: str | None = typer.Option(None, "--description"),
    start: bool = typer.Option(False, "--start", help="Boot it right away."),
    background: bool = typer.Option(False, "--background", help="Run as a job; print its id."),
    host: str = HOST_OPTION,
) -> None:
    """Create a VM (blank unless --iso, --import or --kernel)."""
    install: dict[str, Any] = {"kind": "blank"}
    if iso:
        pool, volume = _pool_volume(iso, "--iso")
        install = {"kind": "iso", "pool": pool, "volume": volume}
    elif import_:
        pool, volume = _pool_volume(import_, "--import")
        install = {"kind": "import", "pool": pool, "volume": volume}
    elif kernel:
        install = {"kind": "kernel", "kernel": kernel, "initrd": initrd, "cmdline": cmdline}
    body = {
        "name": name,
        "vcpus": vcpus,
        "memory_mib": memory_mib,
        "max_vcpus": max_vcpus,
        "max_memory_mib": max_memory_mib,
        "install": install,
        "disks": [_disk(d) for d in disk],
        "nics": [{"network": n} for n in network]
        + [{"bridge": b} for b in bridge]
        + ([{"user": True}] if user_net else []),
        "firmware": "uefi" if uefi else "bios",
        "secure_boot": secure_boot,
        "tpm": tpm,
        "tags": tag,
        "description": description,
        "start": start,
    }
    with client(ctx) as api:
        res = api.post(f"/api/hosts/{q(host)}/vms", json=body, params={"background": background})
    if "job_id" in res:
        info(f"creating {name} in job {res['job_id']}")
        emit(ctx, res)
        return
    info(f"created {name} ({res['domain_type']}{', started' if start else ''})")
    emit(ctx, res if wants_json(ctx) else _row(res["vm"]))


def _action(ctx: typer.Context, host: str, vm: str, action: str, body: Any = None) -> None:
    with client(ctx) as api:
        res = api.post(_vm(host, vm) + f"/actions/{action}", json=body)
    info(f"{res['name']}: {res['message']}")
    emit(ctx, res if wants_json(ctx) else {"name": res["name"], "state": res["state"]})


@app.command("start")
def start(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Boot the VM."""
    _action(ctx, host, vm, "start")


@app.command("shutdown")
def shutdown(
    ctx: typer.Context,
    vm: str,
    mode: str = typer.Option("auto", "--mode", help="acpi, agent or auto."),
    host: str = HOST_OPTION,
) -> None:
    """Ask the guest to power off (guest agent when connected, else ACPI)."""
    _action(ctx, host, vm, "shutdown", {"mode": mode})


# One command per power action, alike on purpose: each is its own typer command whose help
# and signature typer reads; what they share is the one line that asks the API (_action).
@app.command("destroy")
def destroy(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Force the VM off at once (like pulling the plug)."""
    _action(ctx, host, vm, "destroy")


@app.command("reboot")
def reboot(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Ask the guest to reboot."""
    _action(ctx, host, vm, "reboot")


@app.command("reset")
def reset(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Hard reset (no guest cooperation)."""
    _action(ctx, host, vm, "reset")


@app.command("suspend")
def suspend(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Pause the VM's vCPUs (it stays in memory)."""
    _action(ctx, host, vm, "suspend")


@app.command("resume")
def resume(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Continue a paused VM."""
    _action(ctx, host, vm, "resume")


@app.command("delete")
def delete(
    ctx: typer.Context,
    vm: str,
    remove_volumes: bool = typer.Option(
        False, "--remove-volumes", help="Also delete its disk volumes (never shared ones or ISOs)."
    ),
    host: str = HOST_OPTION,
) -> None:
    """Delete a shut-off VM."""
    with client(ctx) as api:
        res = api.delete(_vm(host, vm), params={"remove_volumes": remove_volumes})
    for kept in res.get("kept_volumes", []):
        info(f"kept {kept['path']}: {kept['reason']}")
    info(f"deleted {res['name']}")
    emit(ctx, res)


@app.command("edit")
def edit(
    ctx: typer.Context,
    vm: str,
    vcpus: int | None = typer.Option(None, "--vcpus", help="Live up to the maximum."),
    memory_mib: int | None = typer.Option(
        None, "--memory", "-m", help="MiB; live up to the maximum."
    ),
    max_vcpus: int | None = typer.Option(
        None, "--max-vcpus", help="Most vCPUs it may hot-plug (from the next boot if running)."
    ),
    max_memory_mib: int | None = typer.Option(
        None, "--max-memory", help="MiB; most memory it may grow to (next boot if running)."
    ),
    description: str | None = typer.Option(None, "--description"),
    tag: list[str] | None = typer.Option(None, "--tag", help="Replace the tags (repeat)."),
    autostart: bool | None = typer.Option(None, "--autostart/--no-autostart"),
    rename: str | None = typer.Option(None, "--rename", help="New name (VM shut off)."),
    host: str = HOST_OPTION,
) -> None:
    """Change vCPUs, memory, their hot-add maximum, description, tags, autostart or the
    name; says whether a change applied live or waits for the next boot."""
    body = {
        "vcpus": vcpus,
        "memory_mib": memory_mib,
        "max_vcpus": max_vcpus,
        "max_memory_mib": max_memory_mib,
        "description": description,
        "tags": tag or None,
        "autostart": autostart,
        "name": rename,
    }
    body = {k: v for k, v in body.items() if v is not None}
    if not body:
        raise InvalidInput("nothing to change: give at least one option", field="options")
    with client(ctx) as api:
        res = api.patch(_vm(host, vm), json=body)
    for what, edit_res in res.get("edits", {}).items():
        info(f"{what}: {edit_res['message']}")
    emit(ctx, res if wants_json(ctx) else res["vm"])


def _edit_out(ctx: typer.Context, res: dict[str, Any]) -> None:
    info(res["message"])
    emit(ctx, res if wants_json(ctx) else {**res.get("details", {}), "live": res["applied_live"]})


@app.command("attach-disk")
def attach_disk(
    ctx: typer.Context,
    vm: str,
    disk: str = typer.Argument(..., help="POOL:SIZE_GIB (new qcow2) or POOL/VOLUME."),
    host: str = HOST_OPTION,
) -> None:
    """Attach a disk: live and persistent when running, persistent when shut off."""
    with client(ctx) as api:
        _edit_out(ctx, api.post(_vm(host, vm) + "/disks", json=_disk(disk)))


@app.command("detach-disk")
def detach_disk(ctx: typer.Context, vm: str, target: str, host: str = HOST_OPTION) -> None:
    """Detach the disk at TARGET (vdb, sda...); its volume is kept."""
    with client(ctx) as api:
        _edit_out(ctx, api.delete(_vm(host, vm) + f"/disks/{q(target)}"))


@app.command("attach-nic")
def attach_nic(
    ctx: typer.Context,
    vm: str,
    network: str | None = typer.Option(None, "--network"),
    bridge: str | None = typer.Option(None, "--bridge"),
    user: bool = typer.Option(
        False, "--user", help="User-mode networking (passt where libvirt offers it, else slirp)."
    ),
    mac: str | None = typer.Option(None, "--mac"),
    host: str = HOST_OPTION,
) -> None:
    """Attach a virtio NIC on a libvirt network, a host bridge or user-mode networking."""
    body = {"network": network, "bridge": bridge, "user": user, "mac": mac}
    with client(ctx) as api:
        _edit_out(ctx, api.post(_vm(host, vm) + "/nics", json=body))


@app.command("detach-nic")
def detach_nic(ctx: typer.Context, vm: str, mac: str, host: str = HOST_OPTION) -> None:
    """Detach the NIC with this MAC address."""
    with client(ctx) as api:
        _edit_out(ctx, api.delete(_vm(host, vm) + f"/nics/{q(mac)}"))


@media_app.command("insert")
def media_insert(
    ctx: typer.Context,
    vm: str,
    volume: str = typer.Argument(..., help="POOL/VOLUME, e.g. isos/debian.iso"),
    target: str | None = typer.Option(None, "--target", help="CD-ROM device (default: first)."),
    host: str = HOST_OPTION,
) -> None:
    """Insert a volume into the CD-ROM drive (running or not)."""
    pool, vol = _pool_volume(volume, "volume")
    with client(ctx) as api:
        body = {"pool": pool, "volume": vol, "target": target}
        _edit_out(ctx, api.post(_vm(host, vm) + "/media", json=body))


@media_app.command("eject")
def media_eject(
    ctx: typer.Context,
    vm: str,
    target: str | None = typer.Option(None, "--target"),
    host: str = HOST_OPTION,
) -> None:
    """Empty the CD-ROM drive (running or not)."""
    with client(ctx) as api:
        params = {"target": target} if target else {}
        _edit_out(ctx, api.delete(_vm(host, vm) + "/media", params=params))


@app.command("install-agent")
def install_agent(
    ctx: typer.Context,
    vm: str,
    pool: str | None = typer.Option(None, "--pool", help="Pool holding the agent ISO."),
    replace_cd: bool = typer.Option(
        False,
        "--replace-cd",
        help="Swap the disc in the VM's CD-ROM (e.g. the install ISO) for the agent ISO "
        "instead of adding a drive beside it.",
    ),
    host: str = HOST_OPTION,
) -> None:
    """Get the guest agent into the VM: deploy the ISO, add the agent channel, insert the
    ISO (into an empty or an added CD-ROM drive; a disc in the VM's drive stays unless
    --replace-cd), and print the commands to run inside the guest."""
    body: dict[str, Any] = {"replace_cd": replace_cd}
    if pool:
        body["pool"] = pool
    res = api_post(ctx, f"/api/hosts/{q(host)}/agent-iso/install/{q(vm)}", body)
    if wants_json(ctx):
        emit(ctx, res)
        return
    for line in res.get("messages", []):
        # "replace_cd=true" in the server's words is --replace-cd here.
        info(in_cli_words(line, state(ctx).flags))
    typer.echo("Run inside the guest (as root):")
    for command in res.get("guest_commands", []):
        typer.echo(f"  {inert(command)}")


@app.command("eject-agent")
def eject_agent(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Eject the agent ISO from the VM's CD-ROM drive."""
    with client(ctx) as api:
        _edit_out(ctx, api.post(f"/api/hosts/{q(host)}/agent-iso/eject/{q(vm)}"))


def _ssh_key(value: str) -> str:
    """A key line, or the path of a .pub file holding one."""
    from pathlib import Path

    path = Path(value).expanduser()
    if not value.startswith(("ssh-", "ecdsa-", "sk-")) and path.is_file():
        return path.read_text(encoding="utf-8").strip()
    return value.strip()


def _agent_policy(
    read: list[str], write: list[str], commands: list[str], disabled: list[str]
) -> dict[str, Any] | None:
    """The agent's policy from the --agent-* flags: paths are added to the agent's safe
    defaults; no flag at all leaves its packaged config alone (None)."""
    if not (read or write or commands or disabled):
        return None
    defaults = AGENT_DEFAULTS["security"]
    return {
        "allowed_read_paths": _unique([*defaults["allowed_read_paths"], *read]),
        "allowed_write_paths": _unique([*defaults["allowed_write_paths"], *write]),
        "command_whitelist": _unique(commands),
        "disabled_methods": _unique(disabled),
    }


def _size_gib(text: str) -> float:
    """`--size 20` is GiB as before; `--size 20G` (what the README writes) takes a unit."""
    try:
        return float(text)
    except ValueError:
        return parse_size(text, field="--size") / (1 << 30)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


@app.command("create-from-image")
def create_from_image(
    ctx: typer.Context,
    name: str,
    image: str = typer.Option(..., "--image", help="POOL/VOLUME of the cloud image."),
    size: str = typer.Option(
        ..., "--size", help="GiB, or with a unit (20G, 512MiB); at least the image's."
    ),
    pool: str | None = typer.Option(None, "--pool", help="Pool of the new disk and seed."),
    mode: str = typer.Option("linked", "--mode", help="linked (overlay) or full (copy)."),
    network: str | None = typer.Option(None, "--network", help="libvirt network."),
    vcpus: int = typer.Option(1, "--vcpus"),
    memory: int = typer.Option(1024, "--memory", "-m", help="MiB."),
    hostname: str | None = typer.Option(None, "--hostname", help="Default: the VM's name."),
    user: str | None = typer.Option(None, "--user", help="A login to create."),
    ssh_key: list[str] = typer.Option(
        [], "--ssh-key", help="Public key line or .pub file for --user (repeat)."
    ),
    ask_password: bool = typer.Option(
        False, "--ask-password", help="Prompt for --user's password (sent hashed to the seed)."
    ),
    password_hash: str | None = typer.Option(None, "--password-hash", help="crypt(3) $6$..."),
    package: list[str] = typer.Option([], "--package", help="Package to install (repeat)."),
    agent: bool = typer.Option(True, "--agent/--no-agent", help="Install our guest agent."),
    agent_read: list[str] = typer.Option(
        [], "--agent-allow-read", help="Directory the agent may read, besides /var/log, /tmp."
    ),
    agent_write: list[str] = typer.Option(
        [], "--agent-allow-write", help="Directory the agent may write in, besides /tmp."
    ),
    agent_exec: list[str] = typer.Option(
        [], "--agent-allow-exec", help="Command the agent may run (name or path; repeat)."
    ),
    agent_disable: list[str] = typer.Option(
        [], "--agent-disable-method", help="Agent method to refuse outright (repeat)."
    ),
    kernel: str | None = typer.Option(None, "--kernel", help="Direct boot: kernel path."),
    initrd: str | None = typer.Option(None, "--initrd"),
    cmdline: str | None = typer.Option(None, "--cmdline"),
    start: bool = typer.Option(True, "--start/--no-start"),
    host: str = HOST_OPTION,
) -> None:
    """Create a VM from a cloud image with a cloud-init seed (hostname, user, SSH keys,
    packages; by default it installs the guest agent by itself). The --agent-* flags
    widen what that agent may do in this VM (its config is written before it starts);
    without them it keeps its safe defaults."""
    image_pool, volume = _pool_volume(image, "--image")
    users: list[dict[str, Any]] = []
    if user:
        entry: dict[str, Any] = {
            "name": user,
            "ssh_authorized_keys": [_ssh_key(k) for k in ssh_key],
        }
        if ask_password:
            entry["password"] = typer.prompt(
                f"Password for {user}", hide_input=True, confirmation_prompt=True
            )
        elif password_hash:
            entry["passwd_hash"] = password_hash
        users.append(entry)
    elif ssh_key or ask_password or password_hash:
        raise InvalidInput("--ssh-key and passwords need --user", field="--user")
    body: dict[str, Any] = {
        "name": name,
        "pool": pool or image_pool,
        "image": volume,
        "image_pool": image_pool,
        "size_gib": _size_gib(size),
        "mode": mode,
        "network": network,
        "vcpus": vcpus,
        "memory_mib": memory,
        "cloud_init": {
            "hostname": hostname or name,
            "users": users,
            "packages": package,
            "install_agent": agent,
            "agent_policy": _agent_policy(agent_read, agent_write, agent_exec, agent_disable),
        },
        "start": start,
    }
    if kernel:
        body["boot"] = {"kernel": kernel, "initrd": initrd, "cmdline": cmdline}
    res = api_post(ctx, f"/api/hosts/{q(host)}/vms/from-cloud-image", body)
    info(
        f"created {res['name']} from {image} (disk {res['disk']}, seed {res['seed']}"
        f"{', started' if res['started'] else ''})"
    )
    emit(ctx, res)
