"""Cloud-init provisioning: a VM from a cloud image volume plus a NoCloud seed ISO.

The seed ISO (label `cidata`, built with pycdlib, uploaded through libvirt's volume
stream) carries `meta-data`, `user-data` and `network-config`. By default it also carries
the project's guest agent installer (the agent ISO's files under `/kvmm-agent/`), and the
user-data runs it at first boot, so the VM comes up with the agent connected. An
`agent_policy` (the agent config's own keys: readable and writable roots, allowed
commands, disabled methods, limits) is written by cloud-init's write_files to the
agent's config file before the installer runs, so the agent starts with it; without one
the agent keeps its packaged safe defaults (reads /var/log and /tmp, writes /tmp, no
commands).

    user = CloudUser(name="alice", ssh_authorized_keys=[key])
    spec = CloudInitSpec(hostname="web1", users=[user])
    result = await manager.cloudinit.provision(
        "local", name="web1", pool="default", image="debian-12-generic.qcow2",
        size_gib=10, spec=spec, network="default")

The disk is a qcow2 overlay on the image (`linked`, default) or a full copy, at the
requested size (never smaller than the image). Anything made before a failure is
deleted again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import re
import shutil
import subprocess
import tempfile
import uuid as uuidlib
from pathlib import Path
from typing import Any

import libvirt
import pycdlib
import yaml
from pydantic import BaseModel, ConfigDict, Field

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.services.cloudinit.crypt import sha512_crypt
from kvmmanager.services.cloudinit.seed_volume import SEED_LABEL, read_seed
from kvmmanager.services.storage.service import StorageService
from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager.services.vms.builder import (
    boot_volumes,
    paths_used_by_others,
    refuse_unusable_disk,
)
from kvmmanager.services.vms.service import VmService
from kvmmanager.services.vms.spec import (
    MAX_CMDLINE,
    SEED_SUFFIX,
    DiskSpec,
    InstallSource,
    NicSpec,
    VmSpec,
    validate_name,
)
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.volume import Volume
from kvmmanager_agent import config as agent_config
from kvmmanager_agent import protocol as agent_protocol

log = logging.getLogger(__name__)
AGENT_DIR = "kvmm-agent"
GIB = 1024**3
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
KEY_RE = re.compile(
    r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?"
)
PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]*")
HASH_RE = re.compile(r"\$(1|5|6|y|2[aby])\$.+")


MAX_PASSWORD = 256
# A new instance of a copied disk must not keep the source's machine-id: cloud-init runs
# `runcmd` once per instance-id, so a clone's new seed makes each clone get its own.
RESET_MACHINE_ID = (
    "rm -f /etc/machine-id /var/lib/dbus/machine-id; "
    "systemd-machine-id-setup || dbus-uuidgen --ensure=/etc/machine-id"
)


# The agent's own config file, defaults and install path (packaging/agent): the policy
# below uses its keys, so what the host checks is what the agent reads.
AGENT_CONFIG_PATH = agent_config.DEFAULT_CONFIG_PATH
AGENT_PYZ = "/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz"
_AGENT_SECURITY = agent_config.DEFAULTS["security"]
MAX_POLICY_ENTRIES = 64
MAX_POLICY_PATH = 4096
# The agent caps single-call file transfers at this size whatever its config says.
MAX_POLICY_FILE_MB = agent_protocol.MAX_SIMPLE_FILE_BYTES / 1024**2
MAX_POLICY_TIMEOUT = 86400.0
COMMAND_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
# A pre-existing config.json is a conffile conflict for dpkg, which prompts and fails
# with no terminal ("end of file on stdin at conffile prompt"): keep ours. DPKG_FORCE
# replaces dpkg's built-in defaults, so those two (downgrade, security-mac) are repeated.
DPKG_KEEP_CONFIG = "DPKG_FORCE=confold,confdef,downgrade,security-mac"
# An agent that was on the disk before this boot's install (an image or a clone that
# has it) started before write_files: restart it so it reads the written policy.
RESTART_AGENT = (
    "if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then "
    "systemctl try-restart kvmmanager-agent.service; "
    "elif command -v rc-service >/dev/null 2>&1; then rc-service kvmmanager-agent restart; "
    "elif [ -x /etc/init.d/kvmmanager-agent ]; then /etc/init.d/kvmmanager-agent restart; fi"
)


def _default_list(key: str) -> Any:
    return lambda: list(_AGENT_SECURITY[key])


class AgentPolicy(BaseModel):
    """What the guest agent may do in this VM: its config file's `security` keys and
    `disabled_methods`. A list replaces the agent's default list; omitted keys keep
    the agent's safe defaults."""

    model_config = ConfigDict(extra="forbid")

    allowed_read_paths: list[str] = Field(
        default_factory=_default_list("allowed_read_paths"),
        description="absolute directories whose files the agent may read",
    )
    allowed_write_paths: list[str] = Field(
        default_factory=_default_list("allowed_write_paths"),
        description="absolute directories the agent may write in",
    )
    command_whitelist: list[str] = Field(
        default_factory=list,
        description="commands (names on PATH or absolute paths) the agent may run; "
        "empty: exec is off",
    )
    disabled_methods: list[str] = Field(
        default_factory=list, description="agent methods refused outright"
    )
    max_file_size_mb: float = Field(
        _AGENT_SECURITY["max_file_size_mb"], description="largest file read/write in one call"
    )
    max_command_timeout_seconds: float = Field(
        _AGENT_SECURITY["max_command_timeout_seconds"],
        description="upper bound of a command's timeout",
    )


