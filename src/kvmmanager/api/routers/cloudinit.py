"""Cloud-image provisioning: POST /api/hosts/{host}/vms/from-cloud-image.

The disk is a linked (qcow2 overlay) or full copy of the image at the requested size;
a NoCloud seed (hostname, users with SSH keys and/or password hash, packages, and by
default the project's agent installer) goes in the CD-ROM. Bad input is a 4xx naming
the field (bad SSH key, size below the image, unknown image or pool, name taken);
anything made before a failure is removed again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.cloudinit import CloudImageCreate, CloudImageCreated
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.services.users.ownership import check_owner_field

router = APIRouter(tags=["vms"], responses=ERROR_RESPONSES)


@router.post(
    "/api/hosts/{host}/vms/from-cloud-image",
    name="cloudinit.create",
    status_code=status.HTTP_201_CREATED,
    response_model=CloudImageCreated,
)
async def create_from_cloud_image(
    host: str,
    body: CloudImageCreate,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict[str, Any]:
    """Create (and by default start) a VM from a cloud image with a cloud-init seed."""
    check_owner_field(user, body.owner)
    boot = body.boot
    # The image is read into the new disk: the caller's to read.
    manager.ownership.check_volumes(user, host, [(body.image_pool or body.pool, body.image)])
    if boot is not None:
        manager.ownership.check_volume_paths(user, host, boot.kernel, boot.initrd)
    return await manager.cloudinit.provision(
        host,
        name=body.name,
        pool=body.pool,
        image=body.image,
        image_pool=body.image_pool,
        size_gib=body.size_gib,
        spec=body.cloud_init,
        mode=body.mode,
        network=body.network,
        vcpus=body.vcpus,
        memory_mib=body.memory_mib,
        kernel=boot.kernel if boot else None,
        initrd=boot.initrd if boot else None,
        cmdline=boot.cmdline if boot else None,
        start=body.start,
        owner=body.owner or user.username,
        created_by=user.username,
        # Only an admin may boot a kernel from a host path; others from pool volumes.
        host_paths=user.has_role("admin"),
    )
