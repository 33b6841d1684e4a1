"""Does KVM really work on a host, or must guests run under TCG (software emulation)?

Three checks, cheapest first, each through libvirt so a remote host is probed the same way
(only the /dev/kvm check is local-only, and it never decides alone):

1. libvirt's capabilities list a `kvm` domain type for the host's architecture, and the
   domain capabilities for `kvm` can be read.
2. Local hosts: /dev/kvm opens and KVM_CREATE_VM succeeds (skipped when this process may
   not open /dev/kvm: QEMU runs as another user, so that proves nothing).
3. Probe guests: a transient domain with 32 MiB, no disks and no NIC, once with
   `type='kvm'` and once with `type='qemu'`. Its firmware (SeaBIOS) finds nothing to boot
   and idles in HLT, so its vCPU time stops growing; the vCPU seconds it took to get there
   are compared. Real KVM gets there in a fraction of TCG's time. On hosts where
   KVM_CREATE_VM works but guests hang (a VM with paravirtual nested KVM, measured here:
   3.2 s under KVM against 0.33 s under TCG) KVM is slower than emulation, or never gets
   there: then TCG is chosen. Costs about 1-5 s once per connection; x86 only (other
   architectures have no BIOS to idle in: there checks 1 and 2 decide).

The probe starts in the background as soon as a host connects (`start_probe`), bounded by
`libvirt.probe_deadline_seconds`; a VM create waits for it at most
`libvirt.accel_wait_seconds` and then goes on with the last answer this host gave (kept
across reconnects), saying so in the reason; with no earlier answer it is refused with a
clear 503 instead of waiting. The result is cached on the HostConnection (dropped on
reconnect) and can be forced with the `libvirt.accel` setting (`auto` | `kvm` | `tcg`,
env KVMM_LIBVIRT__ACCEL).

Probe guests are named `kvmm-accel-probe-<owner>-<random>` (virt/owner.py): at every
connect the manager removes the probe guests it provably abandoned (its own from an
interrupted probe, or those of a manager process on this machine that is gone, e.g.
killed during its probe), and never another live manager's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import libvirt

from kvmmanager.core.errors import HostUnavailable
from kvmmanager.virt.connection import HostConnection, is_remote_uri
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.helper_guests import PROBE_PREFIX
from kvmmanager.virt.owner import Owner, is_abandoned, this_process
from kvmmanager.virt.xml.capabilities import Capabilities
from kvmmanager.virt.xml.domain import Domain

log = logging.getLogger(__name__)

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12
PROBE_MEMORY_KIB = 32 * 1024
# A guest whose vCPU still burns more than this share of wall time after the deadline
# never reached its firmware's idle loop.
BUSY_SHARE = 0.5
PROBE_DEADLINE_S = 4.0
PROBE_WINDOW_S = 0.5
_X86 = ("x86_64", "i686")
_PROBE_NAME_RE = re.compile(r"^" + re.escape(PROBE_PREFIX) + r"(.+)-([0-9a-f]{4,})$")
# Probe guests this process is running right now (never swept while in use).
_in_use: set[str] = set()
_in_use_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class AccelInfo:
    accel: str  # "kvm" | "tcg"
    reason: str
    source: str = "probe"  # "probe" | "config" | "last known"

    @property
    def domain_type(self) -> str:
        """The <domain type=...> to create guests with."""
        return "kvm" if self.accel == "kvm" else "qemu"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "domain_type": self.domain_type}


def _tcg(reason: str) -> AccelInfo:
    return AccelInfo("tcg", reason)


def probe_dev_kvm(path: str = "/dev/kvm") -> tuple[bool | None, str]:
    """(works, why); works is None when this process may not open the device."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, f"{path} does not exist (KVM module not loaded or no VT-x/AMD-V)"
    except PermissionError:
        return None, f"{path} is not accessible to this process"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        if version != KVM_API_VERSION:
            return False, f"{path} has KVM API version {version}, expected {KVM_API_VERSION}"
        try:
            vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        except OSError as exc:
            code = exc.errno
            name = errno.errorcode.get(code, code) if code is not None else None
            return False, f"KVM_CREATE_VM failed: {name}"
        os.close(vm_fd)
        return True, "KVM_CREATE_VM succeeded"
    finally:
        os.close(fd)