class CloudUser(BaseModel):
    name: str
    ssh_authorized_keys: list[str] = Field(default_factory=list)
    passwd_hash: str | None = Field(None, description="crypt(3) hash ($6$...)")
    password: str | None = Field(
        None, description="a clear password: only its SHA-512 crypt hash reaches the seed"
    )
    sudo: bool = True
    shell: str = "/bin/bash"


class CloudInitSpec(BaseModel):
    hostname: str
    users: list[CloudUser] = Field(default_factory=list)
    packages: list[str] = Field(default_factory=list)
    install_agent: bool = True
    # A new identity for a copied disk: fresh machine-id (cloud-init itself makes new
    # SSH host keys and sets the hostname for every new instance-id).
    reset_identity: bool = False
    agent_policy: AgentPolicy | None = Field(
        None, description="the agent's access policy; none: its packaged safe defaults"
    )


def _check_key(key: str, field: str) -> None:
    """An OpenSSH public key line: known type, base64 blob that names the same type."""
    if "\n" in key or "\r" in key or not KEY_RE.fullmatch(key.strip()):
        raise InvalidInput("not an SSH public key (type base64 [comment])", field=field)
    kind, blob = key.strip().split()[:2]
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the SSH key's base64 part does not decode", field=field) from None
    n = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if raw[4 : 4 + n].decode(errors="replace") != kind:
        raise InvalidInput(f"the SSH key's data is not a {kind} key", field=field)


def validate_spec(spec: CloudInitSpec) -> None:
    if not HOSTNAME_RE.fullmatch(spec.hostname):
        raise InvalidInput("hostname must be a DNS label (letters, digits, '-')", field="hostname")
    for i, u in enumerate(spec.users):
        if not USER_RE.fullmatch(u.name):
            raise InvalidInput(
                f"user name '{u.name}' is not a valid login", field=f"users[{i}].name"
            )
        for key in u.ssh_authorized_keys:
            _check_key(key, f"users[{i}].ssh_authorized_keys")
        if u.password is not None:
            if u.passwd_hash is not None:
                raise InvalidInput(
                    "give a password or a passwd_hash, not both", field=f"users[{i}].password"
                )
            if not 1 <= len(u.password) <= MAX_PASSWORD:
                raise InvalidInput(
                    f"password must be 1 to {MAX_PASSWORD} characters",
                    field=f"users[{i}].password",
                )
        if u.passwd_hash is not None and not HASH_RE.fullmatch(u.passwd_hash):
            raise InvalidInput(
                "passwd_hash must be a crypt(3) hash ($6$...), not a password",
                field=f"users[{i}].passwd_hash",
            )
        if not u.shell.startswith("/") or any(c.isspace() for c in u.shell):
            raise InvalidInput("shell must be an absolute path", field=f"users[{i}].shell")
    for p in spec.packages:
        if not PACKAGE_RE.fullmatch(p):
            raise InvalidInput(f"'{p}' is not a package name", field="packages")
    if spec.agent_policy is not None:
        validate_policy(spec.agent_policy)


