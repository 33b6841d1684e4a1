"""What the volume copy (storage/clone.py) and the volume streams (transfer.py) use of the
storage service, as a protocol: StorageService (storage.py) builds on both modules and
hands itself to them, so neither imports storage.py back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kvmmanager.services.jobs.service import JobService
from kvmmanager.services.storage.xml import VolumeDetails
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.virt.calls import CallKind


class ManagerParts(Protocol):
    """The two services of the manager that a copy and a stream record into."""

    @property
    def ownership(self) -> OwnershipService: ...
    @property
    def jobs(self) -> JobService: ...


class StorageCalls(Protocol):
    @property
    def _m(self) -> ManagerParts: ...
    def _host(self, host: str) -> Any: ...
    async def _call(
        self, host: str, fn: Callable[..., Any], *args: Any, kind: CallKind | None = None
    ) -> Any: ...
    async def get_volume(self, host: str, pool: str, name: str) -> VolumeDetails: ...
    async def sync_pool(self, host: str, name: str) -> None: ...
    def volume_path_in_use_by(
        self,
        host: str,
        path: str,
        *,
        pool: str | None = None,
        volume: str | None = None,
        running_only: bool = False,
        exclude: str | None = None,
    ) -> list[str]: ...
