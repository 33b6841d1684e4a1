"""VM export and import as libvirt domain XML.

GET  /api/hosts/{host}/vms/{vm}/export   the persistent domain XML (viewers may read it,
                                         as they may read /xml; it never holds secrets)
POST /api/hosts/{host}/imports           define a VM from such an XML: renamed on a name
                                         clash, new UUID on a UUID clash or on request,
                                         networks and pools remapped
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, status

from kvmmanager.api.deps import get_manager
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.export import ExportedXml, ImportedVm, ImportXmlIn
from kvmmanager.services.export import ImportOptions
from kvmmanager.services.manager import Manager

router = APIRouter(tags=["export"], responses=ERROR_RESPONSES)


@router.get("/api/hosts/{host}/vms/{vm}/export", name="export.xml", response_model=ExportedXml)
async def export_xml(host: str, vm: str, manager: Manager = Depends(get_manager)) -> Any:
    return {"xml": await manager.export.export_xml(host, vm)}


@router.post(
    "/api/hosts/{host}/imports",
    name="export.import_xml",
    status_code=status.HTTP_201_CREATED,
    response_model=ImportedVm,
)
async def import_xml(host: str, body: ImportXmlIn, manager: Manager = Depends(get_manager)) -> Any:
    """Define (not start) a VM from a libvirt domain XML. Every network and volume it
    refers to must exist on this host (after remapping): 404 naming `network_map` or
    `pool_map` otherwise."""
    opts = ImportOptions(
        name=body.name,
        new_identity=body.new_identity,
        network_map=body.network_map,
        pool_map=body.pool_map,
    )
    return await manager.export.import_xml(host, body.xml, opts)