def _check_entries(values: list[str], field: str) -> None:
    if len(values) > MAX_POLICY_ENTRIES:
        raise InvalidInput(f"at most {MAX_POLICY_ENTRIES} entries", field=field)
    for v in values:
        if not v or len(v) > MAX_POLICY_PATH or any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise InvalidInput(
                f"{v[:80]!r} is empty, too long or has control characters", field=field
            )


def _check_path(path: str, field: str) -> None:
    if not path.startswith("/"):
        raise InvalidInput(f"'{path}' is not an absolute path", field=field)
    if ".." in path.split("/"):
        raise InvalidInput(f"'{path}' has a '..' component", field=field)


def validate_policy(policy: AgentPolicy) -> None:
    """The checks the agent makes at start (a bad config stops it), made here first so
    a mistake is a 4xx naming the field instead of a guest whose agent never comes up."""
    pre = "agent_policy."
    for key in ("allowed_read_paths", "allowed_write_paths"):
        paths = getattr(policy, key)
        _check_entries(paths, pre + key)
        for path in paths:
            _check_path(path, pre + key)
    _check_entries(policy.command_whitelist, pre + "command_whitelist")
    for cmd in policy.command_whitelist:
        if cmd.startswith("/"):
            _check_path(cmd, pre + "command_whitelist")
        elif not COMMAND_NAME_RE.fullmatch(cmd):
            raise InvalidInput(
                f"'{cmd}' is neither a command name nor an absolute path "
                "(one program, no arguments)",
                field=pre + "command_whitelist",
            )
    unknown = [m for m in policy.disabled_methods if m not in agent_protocol.METHODS]
    if unknown:
        raise InvalidInput(
            f"unknown agent method(s): {', '.join(unknown)}", field=pre + "disabled_methods"
        )
    if not 0 < policy.max_file_size_mb <= MAX_POLICY_FILE_MB:
        raise InvalidInput(
            f"max_file_size_mb must be above 0 and at most {MAX_POLICY_FILE_MB:g} "
            "(the agent's own cap)",
            field=pre + "max_file_size_mb",
        )
    if not 1 <= policy.max_command_timeout_seconds <= MAX_POLICY_TIMEOUT:
        raise InvalidInput(
            f"max_command_timeout_seconds must be 1 to {MAX_POLICY_TIMEOUT:g}",
            field=pre + "max_command_timeout_seconds",
        )
    try:
        agent_config.Config(agent_config_data(policy))
    except agent_config.ConfigError as exc:  # the agent's own loader: the last word
        raise InvalidInput(
            f"the agent would refuse this config: {exc}", field="agent_policy"
        ) from None


def agent_config_data(policy: AgentPolicy) -> dict[str, Any]:
    """The agent's config file for `policy` (merged by the agent over its defaults)."""
    return {
        "disabled_methods": list(policy.disabled_methods),
        "security": {
            "allowed_read_paths": list(policy.allowed_read_paths),
            "allowed_write_paths": list(policy.allowed_write_paths),
            "command_whitelist": list(policy.command_whitelist),
            "max_file_size_mb": policy.max_file_size_mb,
            "max_command_timeout_seconds": policy.max_command_timeout_seconds,
        },
    }


def _agent_commands(spec: CloudInitSpec) -> list[Any]:
    """runcmd entries: install the agent from the seed (it stays in the CD-ROM drive:
    mounted by label; the installer registers and starts the service), and with a
    policy, restart an agent that was on the disk before (it started before
    write_files)."""
    policy = spec.agent_policy is not None
    if not spec.install_agent:
        return [["sh", "-c", f"if [ -e {AGENT_PYZ} ]; then {RESTART_AGENT}; fi"]] if policy else []
    script = (
        f"set -e; had=0; [ -e {AGENT_PYZ} ] && had=1; "
        'd=$(mktemp -d); mount -o ro LABEL=cidata "$d"; '
        f'{DPKG_KEEP_CONFIG} sh "$d/{AGENT_DIR}/install.sh"; umount "$d"; rmdir "$d"'
    )
    if policy:
        script += f"; if [ $had = 1 ]; then {RESTART_AGENT}; fi"
    return [["sh", "-c", script]]


