"""The ISO side of OS detection without a host: the primary volume descriptor of an
image pycdlib made is read, and its ids matched against osinfo-db's install media as
libosinfo matches them."""

from __future__ import annotations

import pytest
from tests.kvmmanager.iso_images import DEBIAN_NETINST, make_iso

from kvmmanager.services.vms import osinfo
from kvmmanager.services.vms.iso_detect import HEAD, IsoIdentity, match_os, parse_pvd


def test_the_descriptor_of_a_real_iso_is_read_from_its_first_34_kib() -> None:
    head = make_iso(DEBIAN_NETINST)[:HEAD]
    assert HEAD == 34 * 1024
    assert parse_pvd(head) == IsoIdentity(DEBIAN_NETINST, "LINUX", "KVMM", "KVMM TEST")


def test_what_is_no_iso_has_no_descriptor() -> None:
    assert parse_pvd(b"QFI\xfb" + bytes(HEAD)) is None  # a qcow2 header
    assert parse_pvd(make_iso(DEBIAN_NETINST)[: HEAD - 1]) is None  # cut short


@pytest.mark.parametrize(
    ("identity", "short_id"),
    [
        (IsoIdentity(DEBIAN_NETINST, "LINUX", "", ""), "debian11"),
        (IsoIdentity("Ubuntu-Server 22.04.3 LTS amd64", "", "", ""), "ubuntu22.04"),
        (IsoIdentity("KVMM_NOT_AN_OS", "LINUX", "", ""), None),
        # Every regex an entry names must be found in its field: blank ids match none.
        (IsoIdentity("", "", "", ""), None),
    ],
)
def test_ids_are_matched_as_libosinfo_does(identity: IsoIdentity, short_id: str | None) -> None:
    if not osinfo.available():
        pytest.fail("osinfo-db is missing: scripts/setup --dev installs it")
    found = match_os(identity)
    assert (found.short_id if found else None) == short_id
