"""The guest's OS, as osinfo-db names it, kept in the domain's libosinfo metadata as
virt-manager keeps it (test driver): written by create, shown by the inventory, and kept
through an edit, a clone and an export/import."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
from tests.testdriver_cleanup import purge

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.portability.import_plan import ImportOptions
from kvmmanager.services.vms.spec import DiskSpec, VmSpec
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.libosinfo import NS_URI

PREFIX = "kvmm-t-osmeta-"
DEBIAN = "http://debian.org/debian/11"


@pytest.fixture
async def source(manager: Any) -> Any:
    await manager.registry.get("local").wait_connected(30)
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    spec = VmSpec(
        name=name, memory_mib=64, os_id=DEBIAN, disks=[DiskSpec(pool="default-pool", size_gib=1)]
    )
    await manager.vms.create("local", spec)
    try:
        yield name
    finally:
        await asyncio.to_thread(purge, PREFIX)


async def _os_id(manager: Any, name: str) -> str | None:
    xml = await manager.vms.xml("local", name, inactive=True)
    return Domain.from_xml(xml).os_info.os_id


async def test_create_writes_libosinfo_metadata_and_the_inventory_reads_it(
    manager: Any, source: str
) -> None:
    xml = await manager.vms.xml("local", source, inactive=True)
    assert f'xmlns:libosinfo="{NS_URI}"' in xml and f'<libosinfo:os id="{DEBIAN}"/>' in xml, xml
    assert manager.vms.get("local", source).os.osinfo_id == DEBIAN


async def test_the_os_survives_edit_clone_and_export(manager: Any, source: str) -> None:
    await manager.vms.set_tags("local", source, ["kvmm-t-os"])
    await manager.vms.set_description("local", source, "edited")
    await manager.vms.edit.set_memory("local", source, 96)
    assert await _os_id(manager, source) == DEBIAN

    clone = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    await manager.clones.clone("local", source, clone)
    assert await _os_id(manager, clone) == DEBIAN

    exported = await manager.export.export_xml("local", source)
    assert Domain.from_xml(exported).os_info.os_id == DEBIAN
    copy = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    diskless = re.sub(r"<disk\b.*?</disk>", "", exported, flags=re.S)
    await manager.export.import_xml("local", diskless, ImportOptions(name=copy))
    assert await _os_id(manager, copy) == DEBIAN


async def test_an_os_id_that_is_no_uri_is_refused_naming_the_field(manager: Any) -> None:
    await manager.registry.get("local").wait_connected(30)
    spec = VmSpec(name=f"{PREFIX}bad", memory_mib=64, os_id="debian11<script>")
    with pytest.raises(InvalidInput) as err:
        await manager.vms.create("local", spec)
    assert err.value.field == "os_id"