def probe_guest_name(owner: Owner | None = None) -> str:
    return f"{PROBE_PREFIX}{(owner or this_process()).tag}-{secrets.token_hex(3)}"


def probe_guest_owner(name: str) -> Owner | None:
    """The manager process that started this probe guest; None for any other name."""
    m = _PROBE_NAME_RE.match(name)
    return Owner.parse(m[1]) if m else None


def _probe_domain_xml(arch: str, domain_type: str, name: str) -> str:
    dom = Domain(
        type=domain_type,
        name=name,
        memory=PROBE_MEMORY_KIB,
        current_memory=PROBE_MEMORY_KIB,
        vcpus=1,
    )
    dom.os.os_type, dom.os.arch = "hvm", arch
    dom.features.acpi = dom.features.apic = True
    if domain_type == "kvm":
        # Probe what real guests will run: the VM builder gives KVM guests the host's CPU,
        # and on nested hosts that alone can make QEMU abort at start (unsettable MSRs).
        dom.cpu_mode = "host-passthrough"
    dom.on_crash = "destroy"
    return dom.to_xml()


def probe_guest(
    conn: libvirt.virConnect, arch: str, domain_type: str, cpu_budget: float | None = None
) -> tuple[float | None, str]:
    """Start a probe guest; return the vCPU seconds its firmware needed to reach idle
    (None when it did not within the deadline or `cpu_budget` vCPU seconds) and why."""
    what = f"a type='{domain_type}' probe guest"
    name = probe_guest_name()
    with _in_use_lock:
        _in_use.add(name)
    try:
        dom = conn.createXML(_probe_domain_xml(arch, domain_type, name), 0)
    except libvirt.libvirtError as exc:
        with _in_use_lock:
            _in_use.discard(name)
        return None, f"{what} could not start: {libvirt_message(exc)}"
    try:
        start = time.monotonic()
        samples: list[tuple[float, int]] = []
        while True:
            time.sleep(0.1)
            state, _ = dom.state()
            if state != libvirt.VIR_DOMAIN_RUNNING:
                return None, f"{what} stopped running (state {state})"
            now = time.monotonic()
            samples.append((now, dom.info()[4]))
            old = [s for s in samples if s[0] <= now - PROBE_WINDOW_S]
            if old:
                t0, cpu0 = old[-1]
                if (samples[-1][1] - cpu0) / 1e9 / (now - t0) < BUSY_SHARE:
                    cpu = cpu0 / 1e9
                    return cpu, f"{what} reached the firmware's idle loop after {cpu:.2f} s of CPU"
            if cpu_budget is not None and samples[-1][1] / 1e9 > cpu_budget:
                return None, (
                    f"{what} used more CPU than emulation needs ({cpu_budget:.2f} s) "
                    "without reaching the firmware's idle loop"
                )
            if now - start > PROBE_DEADLINE_S:
                return None, (
                    f"{what} kept its vCPU busy for {PROBE_DEADLINE_S:.0f} s without reaching "
                    "the firmware's idle loop"
                )
    finally:
        # A destroy that fails (the connection died meanwhile) leaves the guest to the
        # sweep at the next connect: it is ours and no longer in use.
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        with _in_use_lock:
            _in_use.discard(name)


def sweep_probe_guests(conn: libvirt.virConnect) -> list[str]:
    """Blocking: destroy the probe guests provably abandoned (virt/owner.py); their names."""
    removed = []
    for dom in conn.listAllDomains(0):
        try:
            name = dom.name()
        except libvirt.libvirtError:
            continue
        owner = probe_guest_owner(name)
        if owner is None:
            continue
        with _in_use_lock:
            in_use = name in _in_use
        if not is_abandoned(owner, in_use=in_use):
            continue
        try:
            persistent = dom.isPersistent()  # a transient guest is gone once destroyed
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
        except libvirt.libvirtError as exc:
            log.warning("probe guest %s not removed: %s", name, libvirt_message(exc))
            continue
        removed.append(name)
    return removed


