"""HostRegistry: host name -> running HostConnection.

Only the runtime side lives here (starting and stopping connections); the list of hosts
is persisted by `kvmmanager.services.hosts.service`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from kvmmanager.core.config import LibvirtSettings, Settings
from kvmmanager.core.errors import Conflict, HostUnavailable, InvalidInput, NotFound
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.inventory import DomainInfo, Inventory
from kvmmanager.virt.preopen import AheadOpens

HOST_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_URI_LENGTH = 1024


def validate_host_name(name: str) -> str:
    if not isinstance(name, str) or not HOST_NAME_RE.match(name):
        raise InvalidInput(
            "host name must be 1-63 characters of lowercase letters, digits and '-', "
            "starting with a letter or digit",
            field="name",
        )
    return name


def validate_uri(uri: str) -> str:
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInput("uri must not be empty", field="uri")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidInput(f"uri must be at most {MAX_URI_LENGTH} characters", field="uri")
    if any(ord(c) < 0x20 or c == "\x7f" or c.isspace() for c in uri):
        raise InvalidInput("uri must not contain spaces or control characters", field="uri")
    scheme = urlsplit(uri).scheme
    if not scheme or not re.match(r"^[a-z][a-z0-9]*(\+[a-z0-9]+)?$", scheme):
        raise InvalidInput(
            "uri must be a libvirt URI such as qemu:///system or qemu+ssh://user@host/system",
            field="uri",
        )
    return uri


class HostRegistry:
    def __init__(
        self,
        settings: LibvirtSettings | Settings,
        bus: EventBus,
        inventory: Inventory,
        ahead: AheadOpens | None = None,
    ) -> None:
        self.settings = settings.libvirt if isinstance(settings, Settings) else settings
        self.bus = bus
        self.inventory = inventory
        # Connections `serve` began opening before the Manager started (virt/preopen.py).
        self.ahead = ahead
        self._hosts: dict[str, HostConnection] = {}

    async def add(self, name: str, uri: str) -> HostConnection:
        """Start a connection for the host; it connects (and reconnects) in the background."""
        validate_host_name(name)
        validate_uri(uri)
        if name in self._hosts:
            raise Conflict(f"host '{name}' already exists", field="name")
        host = HostConnection(name, uri, self.bus, self.inventory, self.settings, self.ahead)
        self._hosts[name] = host
        await host.start()
        return host

    async def remove(self, name: str) -> None:
        host = self.get(name)
        del self._hosts[name]
        await host.stop()
        self.inventory.clear_host(name)

    def get(self, name: str) -> HostConnection:
        host = self._hosts.get(name)
        if host is None:
            raise NotFound(f"host '{name}' not found", field="host")
        return host

    def domain(self, host: str, vm: str) -> DomainInfo:
        """VM `vm` (name or UUID) of `host` from the inventory. While the host is not
        connected its VMs are unknown, so a VM missing from the inventory is not "not
        found": the answer says the host is not reachable and why."""
        conn = self.get(host)
        try:
            return self.inventory.domain(host, vm)
        except NotFound:
            if conn.connected:
                raise
            reason = f" ({conn.status_reason})" if conn.status_reason else ""
            raise HostUnavailable(
                f"host '{host}' is not reachable: it is {conn.status}{reason}; its VMs, "
                f"'{vm}' among them, cannot be looked up until it connects",
                field="host",
            ) from None

    def all(self) -> list[HostConnection]:
        return [self._hosts[n] for n in sorted(self._hosts)]

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    async def close(self) -> None:
        """Stop every connection (manager shutdown); the inventory is left as it was."""
        hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            await host.stop()
