"""What the volume copy (storage/clone.py) and the volume streams (transfer.py) use of the
storage service, as a protocol: StorageService (service.py) builds on both modules and
hands itself to them, so neither imports service.py back. Also what the storage service
uses of the owner records and the job runner: the Manager passes OwnershipService and
JobService; the local ISO deploy (no database, guest/iso_deploy.py) passes stand-ins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kvmmanager.services.jobs.service import JobProgress
from kvmmanager.services.storage.xml import VolumeDetails
from kvmmanager.services.users.service import Principal
from kvmmanager.virt.calls import CallKind


class VolumeOwners(Protocol):
    """Who made a volume (services/users/ownership.py: OwnershipService)."""

    def record_new_volume(
        self, principal: Principal | None, host: str, pool: str, volume: str
    ) -> None: ...
    def forget_volume(self, host: str, pool: str, volume: str) -> None: ...


class JobStarter(Protocol):
    """Runs a job in the background (services/jobs/service.py: JobService)."""

    def start(
        self,
        kind: str,
        target: str,
        fn: Callable[[JobProgress], Any],
        user: Any = None,
        *,
        host: str = "",
    ) -> str: ...


class StorageCalls(Protocol):
    @property
    def ownership(self) -> VolumeOwners: ...
    @property
    def jobs(self) -> JobStarter: ...
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
