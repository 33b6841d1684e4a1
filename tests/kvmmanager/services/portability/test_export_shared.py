"""Export bundles of instances sharing a database (issue 16 item 3): with
`fleet.exports_dir` naming one directory they all reach, a bundle one instance wrote is
downloaded through another; without it, the other instance says where the bundle is and
what to set, instead of a bare "not found". On SQLite and PostgreSQL.

The bundle's bytes are written where ExportService.export_bundle writes them, with its
owner row, as the export job leaves them (a real export needs libvirtd's volume download:
tests/kvmmanager/api/test_export_bundle_api.py); what is tested here is where instances
look for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.postgres_cluster import db_url  # noqa: F401 (fixture)

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import NotFound
from kvmmanager.services.manager import Manager


def _instance(settings: Settings, url: str, data_dir: Path, exports: Path | None) -> Manager:
    own = settings.model_copy(deep=True)
    own.database.url = url
    own.data_dir = data_dir
    if exports is not None:
        own.fleet.exports_dir = exports
    m = Manager(own)
    m.prepare_database()
    return m


def _export_on(m: Manager) -> str:
    """A bundle as m's export job leaves it: the owner row, then the file."""
    bundle_id = uuid.uuid4().hex
    m.ownership.record_bundle(bundle_id, "admin")
    (m.export.bundle_dir() / f"{bundle_id}.tar.gz").write_bytes(b"kvmm-t-bundle")
    return bundle_id


@pytest.fixture
def managers() -> Iterator[list[Manager]]:
    made: list[Manager] = []
    yield made
    for m in made:
        m.engine.dispose()


def test_a_bundle_made_on_one_instance_is_downloaded_through_another(
    settings: Settings,
    db_url: str,  # noqa: F811
    tmp_path: Path,
    managers: list[Manager],
) -> None:
    shared = tmp_path / "shared-exports"
    a = _instance(settings, db_url, tmp_path / "a", shared)
    b = _instance(settings, db_url, tmp_path / "b", shared)
    managers += [a, b]
    bundle_id = _export_on(a)
    assert b.export.bundle_path(bundle_id).read_bytes() == b"kvmm-t-bundle"
    # ...and removed through B, it is gone for A too.
    b.export.delete_bundle(bundle_id)
    with pytest.raises(NotFound):
        a.export.bundle_path(bundle_id)


def test_an_instance_without_the_bundle_file_says_where_it_is_and_what_to_set(
    settings: Settings,
    db_url: str,  # noqa: F811
    tmp_path: Path,
    managers: list[Manager],
) -> None:
    a = _instance(settings, db_url, tmp_path / "a", None)
    b = _instance(settings, db_url, tmp_path / "b", None)
    managers += [a, b]
    bundle_id = _export_on(a)
    with pytest.raises(NotFound) as missing:
        b.export.bundle_path(bundle_id)
    said = missing.value.message
    assert bundle_id in said and str(tmp_path / "b" / "exports") in said
    assert "another manager instance" in said and "fleet.exports_dir" in said
    # An id nobody made stays a plain "not found".
    with pytest.raises(NotFound) as unknown:
        b.export.bundle_path(uuid.uuid4().hex)
    assert "fleet.exports_dir" not in unknown.value.message
