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


def test_a_query_for_an_os_newer_than_the_database_gets_its_family() -> None:
    """Debian 12's own osinfo-db (20221130) has no Debian 12: "debian 12", "debian12"
    and "bookworm" found nothing and nothing was offered. Now the newest Debian it knows
    comes first for the first two, and the newest generic Linux for all three."""
    for query in ("debian 12", "debian12", "bookworm"):
        if osinfo.search(query):
            pytest.skip(f"this host's osinfo-db knows {query!r}")
        near = osinfo.nearest(query)
        assert near.db_version, "the database's VERSION"
        assert [c.short_id for c in near.generic] == ["linux2022"]
        if query != "bookworm":
            assert near.family and near.family[0].short_id == "debian11", near.family
    assert [c.short_id for c in osinfo.search("bullseye")] == ["debian11"]  # by codename


DEBIAN12 = """<libosinfo version="0.0.1">
  <os id="http://debian.org/debian/12">
    <short-id>debian12</short-id>
    <name>Debian 12</name>
    <vendor>Debian Project</vendor>
    <codename>bookworm</codename>
    <release-date>2023-06-10</release-date>
    <derives-from id="http://debian.org/debian/11"/>
  </os>
</libosinfo>
"""


def test_a_newer_database_in_the_local_folder_adds_its_oses(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `osinfo-db-import --local` installs (/etc/osinfo, as libosinfo reads it)
    is read over the system's database: Debian 12 is found by name, short id and codename,
    and inherits Debian 11's devices."""
    local = tmp_path / "osinfo"  # type: ignore[operator]
    (local / "os" / "debian.org").mkdir(parents=True)
    (local / "os" / "debian.org" / "debian-12.xml").write_text(DEBIAN12)
    (local / "VERSION").write_text("20991231")
    monkeypatch.setenv("OSINFO_LOCAL_DIR", str(local))
    forget = (osinfo._db.cache_clear, osinfo._all.cache_clear)
    for clear in forget:
        clear()
    try:
        for query in ("debian 12", "debian12", "bookworm"):
            assert [c.short_id for c in osinfo.search(query)] == ["debian12"], query
        assert osinfo.nearest("debian 13").db_version == "20991231"
        assert osinfo.defaults("debian12").disk_bus == "virtio"
    finally:
        monkeypatch.undo()
        for clear in forget:
            clear()
