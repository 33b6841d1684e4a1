"""VM migration between the manager's hosts: POST .../vms/{vm}/migration/check answers
the pre-flight (409/422 naming what would fail), POST .../vms/{vm}/migrate starts a
`vm.migrate` job (202; cancel it through the jobs API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted

router = APIRouter(tags=["migration"], responses=ERROR_RESPONSES)
VM = "/api/hosts/{host}/vms/{vm}"


class MigrateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="name of the destination host")
    live: bool = Field(True, description="false: offline migration of a stopped VM")
    copy_storage: bool = Field(False, description="copy local disks to the target")
    auto_converge: bool = False
    post_copy: bool = False
    compressed: bool = False
    bandwidth_mib: int | None = Field(
        None, ge=1, le=1_000_000, description="cap the migration's bandwidth (MiB/s)"
    )
    migrate_uri: str | None = Field(
        None,
        max_length=300,
        description="tcp://HOST[:PORT] the data goes to; default: the target URI's host",
    )


class MigrationPlan(BaseModel):
    vm: str
    uuid: str
    from_: str = Field(alias="from")
    to: str
    live: bool
    copy_disks: list[str]


def _options(body: MigrateBody) -> dict[str, Any]:
    return body.model_dump(exclude={"target"})


@router.post(
    VM + "/migration/check",
    name="migration.check",
    response_model=MigrationPlan,
    response_model_by_alias=True,
)
async def check(host: str, vm: str, body: MigrateBody, manager: ManagerDep) -> Any:
    """What the migration would do, or the first reason it cannot work."""
    plan = await manager.migration.check(host, vm, body.target, **_options(body))
    return {k: v for k, v in plan.items() if k != "flags"}


@router.post(
    VM + "/migrate",
    name="migration.start",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobStarted,
)
async def migrate(
    host: str,
    vm: str,
    body: MigrateBody,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict[str, Any]:
    job_id = await manager.migration.start(host, vm, body.target, user=user, **_options(body))
    return {"job_id": job_id}
