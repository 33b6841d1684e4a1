"""The doctor's checks: plain functions over a libvirt connection, each answering ok /
warn / fail with the one command that fixes it (see services.doctor for the reports).

Blocking: run them in the host's worker thread. Checks of the machine itself (/dev/kvm,
groups, dnsmasq) only make sense for local URIs; collect_checks skips them otherwise.
"""

from __future__ import annotations

import grp
import hashlib
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt

from kvmmanager.iso import agent_version
from kvmmanager.iso.locator import IsoLocation
from kvmmanager.iso.volume_names import volume_name, volume_version
from kvmmanager.virt.probe import AccelInfo, probe_dev_kvm
from kvmmanager.virt.xml.capabilities import Capabilities, DomainCapabilities
from kvmmanager.virt.xml.volume import Volume

OK, WARN, FAIL = "ok", "warn", "fail"
LEVEL = {OK: 0, WARN: 1, FAIL: 2}
LOW_SPACE_BYTES = 1 << 30


@dataclass(slots=True)
class Check:
    name: str
    status: str
    message: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CheckContext:
    host: str
    uri: str
    local: bool
    network: str
    pool: str
    accel: AccelInfo | None
    iso: IsoLocation | None
    iso_sha256: str | None
    cli_host: str = ""  # appended to the fix commands: " --host NAME" for non-local hosts
    # How to deploy: through the server, or `--local` when doctor runs without one.
    deploy_cmd: str = "kvm-manager agent-iso deploy"

    def deploy_fix(self, pool: str) -> str:
        # A --local deploy names its target by URI already; a server deploy by --host.
        host = "" if " --local" in self.deploy_cmd else self.cli_host
        return f"{self.deploy_cmd} --pool {pool}{host}"


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def check_libvirt(conn: libvirt.virConnect, ctx: CheckContext) -> Check:
    lib, hv = _version(conn.getLibVersion()), _version(conn.getVersion())
    return Check(
        "libvirt",
        OK,
        f"libvirt {lib}, {conn.getType()} {hv} at {ctx.uri}",
        data={"libvirt": lib, "hypervisor": hv},
    )


def check_accel(ctx: CheckContext) -> Check:
    if ctx.accel is None:
        return Check("kvm", WARN, "not probed", "kvm-manager host show " + ctx.host)
    if ctx.accel.accel == "kvm":
        return Check("kvm", OK, f"KVM usable: {ctx.accel.reason}", data=ctx.accel.to_dict())
    return Check(
        "kvm",
        WARN,
        f"TCG only (software emulation, slow): {ctx.accel.reason}",
        tcg_fix(ctx.accel.reason),
        data=ctx.accel.to_dict(),
    )


FIRMWARE_FIX = "enable VT-x/AMD-V in the firmware, then: modprobe kvm_intel  (or kvm_amd)"
NESTED_FIX = (
    "KVM is there but QEMU cannot run a guest on it: this host is itself a VM whose "
    "hypervisor does not give it full virtualisation (nested KVM). On the outer host, give "
    "this VM the host's CPU (host-passthrough) with nested virtualisation on, or keep TCG"
)
SLOW_FIX = (
    "KVM starts guests but runs them slower than emulation (typical of nested KVM): on the "
    "outer host, give this VM the host's CPU (host-passthrough) with nested virtualisation "
    "on, or keep TCG"
)


def tcg_fix(reason: str) -> str:
    """The fix for what the probe saw: only a missing KVM is fixed in the firmware; a KVM
    that exists but fails QEMU (an MSR assertion, a probe guest that would not start or ran
    slower than emulation) is nested virtualisation, fixed on the outer host."""
    if "offers no kvm" in reason:
        return FIRMWARE_FIX
    if "slower than emulation" in reason or "without reaching" in reason:
        return SLOW_FIX
    if "could not start" in reason:
        return NESTED_FIX
    return FIRMWARE_FIX