def _compare_guests(conn: libvirt.virConnect, arch: str) -> tuple[bool, str]:
    """KVM must bring the probe guest to idle, and faster than TCG does: on hosts where
    KVM only half works (nested paravirtual KVM) every exit is so slow that emulation wins,
    and real guests hang."""
    tcg_cpu, _ = probe_guest(conn, arch, "qemu")
    kvm_cpu, kvm_why = probe_guest(conn, arch, "kvm", cpu_budget=tcg_cpu)
    if kvm_cpu is None:
        if "could not start" in kvm_why:
            return False, kvm_why
        return False, kvm_why + " (KVM is present but slower than emulation, guests hang)"
    return True, kvm_why


def probe_accel(conn: libvirt.virConnect, *, local: bool) -> AccelInfo:
    """All checks, blocking (run it in the host's worker thread)."""
    caps = Capabilities.from_xml(conn.getCapabilities())
    arch = caps.host_arch or ""
    if not caps.kvm_offered(arch):
        return _tcg(f"libvirt offers no kvm domain type for {arch or 'this host'}")
    try:
        conn.getDomainCapabilities(None, arch, None, "kvm", 0)
    except libvirt.libvirtError as exc:
        return _tcg(f"no domain capabilities for kvm: {libvirt_message(exc)}")
    reasons = ["libvirt offers kvm"]
    if local:
        works, why = probe_dev_kvm()
        if works is False:
            return _tcg(why)
        reasons.append(why)
    if arch not in _X86:
        return AccelInfo("kvm", "; ".join(reasons) + f" (no probe guest on {arch})")
    works, why = _compare_guests(conn, arch)
    if not works:
        return _tcg(why)
    reasons.append(why)
    return AccelInfo("kvm", "; ".join(reasons))


def start_probe(host: HostConnection) -> asyncio.Future[AccelInfo]:
    """The probe of this connection: started now (in the background) unless it runs or
    ran already. One probe per connection, shared by every caller (the task is the cache).
    """
    task: asyncio.Future[AccelInfo] | None = host.cache.get("accel")
    # A task still running on another event loop (a test client's portal, a CLI run) cannot
    # be awaited here: this loop starts its own. A finished one is just its answer.
    if task is not None and (task.done() or task.get_loop() is asyncio.get_running_loop()):
        return task
    local = not is_remote_uri(host.uri)

    async def probe() -> AccelInfo:
        info = await host.run(
            lambda: probe_accel(host.conn, local=local),
            op="accelerator probe",
            deadline=host.settings.probe_deadline_seconds,
        )
        host.facts["accel"] = info  # the last known answer, kept across reconnects
        return info

    task = asyncio.ensure_future(probe())
    host.cache["accel"] = task

    def forget_failure(t: asyncio.Future[AccelInfo]) -> None:
        # A failed probe (host went away, deadline) is retried by the next caller.
        if (t.cancelled() or t.exception() is not None) and host.cache.get("accel") is t:
            del host.cache["accel"]

    task.add_done_callback(forget_failure)
    return task


async def host_accel(
    host: HostConnection, override: str = "auto", wait: float | None = None
) -> AccelInfo:
    """The host's accelerator, probed once per connection unless the config forces one.

    `wait`: wait at most this long for a running probe, then answer with the last known
    answer of this host (source "last known", the reason says why) or refuse with 503."""
    if override in ("kvm", "tcg"):
        return AccelInfo(override, "set by the libvirt.accel setting", source="config")
    task = start_probe(host)
    try:
        async with asyncio.timeout(wait):
            return await asyncio.shield(task)
    except TimeoutError:
        pass
    last: AccelInfo | None = host.facts.get("accel")
    if last is None:
        raise HostUnavailable(
            f"host '{host.name}': the accelerator probe (KVM or emulation?) is still "
            f"running after {wait:g} s and this host has no earlier answer; retry shortly",
            field="host",
        )
    return AccelInfo(
        last.accel,
        f"{last.reason} (last known answer: this connection's probe is still running "
        f"after {wait:g} s)",
        source="last known",
    )
