"""The create flow's OS data from Debian's osinfo-db (the real database, read as data)."""

from __future__ import annotations

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.vms import osinfo


@pytest.fixture(autouse=True)
def _needs_osinfo_db() -> None:
    if not osinfo.available():
        pytest.fail("osinfo-db is missing: scripts/setup --dev installs it")


def test_search_matches_every_word_newest_first() -> None:
    found = osinfo.search("debian")
    assert found[0].released >= found[-1].released
    assert all("debian" in f"{o.name} {o.short_id}".lower() for o in found)
    assert [o.short_id for o in osinfo.search("debian 11")] == ["debian11"]
    assert osinfo.search("no such os anywhere") == []


def test_defaults_follow_what_the_os_supports() -> None:
    deb = osinfo.defaults("debian11")
    assert (deb.memory_mib, deb.vcpus, deb.disk_gib) == (1024, 1, 20)
    assert (deb.disk_bus, deb.nic_model, deb.firmware) == ("virtio", "virtio", "bios")
    assert "what osinfo-db recommends for Debian 11" in deb.reasons[0]
    win = osinfo.defaults("win11")
    assert (win.disk_bus, win.nic_model, win.firmware) == ("sata", "e1000", "uefi")
    assert any("does not boot with BIOS" in r for r in win.reasons)


def test_an_unknown_os_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as e:
        osinfo.defaults("nosuchos1")
    assert e.value.field == "os" and "nosuchos1" in e.value.message


def test_an_os_inherits_what_the_os_it_derives_from_says() -> None:
    """Generic Linux 2022 says `<resources arch="all" inherit="true"/>` and lists no
    devices of its own: both come from the entries it derives from, as libosinfo reads
    them (4 GiB and 25 GiB, virtio)."""
    linux = osinfo.defaults("linux2022")
    assert (linux.memory_mib, linux.disk_gib) == (4096, 25)
    assert "what osinfo-db recommends" in linux.reasons[0]
    assert (linux.disk_bus, linux.nic_model) == ("virtio", "virtio")
