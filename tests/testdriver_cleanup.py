"""A test's own objects in libvirt's test driver (`test:///default`: one in-memory host per
process, shared by every test of that process), removed by name prefix so a test leaves
nothing for the next one and never touches another test's objects."""

from __future__ import annotations

import contextlib

import libvirt

TEST_URI = "test:///default"
TEST_POOL = "default-pool"


def purge(prefix: str, *, volumes: bool = True) -> None:
    """Every domain whose name starts with `prefix` (stopped first, its snapshots with
    it) and, with `volumes`, the test pool's volumes of that prefix."""
    with contextlib.closing(libvirt.open(TEST_URI)) as conn:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        if volumes:
            for vol in conn.storagePoolLookupByName(TEST_POOL).listAllVolumes(0):
                if vol.name().startswith(prefix):
                    vol.delete(0)