def user_data(spec: CloudInitSpec) -> str:
    users: list[Any] = ["default"]
    for u in spec.users:
        entry: dict[str, Any] = {"name": u.name, "shell": u.shell}
        if u.ssh_authorized_keys:
            entry["ssh_authorized_keys"] = [k.strip() for k in u.ssh_authorized_keys]
        hashed = u.passwd_hash or (sha512_crypt(u.password) if u.password else None)
        if hashed:
            entry["passwd"], entry["lock_passwd"] = hashed, False
        else:
            entry["lock_passwd"] = True
        if u.sudo:
            entry["sudo"] = "ALL=(ALL) NOPASSWD:ALL"
        users.append(entry)
    cfg: dict[str, Any] = {
        "hostname": spec.hostname,
        "preserve_hostname": False,
        "users": users,
        "ssh_pwauth": any(u.passwd_hash or u.password for u in spec.users),
    }
    if spec.packages:
        cfg["packages"] = list(spec.packages)
    if spec.agent_policy is not None:
        # write_files runs in cloud-init's init stage, runcmd (the install) in its final
        # stage: the agent's first start already reads this file.
        content = json.dumps(agent_config_data(spec.agent_policy), indent=2) + "\n"
        cfg["write_files"] = [
            {
                "path": AGENT_CONFIG_PATH,
                "content": content,
                "owner": "root:root",
                "permissions": "0644",
            }
        ]
    runcmd: list[Any] = []
    if spec.reset_identity:
        runcmd.append(["sh", "-c", RESET_MACHINE_ID])
    runcmd.extend(_agent_commands(spec))
    if runcmd:
        cfg["runcmd"] = runcmd
    return cloud_config(cfg)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the agent's config file) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def cloud_config(cfg: dict[str, Any]) -> str:
    return "#cloud-config\n" + yaml.dump(cfg, Dumper=_Dumper, sort_keys=False)


