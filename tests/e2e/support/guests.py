"""One test guest driven through the manager: create, install the agent, start, wait.

A Guest knows the facts the scenarios check the agent against (hostname, IP, MAC,
data disk size) because it chose them.
"""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Api, ApiError
from .console import ConsoleLog, qemu_log
from .events import EventWatcher, agent_event, lifecycle_event

LIBVIRT_URI = "qemu:///system"
DATA_DISK_GIB = 0.0625  # 64 MiB: enough for an ext2 file system with a 20 MB file
MEMORY_MIB = 384


@dataclass
class Guest:
    api: Api
    watcher: EventWatcher
    name: str
    mode: str  # agent | qga | hostile
    ip: str
    log_dir: Path
    kernel: str
    initrd: str
    echo_port: str | None = None
    uuid: str = ""
    mac: str = ""
    created: dict[str, Any] = field(default_factory=dict)
    consoles: list[ConsoleLog] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def hostname(self) -> str:
        return self.name

    @property
    def cmdline(self) -> str:
        words = [
            "console=ttyS0",
            "quiet",
            f"kvmm.mode={self.mode}",
            f"kvmm.hostname={self.hostname}",
            f"kvmm.ip={self.ip}/24",
        ]
        if self.echo_port:
            words.append(f"kvmm.echo={self.echo_port}")
        return " ".join(words)

    # ---- lifecycle through the API -----------------------------------------------------
    def create(self, pool: str, network: str) -> dict:
        spec = {
            "name": self.name,
            "vcpus": 1,
            "memory_mib": MEMORY_MIB,
            "install": {
                "kind": "kernel",
                "kernel": self.kernel,
                "initrd": self.initrd,
                "cmdline": self.cmdline,
            },
            "disks": [{"pool": pool, "size_gib": DATA_DISK_GIB}],
            "nics": [{"network": network}],
            "description": "kvmm-e2e test guest",
            "tags": ["kvmm-e2e"],
            "start": False,
        }
        self.created = self.api.create_vm(spec)
        vm = self.created.get("vm", self.created)
        self.uuid = vm.get("uuid", "")
        self.mac = self.nic_macs()[0]
        return self.created

    def domain_xml(self) -> ET.Element:
        return ET.fromstring(self.api.vm_xml(self.name))

    def nic_macs(self) -> list[str]:
        return [
            m.get("address", "").lower()
            for m in self.domain_xml().findall("./devices/interface/mac")
        ]

    def start(self) -> int:
        mark = self.watcher.mark()
        self.started_at = time.monotonic()
        self.api.action(self.name, "start")
        self.watcher.wait(lifecycle_event(self.name, "running"), timeout=60, after=mark)
        self.capture_console()
        return mark

    def capture_console(self) -> None:
        path = self.log_dir / f"{self.name}.console.log"
        try:
            self.consoles.append(ConsoleLog(LIBVIRT_URI, self.name, path).start())
        except Exception as exc:  # a missing console must not hide the real failure
            path.open("a").write(f"\n(console capture failed: {exc})\n")

    def wait_agent(self, after: int, channel: str = "kvmm", timeout: float = 180) -> float:
        """Waits for the agent to be connected (by event), then until a ping answers
        (the client may still be syncing). Returns seconds since start()."""
        started = time.monotonic()
        self.watcher.wait(agent_event(self.name, "connected", channel), timeout, after)
        if channel == "kvmm":
            self.wait_agent_ping(after, timeout=timeout - (time.monotonic() - started))
        return time.monotonic() - (self.started_at or started)

    def wait_agent_ping(self, after: int, timeout: float = 120) -> None:
        """Pings until one answers; between tries, waits (at most 10 s) for the next
        agent event of this VM rather than spinning."""
        deadline = time.monotonic() + timeout
        while True:
            mark = self.watcher.mark()
            try:
                self.api.ping(self.name)
                return
            except ApiError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
            pred = lambda e: (  # noqa: E731
                e.get("kind") == "domain.agent" and (e.get("data") or {}).get("name") == self.name
            )
            with contextlib.suppress(AssertionError):
                self.watcher.wait(pred, timeout=min(left, 10), after=mark)

    def wait_console(self, text: str, timeout: float = 60, after: int = 0) -> None:
        """Waits until the serial console shows `text` (after offset `after`): the
        guest's own account of an event the manager cannot see (e.g. a supervisor
        restart)."""
        deadline = time.monotonic() + timeout
        while text not in self.console_text()[after:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: console never showed {text!r}")
            time.sleep(0.2)

    def console_text(self) -> str:
        path = self.log_dir / f"{self.name}.console.log"
        return path.read_text(errors="replace") if path.exists() else "(no console log)"

    def report(self) -> str:
        return (
            f"===== serial console of {self.name} =====\n{self.console_text()[-20000:]}\n"
            f"===== /var/log/libvirt/qemu/{self.name}.log =====\n{qemu_log(self.name)[-8000:]}"
        )

    def remove(self) -> None:
        """Destroy and delete with its volumes; tolerant of a VM already gone."""
        for console in self.consoles:
            console.close()
        for step in (
            lambda: self.api.action(self.name, "destroy"),
            lambda: self.api.delete_vm(self.name),
        ):
            with contextlib.suppress(ApiError):
                step()