def check_dev_kvm(path: str = "/dev/kvm") -> Check:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check("dev_kvm", WARN, f"{path} does not exist", "modprobe kvm_intel  (or kvm_amd)")
    group = _group_name(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    data = {"group": group, "mode": f"{mode:04o}"}
    if group != "kvm" or mode & 0o060 != 0o060:
        return Check(
            "dev_kvm",
            WARN,
            f"{path} is {mode:04o} {group}: QEMU may not open it (libvirt re-probes on every call)",
            f"chgrp kvm {path} && chmod 0660 {path}",
            data,
        )
    works, why = probe_dev_kvm(path)
    status = OK if works is not False else WARN
    return Check("dev_kvm", status, f"{path} {mode:04o} group kvm; {why}", None, data)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_access(ctx: CheckContext) -> Check:
    if os.geteuid() == 0:
        return Check("access", OK, "running as root")
    groups = {_group_name(g) for g in os.getgroups()}
    member = sorted(groups & {"libvirt", "kvm"})
    if "libvirt" in member:
        return Check("access", OK, f"member of {', '.join(member)}", data={"groups": member})
    return Check(
        "access",
        OK,
        f"connected to {ctx.uri} without the libvirt group (polkit or socket rights allow it)",
        data={"groups": member},
    )


def check_network(conn: libvirt.virConnect, ctx: CheckContext) -> Check:
    name = ctx.network
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise
        return Check(
            "network",
            FAIL,
            f"network '{name}' is not defined",
            f"kvm-manager net create {name} --address 192.168.122.1{ctx.cli_host}",
        )
    if not net.isActive():
        return Check(
            "network",
            FAIL,
            f"network '{name}' is defined but not active",
            f"kvm-manager net start {name}{ctx.cli_host}",
            {"autostart": bool(net.autostart())},
        )
    return Check("network", OK, f"network '{name}' is active", data={"bridge": net.bridgeName()})


def check_dnsmasq() -> Check:
    found = shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.path.exists(p)), None
    )
    if found:
        return Check("dnsmasq", OK, f"dnsmasq at {found}")
    return Check(
        "dnsmasq",
        FAIL,
        "dnsmasq is missing: NAT networks cannot start",
        "apt-get install dnsmasq-base  (Fedora: dnf install dnsmasq)",
    )


def check_pool(conn: libvirt.virConnect, ctx: CheckContext) -> Check:
    name = ctx.pool
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        return Check(
            "pool",
            FAIL,
            f"storage pool '{name}' does not exist",
            ctx.deploy_fix(name) + "  (creates 'default')"
            if name == "default"
            else f"kvm-manager pool create {name} --target DIR{ctx.cli_host}",
        )
    if not pool.isActive():
        return Check(
            "pool",
            FAIL,
            f"storage pool '{name}' is not active",
            f"kvm-manager pool start {name}{ctx.cli_host}",
        )
    _state, capacity, _alloc, available = pool.info()
    data = {"pool": name, "capacity": capacity, "available": available}
    if available < LOW_SPACE_BYTES:
        return Check(
            "pool",
            WARN,
            f"storage pool '{name}' has only {available >> 20} MiB free",
            f"free space in the pool's directory, or: kvm-manager pool list{ctx.cli_host}",
            data,
        )
    return Check("pool", OK, f"storage pool '{name}': {available / 2**30:.1f} GiB free", None, data)


def _volume_sha256(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> str:
    h = hashlib.sha256()
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)

    def sink(_stream: libvirt.virStream, data: bytes, _opaque: object) -> int:
        h.update(data)
        return len(data)

    stream.recvAll(sink, None)
    stream.finish()
    return h.hexdigest()


def check_iso_local(ctx: CheckContext) -> Check:
    loc = ctx.iso
    rows = [asdict(c) for c in loc.candidates] if loc else []
    if loc is not None and loc.path is not None and loc.current:
        return Check("agent_iso_local", OK, f"{loc.path} ({loc.source})", data={"candidates": rows})
    from kvmmanager.core.errors import KvmmError
    from kvmmanager.iso.packages import nfpm_binary, packaging_dirs

    try:
        packaging_dirs()
        nfpm_binary()
    except KvmmError as exc:
        return Check(
            "agent_iso_local",
            FAIL,
            f"no current agent ISO and none can be built: {exc.message}",
            "set agent.iso_path in the config to a kvmmanager-guest-agent.iso",
            {"candidates": rows},
        )
    return Check(
        "agent_iso_local",
        WARN,
        "no current agent ISO found; deploy will build one",
        "kvm-manager agent-iso build -o ~/.local/share/kvm-manager/",
        {"candidates": rows},
    )