def meta_data(spec: CloudInitSpec, instance_id: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": spec.hostname})


def network_config() -> str:
    """DHCP on every Ethernet NIC, whatever the guest names them."""
    cfg = {
        "version": 2,
        "ethernets": {"all": {"match": {"name": "e*"}, "dhcp4": True, "dhcp6": False}},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def validate_user_data(text: str) -> None:
    """cloud-init's own schema check (Debian package cloud-init), when installed."""
    exe = shutil.which("cloud-init")
    if exe is None:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kvmm-ud-") as fh:
        fh.write(text)
        fh.flush()
        r = subprocess.run(
            [exe, "schema", "--config-file", fh.name], capture_output=True, text=True, timeout=60
        )
    if r.returncode != 0:
        raise InvalidInput(
            f"user-data does not validate: {(r.stderr or r.stdout).strip()}", field="spec"
        )


def _iso_name(i: int) -> str:
    return f"/F{i:07d}.;1"


def build_seed_iso(files: dict[str, bytes], agent_iso: Path | None = None) -> bytes:
    """A NoCloud seed: ISO 9660 (label cidata) with Joliet and Rock Ridge long names;
    with `agent_iso`, its whole tree is copied under /kvmm-agent/."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    keep: list[io.BytesIO] = []
    for i, (name, data) in enumerate(files.items()):
        buf = io.BytesIO(data)
        keep.append(buf)
        iso.add_fp(buf, len(data), _iso_name(i), rr_name=name, joliet_path=f"/{name}")
    if agent_iso is not None:
        _copy_tree(iso, agent_iso, keep)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _copy_tree(iso: pycdlib.PyCdlib, agent_iso: Path, keep: list[io.BytesIO]) -> None:
    """Copy every directory and file of the agent ISO (Rock Ridge names) below
    /kvmm-agent/; ISO 9660 names are generated, guests read the long names."""
    src = pycdlib.PyCdlib()
    src.open(str(agent_iso))
    counter = iter(range(1_000_000))
    iso_dirs = {"/": "/KVMMAGNT"}
    try:
        iso.add_directory("/KVMMAGNT", rr_name=AGENT_DIR, joliet_path=f"/{AGENT_DIR}")
        for dirpath, _dirs, names in src.walk(rr_path="/"):
            rel = dirpath.strip("/")
            if rel:
                parent = iso_dirs["/" + rel.rsplit("/", 1)[0] if "/" in rel else "/"]
                iso_dirs[dirpath] = f"{parent}/D{next(counter):07d}"
                iso.add_directory(
                    iso_dirs[dirpath],
                    rr_name=rel.rsplit("/", 1)[-1],
                    joliet_path=f"/{AGENT_DIR}/{rel}",
                )
            for n in names:
                buf = io.BytesIO()
                src.get_file_from_iso_fp(buf, rr_path=f"/{rel}/{n}" if rel else f"/{n}")
                keep.append(buf)
                size = buf.tell()
                buf.seek(0)
                iso.add_fp(
                    buf,
                    size,
                    f"{iso_dirs[dirpath]}/F{next(counter):07d}.;1",
                    rr_name=n,
                    joliet_path=f"/{AGENT_DIR}/{rel}/{n}" if rel else f"/{AGENT_DIR}/{n}",
                )
    finally:
        src.close()


def reseed_bytes(old: bytes, hostname: str, settings: Settings) -> bytes:
    """A clone's seed from its source's: the same user-data with the new hostname, a
    fresh machine id and instance id (`settings`: where the agent ISO is, when the seed
    installs the agent)."""
    files = read_seed_files(old)
    try:
        cfg = yaml.safe_load(files["user-data"].decode()) or {}
    except (KeyError, yaml.YAMLError) as exc:
        raise InvalidInput(f"the source's seed has no readable user-data: {exc}") from exc
    cfg["hostname"], cfg["preserve_hostname"] = hostname, False
    runcmd = [c for c in cfg.get("runcmd") or [] if c != ["sh", "-c", RESET_MACHINE_ID]]
    cfg["runcmd"] = [["sh", "-c", RESET_MACHINE_ID], *runcmd]
    ud = cloud_config(cfg)
    validate_user_data(ud)
    meta = yaml.safe_dump({"instance-id": f"kvmm-{uuidlib.uuid4()}", "local-hostname": hostname})
    new = {
        "meta-data": meta.encode(),
        "user-data": ud.encode(),
        "network-config": files.get("network-config", network_config().encode()),
    }
    agent = None
    if any(AGENT_DIR in str(c) for c in runcmd):
        from kvmmanager.iso.locator import require_iso

        agent = require_iso(settings).path
    return build_seed_iso(new, agent)


class CloudInitService:
    def __init__(
        self,
        settings: Settings,
        registry: HostRegistry,
        storage: StorageService,
        vms: VmService,
    ) -> None:
        """`settings`: where the agent ISO is found or built, for seeds that install it."""
        self._settings = settings
        self._registry = registry
        self._storage = storage
        self._vms = vms

    def seed(self, spec: CloudInitSpec, instance_id: str) -> bytes:
        """The seed ISO's bytes (blocking: builds the agent ISO on first use)."""
        validate_spec(spec)
        ud = user_data(spec)
        validate_user_data(ud)
        files = {
            "meta-data": meta_data(spec, instance_id).encode(),
            "user-data": ud.encode(),
            "network-config": network_config().encode(),
        }
        agent = None
        if spec.install_agent:
            from kvmmanager.iso.locator import require_iso

            agent = require_iso(self._settings).path
        return build_seed_iso(files, agent)

    async def provision(
        self,
        host: str,
        *,
        name: str,
        pool: str,
        image: str,
        size_gib: float,
        spec: CloudInitSpec,
        image_pool: str | None = None,
        mode: str = "linked",
        network: str | None = None,
        vcpus: int = 1,
        memory_mib: int = 1024,
        kernel: str | None = None,
        initrd: str | None = None,
        cmdline: str | None = None,
        start: bool = True,
        owner: str | None = None,
        created_by: str | None = None,
        host_paths: bool = False,
        seed: bool = True,
    ) -> dict[str, Any]:
        """Define (and start) a VM booting `image` (a volume of `image_pool`, default
        `pool`) with a seed (none with `seed=False`: an image that configures itself,
        or one without cloud-init). `kernel` (+ `initrd`, `cmdline`): paths of pool
        volumes (any host path with `host_paths`, an admin's) for a direct kernel boot,
        for images that carry no bootloader (a bare root file system)."""
        validate_name(name, "name")
        validate_spec(spec)
        if mode not in ("linked", "full"):
            raise InvalidInput("mode must be linked or full", field="mode")
        if not isinstance(size_gib, int | float) or size_gib <= 0:
            raise InvalidInput("size_gib must be a positive number", field="size_gib")
        if kernel is None and (initrd or cmdline):
            raise InvalidInput("initrd and cmdline need a kernel", field="kernel")
        if kernel is not None and not host_paths:
            # Checked before anything is made; vms.create checks again (install.kernel).
            found = await self._vms.run(host, boot_volumes, kernel, initrd, kind="read")
            for path, what in ((kernel, "kernel"), (initrd, "initrd")):
                if path and path not in found:
                    raise InvalidInput(
                        f"{path} is not a volume of any storage pool: upload the {what} "
                        "into a pool and give the volume's path",
                        field=what,
                    )
        if cmdline is not None and (len(cmdline) > MAX_CMDLINE or "\n" in cmdline):
            raise InvalidInput("cmdline is too long or has several lines", field="cmdline")
        src_pool = image_pool or pool
        hc = self._registry.get(host)
        disk_name, seed_name = f"{name}-disk0.qcow2", f"{name}{SEED_SUFFIX}"

        def prepare(conn: libvirt.virConnect) -> tuple[str, str, int]:
            try:
                conn.lookupByName(name)
                raise Conflict(f"a vm named '{name}' already exists on host '{host}'", field="name")
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
            p = _pool(conn, pool, "pool")
            sp = p if src_pool == pool else _pool(conn, src_pool, "image_pool")
            try:
                src = sp.storageVolLookupByName(image)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
                raise NotFound(
                    f"no image volume '{image}' in pool '{src_pool}'", field="image"
                ) from exc
            # A disk a VM writes to is no image: an overlay or copy of it would be torn.
            refuse_unusable_disk(src, src_pool, paths_used_by_others(conn, None), "image")
            info = Volume.from_xml(src.XMLDesc(0))
            existing = set(p.listVolumes())
            for n in (disk_name, seed_name) if seed else (disk_name,):
                if n in existing:
                    raise Conflict(f"volume '{n}' already exists in pool '{pool}'", field="name")
            return src.path(), info.target_format or "raw", int(info.capacity or 0)

        image_path, image_format, image_size = await hc.run(
            lambda: prepare(hc.conn), kind="read", op="cloud-init prepare"
        )
        size = int(size_gib * GIB)
        if size < image_size:
            raise InvalidInput(
                f"size_gib {size_gib} is smaller than the image ({image_size / GIB:.2f} GiB)",
                field="size_gib",
            )
        instance_id = f"kvmm-{uuidlib.uuid4()}"
        seed_bytes = await asyncio.to_thread(self.seed, spec, instance_id) if seed else None
        if kernel is not None:
            install = InstallSource(kind="kernel", kernel=kernel, initrd=initrd, cmdline=cmdline)
            disks = [DiskSpec(pool=pool, volume=disk_name)]
        else:
            install = InstallSource(kind="import", pool=pool, volume=disk_name)
            disks = []
        made: list[str] = []
        defined = False
        try:
            await hc.run(
                lambda: _make_disk(hc.conn, pool, disk_name, image_path, image_format, size, mode),
                kind="job",  # copies the image: as long as it takes (keepalive bounds a freeze)
                op="copy the cloud image",
            )
            made.append(disk_name)
            if seed_bytes is not None:
                await self._storage.upload_volume(
                    host,
                    pool,
                    seed_name,
                    [seed_bytes],
                    size=len(seed_bytes),
                    create=True,
                    format="raw",
                )
                made.append(seed_name)
            vm_spec = VmSpec(
                name=name,
                vcpus=vcpus,
                memory_mib=memory_mib,
                install=install,
                disks=disks,
                nics=[NicSpec(network=network)] if network else [],
                description=f"cloud-init: {spec.hostname}",
                owner=owner,
            )
            created = await self._vms.create(
                host, vm_spec, created_by=created_by, host_paths=host_paths
            )
            defined = True
            if seed_bytes is not None:
                await self._vms.edit.insert_media(host, name, pool, seed_name)
            if start:
                await self._vms.action(host, name, "start")
        except BaseException:
            await asyncio.shield(self._cleanup(host, name if defined else None, pool, made))
            raise
        return {
            "host": host,
            "name": name,
            "uuid": created["vm"].uuid,
            "disk": disk_name,
            "seed": seed_name if seed_bytes is not None else None,
            "mode": mode,
            "instance_id": instance_id,
            "hostname": spec.hostname,
            "agent": spec.install_agent,
            "agent_policy": (
                agent_config_data(spec.agent_policy) if spec.agent_policy is not None else None
            ),
            "started": start,
        }

    async def reseed(
        self, host: str, cdroms: list[str], new_name: str
    ) -> tuple[str, str, str, str] | None:
        """A clone's identity reset: when one of the source's CD-ROM media (`cdroms`,
        host paths) is a cloud-init seed, make `<new_name>-seed.iso` beside it with the
        same user-data and network-config but a new instance-id and hostname, and a
        machine-id reset; cloud-init then treats the clone as a new instance (new SSH
        host keys, hostname, machine-id). Returns (old path, pool, new volume, new path)
        or None when the source has no seed. The caller attaches and, on failure,
        deletes the new volume."""
        hc = self._registry.get(host)
        found = None
        for path in cdroms:
            data = await hc.run(
                lambda p=path: read_seed(hc.conn, p), kind="lifecycle", op="read the seed"
            )
            if data is not None:
                found = (path, data)
                break
        if found is None:
            return None
        old_path, old_seed = found
        hostname = hostname_for(new_name)
        new_seed = await asyncio.to_thread(reseed_bytes, old_seed, hostname, self._settings)
        pool_name = await hc.run(
            lambda: hc.conn.storageVolLookupByPath(old_path).storagePoolLookupByVolume().name(),
            kind="read",
            op="seed pool lookup",
        )
        vol = f"{new_name}{SEED_SUFFIX}"
        await self._storage.upload_volume(
            host, pool_name, vol, [new_seed], size=len(new_seed), create=True, format="raw"
        )
        path = await hc.run(
            lambda: hc.conn.storagePoolLookupByName(pool_name).storageVolLookupByName(vol).path(),
            kind="read",
            op="seed volume lookup",
        )
        return old_path, pool_name, vol, path

    async def _cleanup(self, host: str, name: str | None, pool: str, volumes: list[str]) -> None:
        """Remove what a failed provision made: its VM (only when it defined it) and
        its volumes."""
        hc = self._registry.get(host)

        def rm(conn: libvirt.virConnect) -> None:
            if name is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    dom = conn.lookupByName(name)
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
            p = conn.storagePoolLookupByName(pool)
            for v in volumes:
                with contextlib.suppress(libvirt.libvirtError):
                    p.storageVolLookupByName(v).delete(0)

        with contextlib.suppress(KvmmError):
            await hc.run(lambda: rm(hc.conn), kind="lifecycle", op="remove half-made volumes")


def _make_disk(
    conn: libvirt.virConnect, pool: str, name: str, image: str, fmt: str, size: int, mode: str
) -> None:
    p = conn.storagePoolLookupByName(pool)
    if mode == "linked":
        p.createXML(build_volume_xml(name, size, "qcow2", backing=(image, fmt)), 0)
        return
    vol = p.createXMLFrom(
        build_volume_xml(name, size, "qcow2"), conn.storageVolLookupByPath(image), 0
    )
    if int(vol.info()[1]) < size:
        vol.resize(size, 0)


def _pool(conn: libvirt.virConnect, name: str, field: str) -> libvirt.virStoragePool:
    try:
        p = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        raise NotFound(f"no storage pool '{name}'", field=field) from exc
    if not p.isActive():
        raise Conflict(f"pool '{name}' is not active", field=field)
    return p


def hostname_for(vm_name: str) -> str:
    """A DNS label for a VM name: other characters become '-', at most 63."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", vm_name).strip("-")[:63].strip("-")
    return label or "vm"


def read_seed_files(data: bytes) -> dict[str, bytes]:
    """meta-data, user-data and network-config of a seed ISO (by their long names)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    out = {}
    try:
        for name in ("meta-data", "user-data", "network-config"):
            buf = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            except pycdlib.pycdlibexception.PyCdlibInvalidInput:
                continue
            out[name] = buf.getvalue()
    finally:
        iso.close()
    return out
