"""Method handlers, one module per group, imported on first use.

Lazy on purpose: an idle agent should not carry subprocess, hashlib (OpenSSL) and the
rest in memory until a host actually asks for exec, transfers or services.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator

    # collections.abc.Mapping cannot be subscripted at run time on Python 3.8 (and the
    # agent does not import typing at run time), so only the checker sees the parameters.
    _HandlerMapping = Mapping[str, Callable[..., Any]]
else:
    _HandlerMapping = Mapping


GROUPS = {
    "system": ("ping", "sync", "get_agent_info", "get_system_info", "get_disk_usage"),
    "network": ("get_network_info",),
    "exec": ("exec_command", "exec_start", "exec_poll"),
    "files": ("file_read", "file_write", "file_stat"),
    "transfer": ("file_open", "file_read_chunk", "file_write_chunk", "file_close"),
    "power": ("shutdown", "reboot"),
    "freeze": ("fsfreeze_freeze", "fsfreeze_thaw", "fsfreeze_status"),
    "services": ("service_status", "service_action"),
    "users": ("get_users",),
    "clock": ("get_time", "set_time"),
    "sshkeys": ("ssh_authorized_keys",),
    "metrics": ("get_metrics",),
    "processes": ("list_processes",),
}
OWNER = {name: group for group, names in GROUPS.items() for name in names}


class LazyHandlers(_HandlerMapping):
    """name -> handler function, importing the owning module when first asked."""

    def __init__(self) -> None:
        self._loaded: Dict[str, Callable[..., Any]] = {}

    def __getitem__(self, name: str) -> Callable[..., Any]:
        fn = self._loaded.get(name)
        if fn is None:
            group = OWNER[name]
            module = importlib.import_module("." + group, __name__)
            fn = module.HANDLERS[name]
            self._loaded[name] = fn
        return fn

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in OWNER else default

    def __iter__(self) -> Iterator[str]:
        return iter(OWNER)

    def __len__(self) -> int:
        return len(OWNER)


HANDLERS = LazyHandlers()
