"""How a disk-only snapshot of a running VM is made consistent, and how consistent it is.

Methods, best first:
- ``kvmm-agent``: the project's agent freezes every filesystem (FIFREEZE) with an
  automatic thaw after ``FREEZE_LIMIT_SECONDS`` (the safety net if the manager or the
  host connection dies), libvirt snapshots, the manager thaws at once;
- ``qemu-ga``: libvirt's ``VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE`` (qemu-guest-agent freezes
  and thaws around the snapshot inside libvirt);
- ``none``: crash-consistent, as if the power had been cut; the result says so.

Snapshots that carry the memory state, or of a stopped VM, need no freeze at all.
A VM whose metadata says ``<kvmm:agent quiesce='never'>`` is never frozen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from kvmmanager.core.errors import AgentUnavailable, InvalidInput, KvmmError

log = logging.getLogger(__name__)

# The longest the guest's filesystems may stay frozen: the agent thaws by itself then.
FREEZE_LIMIT_SECONDS = 30
# How long the manager waits for the thaw call itself.
THAW_TIMEOUT_SECONDS = 15
QuiesceRequest = Literal["auto", "never", "require"]
QUIESCE_REQUESTS = ("auto", "never", "require")


@dataclass
class Consistency:
    method: str  # kvmm-agent | qemu-ga | none | not-needed
    level: str  # full-state | offline | quiesced | crash-consistent
    frozen_seconds: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Filesystems that are read-only by nature (FIFREEZE answers EOPNOTSUPP on them).
READ_ONLY_FS = frozenset({"iso9660", "udf", "squashfs", "erofs", "cramfs"})


def freezable(filesystems: list[dict[str, Any]]) -> list[str]:
    """Mount points worth freezing, from the agent's get_disk_usage: block-device
    filesystems that can be written."""
    return [
        f["mount_point"]
        for f in filesystems
        if str(f.get("device", "")).startswith("/dev/")
        and f.get("fs_type") not in READ_ONLY_FS
        and isinstance(f.get("mount_point"), str)
    ]


def choose(
    request: str,
    vm_policy: str | None,
    needs_freeze: bool,
    memory: bool,
    agent_status: str,
    qga_status: str,
) -> Consistency:
    """The method for this snapshot (nothing is frozen yet)."""
    if request not in QUIESCE_REQUESTS:
        raise InvalidInput(f"quiesce must be one of {', '.join(QUIESCE_REQUESTS)}", field="quiesce")
    if not needs_freeze:
        level = "full-state" if memory else "offline"
        why = "memory state included" if memory else "the VM is not running"
        return Consistency("not-needed", level, message=f"no freeze needed: {why}")
    if request == "never" or (vm_policy == "never" and request != "require"):
        who = "the request" if request == "never" else "the VM's quiesce policy ('never')"
        return Consistency("none", "crash-consistent", message=f"not quiesced: {who} says so")
    if agent_status == "connected":
        return Consistency("kvmm-agent", "quiesced")
    if qga_status == "connected":
        return Consistency("qemu-ga", "quiesced", message="frozen by qemu-guest-agent via libvirt")
    if request == "require":
        raise AgentUnavailable(
            "quiesce 'require': no guest agent (kvmmanager or qemu-guest-agent) is connected",
            field="quiesce",
        )
    return Consistency(
        "none", "crash-consistent", message="not quiesced: no guest agent is connected"
    )


async def frozen(
    c: Consistency,
    freeze: Callable[[float], Awaitable[Any]],
    thaw: Callable[[], Awaitable[Any]],
    take: Callable[[], Awaitable[Any]],
    *,
    required: bool = False,
) -> Any:
    """Run `take()` inside a freeze by the project's agent (when `c` says so), bounded by
    FREEZE_LIMIT_SECONDS; updates `c` with the frozen time and the real consistency.

    A freeze the agent refuses fails the snapshot only when quiescing was `required`;
    otherwise the snapshot is taken crash-consistent and says why."""
    if c.method != "kvmm-agent":
        return await take()
    try:
        await freeze(FREEZE_LIMIT_SECONDS)
    except KvmmError as exc:
        if required:
            raise
        log.warning("freeze before snapshot failed: %s", exc.message)
        c.method, c.level = "none", "crash-consistent"
        c.message = f"not quiesced: the kvmmanager agent could not freeze ({exc.message})"
        return await take()
    started = time.monotonic()
    try:
        return await take()
    finally:
        c.frozen_seconds = round(time.monotonic() - started, 3)
        try:
            async with asyncio.timeout(THAW_TIMEOUT_SECONDS):
                await thaw()
            thawed = "thawed by the manager"
        except (KvmmError, TimeoutError) as exc:
            # The agent's own deadline thaws the guest anyway; say so rather than fail a
            # snapshot that was taken.
            log.warning("thaw after snapshot failed: %s", exc)
            thawed = f"thaw failed ({exc}); the agent thaws by itself after the limit"
        if c.frozen_seconds >= FREEZE_LIMIT_SECONDS:
            c.level = "crash-consistent"
            c.message = (
                f"the snapshot took {c.frozen_seconds:.1f} s, longer than the "
                f"{FREEZE_LIMIT_SECONDS} s freeze limit: the guest thawed itself before it "
                f"ended, so treat it as crash-consistent; {thawed}"
            )
        else:
            c.message = (
                f"filesystems frozen {c.frozen_seconds:.3f} s by the kvmmanager agent; {thawed}"
            )