def check_iso_deployed(conn: libvirt.virConnect, ctx: CheckContext) -> Check:
    fix = ctx.deploy_fix(ctx.pool)
    want = volume_name(agent_version())
    try:
        pool = conn.storagePoolLookupByName(ctx.pool)
        if not pool.isActive():
            return Check("agent_iso", FAIL, f"pool '{ctx.pool}' is not active", fix)
        names = pool.listVolumes()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        return Check("agent_iso", FAIL, f"pool '{ctx.pool}' does not exist", fix)
    if want not in names:
        older = sorted(n for n in names if volume_version(n))
        if older:
            return Check("agent_iso", WARN, f"only older agent ISOs: {', '.join(older)}", fix)
        return Check("agent_iso", FAIL, f"agent ISO {want} is not in pool '{ctx.pool}'", fix)
    vol = pool.storageVolLookupByName(want)
    mode = Volume.from_xml(vol.XMLDesc(0)).target_mode
    data = {"volume": want, "path": vol.path(), "mode": mode}
    if ctx.iso_sha256 is not None:
        data["sha256"] = _volume_sha256(conn, vol)
        if data["sha256"] != ctx.iso_sha256:
            return Check("agent_iso", WARN, "deployed ISO differs from the local one", fix, data)
    if not (mode and int(mode, 8) & 0o004):
        return Check(
            "agent_iso",
            WARN,
            f"{want} is mode {mode}: QEMU reads it only through libvirt's dynamic ownership",
            fix + "  (re-deploy creates it world-readable)",
            data,
        )
    return Check("agent_iso", OK, f"{want} deployed in '{ctx.pool}', current", data=data)


def check_domain_caps(conn: libvirt.virConnect, ctx: CheckContext) -> list[Check]:
    arch = Capabilities.from_xml(conn.getCapabilities()).host_arch
    virttype = ctx.accel.domain_type if ctx.accel else "qemu"
    caps = DomainCapabilities.from_xml(conn.getDomainCapabilities(None, arch, None, virttype, 0))
    serial = caps.supports_virtio_serial()
    out = [
        Check("virtio_serial", OK, "virtio-serial channels supported")
        if serial
        else Check(
            "virtio_serial",
            WARN if serial is None else FAIL,
            "libvirt does not report channel support"
            if serial is None
            else "QEMU offers no unix virtio channel: the agent cannot connect",
            "upgrade libvirt and QEMU (libvirt >= 8, QEMU >= 6)",
        )
    ]
    out.append(check_user_net(caps, ctx))
    if caps.supports_uefi:
        out.append(Check("uefi", OK, "UEFI firmware available", data={"paths": caps.loader_paths}))
    else:
        out.append(
            Check(
                "uefi",
                WARN,
                "no UEFI firmware",
                "apt-get install ovmf  (Fedora: dnf install edk2-ovmf)",
            )
        )
    return out


def check_user_net(caps: DomainCapabilities, ctx: CheckContext) -> Check:
    """User-mode NICs: passt where libvirt offers it (port forwards), else QEMU's slirp."""
    offered = "passt" in caps.interface_backends
    data = {"backends": caps.interface_backends}
    if not offered:
        return Check(
            "user_net",
            WARN,
            "libvirt offers no passt backend (its domain capabilities list none): user-mode "
            "NICs use QEMU's built-in slirp and cannot forward ports",
            "for port forwards: a libvirt whose domain capabilities list passt as an "
            "interface backend (libvirt 9.0.0 refuses it), and apt-get install passt",
            data,
        )
    if ctx.local and shutil.which("passt") is None:
        return Check(
            "user_net",
            WARN,
            "libvirt offers the passt backend but the passt program is not installed: a VM "
            "with a user-mode NIC will not start",
            "apt-get install passt",
            data,
        )
    return Check("user_net", OK, "user-mode NICs use passt (port forwards available)", data=data)


def collect_checks(conn: libvirt.virConnect, ctx: CheckContext) -> list[Check]:
    """Every check over an open connection (blocking: run in a worker thread)."""
    checks = [check_libvirt(conn, ctx), check_accel(ctx)]
    if ctx.local:
        checks += [check_dev_kvm(), check_access(ctx)]
    checks.append(check_network(conn, ctx))
    if ctx.local:
        checks.append(check_dnsmasq())
    checks += [check_pool(conn, ctx), check_iso_local(ctx), check_iso_deployed(conn, ctx)]
    checks += check_domain_caps(conn, ctx)
    return checks
