"""Cloud-init provisioning: a VM from a cloud image volume plus a NoCloud seed ISO.

The seed ISO (label `cidata`, built with pycdlib, uploaded through libvirt's volume
stream) carries `meta-data`, `user-data` and `network-config`. By default it also carries
the project's guest agent installer (the agent ISO's files under `/kvmm-agent/`), and the
user-data runs it at first boot, so the VM comes up with the agent connected.

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
import logging
import re
import shutil
import subprocess
import tempfile
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt
import pycdlib
import yaml
from pydantic import BaseModel, Field

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.services.cloudinit_crypt import sha512_crypt
from kvmmanager.services.storage_xml import build_volume_xml
from kvmmanager.services.vm_spec import (
    MAX_CMDLINE,
    DiskSpec,
    InstallSource,
    NicSpec,
    VmSpec,
    validate_name,
)
from kvmmanager.virt.xml.volume import Volume

if TYPE_CHECKING:
    from kvmmanager.services.manager import Manager

log = logging.getLogger(__name__)
SEED_LABEL = "cidata"
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
SEED_SUFFIX = "-seed.iso"
# A new instance of a copied disk must not keep the source's machine-id: cloud-init runs
# `runcmd` once per instance-id, so a clone's new seed makes each clone get its own.
RESET_MACHINE_ID = (
    "rm -f /etc/machine-id /var/lib/dbus/machine-id; "
    "systemd-machine-id-setup || dbus-uuidgen --ensure=/etc/machine-id"
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
    runcmd: list[Any] = []
    if spec.reset_identity:
        runcmd.append(["sh", "-c", RESET_MACHINE_ID])
    if spec.install_agent:
        # The seed stays in the CD-ROM drive: mount it by label and run the installer the
        # agent ISO ships (it registers and starts the service for the guest's init).
        script = (
            'set -e; d=$(mktemp -d); mount -o ro LABEL=cidata "$d"; '
            f'sh "$d/{AGENT_DIR}/install.sh"; umount "$d"; rmdir "$d"'
        )
        runcmd.append(["sh", "-c", script])
    if runcmd:
        cfg["runcmd"] = runcmd
    return "#cloud-config\n" + yaml.safe_dump(cfg, sort_keys=False)


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


class CloudInitService:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

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

            agent = require_iso(self.m.settings).path
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
    ) -> dict[str, Any]:
        """Define (and start) a VM booting `image` (a volume of `image_pool`, default
        `pool`) with a seed. `kernel` (+ `initrd`, `cmdline`): host paths for a direct
        kernel boot, for images that carry no bootloader (a bare root file system)."""
        validate_name(name, "name")
        validate_spec(spec)
        if mode not in ("linked", "full"):
            raise InvalidInput("mode must be linked or full", field="mode")
        if not isinstance(size_gib, int | float) or size_gib <= 0:
            raise InvalidInput("size_gib must be a positive number", field="size_gib")
        if kernel is None and (initrd or cmdline):
            raise InvalidInput("initrd and cmdline need a kernel", field="kernel")
        if cmdline is not None and (len(cmdline) > MAX_CMDLINE or "\n" in cmdline):
            raise InvalidInput("cmdline is too long or has several lines", field="cmdline")
        src_pool = image_pool or pool
        hc = self.m.registry.get(host)
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
            info = Volume.from_xml(src.XMLDesc(0))
            existing = set(p.listVolumes())
            for n in (disk_name, seed_name):
                if n in existing:
                    raise Conflict(f"volume '{n}' already exists in pool '{pool}'", field="name")
            return src.path(), info.target_format or "raw", int(info.capacity or 0)

        image_path, image_format, image_size = await hc.run(lambda: prepare(hc.conn))
        size = int(size_gib * GIB)
        if size < image_size:
            raise InvalidInput(
                f"size_gib {size_gib} is smaller than the image ({image_size / GIB:.2f} GiB)",
                field="size_gib",
            )
        instance_id = f"kvmm-{uuidlib.uuid4()}"
        seed = await asyncio.to_thread(self.seed, spec, instance_id)
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
                lambda: _make_disk(hc.conn, pool, disk_name, image_path, image_format, size, mode)
            )
            made.append(disk_name)
            await self.m.storage.upload_volume(
                host, pool, seed_name, [seed], size=len(seed), create=True, format="raw"
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
            created = await self.m.vms.create(host, vm_spec, created_by=created_by)
            defined = True
            await self.m.vms.edit.insert_media(host, name, pool, seed_name)
            if start:
                await self.m.vms.action(host, name, "start")
        except BaseException:
            await asyncio.shield(self._cleanup(host, name if defined else None, pool, made))
            raise
        return {
            "host": host,
            "name": name,
            "uuid": created["vm"].uuid,
            "disk": disk_name,
            "seed": seed_name,
            "mode": mode,
            "instance_id": instance_id,
            "hostname": spec.hostname,
            "agent": spec.install_agent,
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
        hc = self.m.registry.get(host)
        found = None
        for path in cdroms:
            data = await hc.run(lambda p=path: _read_seed(hc.conn, p))
            if data is not None:
                found = (path, data)
                break
        if found is None:
            return None
        old_path, old_seed = found
        hostname = hostname_for(new_name)
        new_seed = await asyncio.to_thread(self._reseed_bytes, old_seed, hostname)
        pool_name = await hc.run(
            lambda: hc.conn.storageVolLookupByPath(old_path).storagePoolLookupByVolume().name()
        )
        vol = f"{new_name}{SEED_SUFFIX}"
        await self.m.storage.upload_volume(
            host, pool_name, vol, [new_seed], size=len(new_seed), create=True, format="raw"
        )
        path = await hc.run(
            lambda: hc.conn.storagePoolLookupByName(pool_name).storageVolLookupByName(vol).path()
        )
        return old_path, pool_name, vol, path

    def _reseed_bytes(self, old: bytes, hostname: str) -> bytes:
        files = read_seed_files(old)
        try:
            cfg = yaml.safe_load(files["user-data"].decode()) or {}
        except (KeyError, yaml.YAMLError) as exc:
            raise InvalidInput(f"the source's seed has no readable user-data: {exc}") from exc
        cfg["hostname"], cfg["preserve_hostname"] = hostname, False
        runcmd = [c for c in cfg.get("runcmd") or [] if c != ["sh", "-c", RESET_MACHINE_ID]]
        cfg["runcmd"] = [["sh", "-c", RESET_MACHINE_ID], *runcmd]
        ud = "#cloud-config\n" + yaml.safe_dump(cfg, sort_keys=False)
        validate_user_data(ud)
        meta = yaml.safe_dump(
            {"instance-id": f"kvmm-{uuidlib.uuid4()}", "local-hostname": hostname}
        )
        new = {
            "meta-data": meta.encode(),
            "user-data": ud.encode(),
            "network-config": files.get("network-config", network_config().encode()),
        }
        agent = None
        if any(AGENT_DIR in str(c) for c in runcmd):
            from kvmmanager.iso.locator import require_iso

            agent = require_iso(self.m.settings).path
        return build_seed_iso(new, agent)

    async def _cleanup(self, host: str, name: str | None, pool: str, volumes: list[str]) -> None:
        """Remove what a failed provision made: its VM (only when it defined it) and
        its volumes."""
        hc = self.m.registry.get(host)

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
            await hc.run(lambda: rm(hc.conn))


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


# ISO 9660: the primary volume descriptor is sector 16; its volume id is bytes 40-72.
PVD_OFFSET, PVD_SIZE = 16 * 2048, 2048
MAX_SEED_BYTES = 64 * 1024**2


def _download(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, offset: int, length: int
) -> bytes:
    stream = conn.newStream(0)
    chunks: list[bytes] = []
    try:
        vol.download(stream, offset, length, 0)
        while True:
            data = stream.recv(256 * 1024)
            if not data:
                break
            chunks.append(data)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return b"".join(chunks)


def _read_seed(conn: libvirt.virConnect, path: str) -> bytes | None:
    """The bytes of the volume at `path` when it is a NoCloud seed (ISO labelled
    cidata, small), else None: only its volume descriptor is read otherwise."""
    try:
        vol = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        return None  # not a pool volume: never ours
    size = int(vol.info()[1])
    if size > MAX_SEED_BYTES or size < PVD_OFFSET + PVD_SIZE:
        return None
    try:
        pvd = _download(conn, vol, PVD_OFFSET, PVD_SIZE)
    except libvirt.libvirtError as exc:
        # A driver without volume downloads (libvirt's test driver): cannot be a seed
        # we can read, so the clone keeps the source's media as before.
        log.warning("cannot read %s to look for a cloud-init seed: %s", path, exc)
        return None
    if pvd[1:6] != b"CD001" or pvd[40:72].decode(errors="replace").strip() != SEED_LABEL:
        return None
    return _download(conn, vol, 0, 0)


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
