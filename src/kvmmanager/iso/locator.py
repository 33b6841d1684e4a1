"""Find the agent ISO to deploy: the configured path, then an ordered list of fallbacks.

Order: `agent.iso_path`, each entry of `agent.iso_search`, $XDG_DATA_HOME/kvm-manager/,
/usr/share/kvm-manager/, the package's own data, and finally "build it now" into
<data_dir>/iso/. A candidate is used only if it is a readable KVMM_AGENT ISO of the
current agent version; every candidate is reported with why it was or was not used
(doctor prints the list). When nothing current exists and building is impossible,
the first readable ISO of another version is used, with a warning in its reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import KvmmError, NotFound
from kvmmanager.iso import ISO_NAME, VOLUME_LABEL, agent_version


@dataclass(slots=True)
class Candidate:
    source: str  # config | search | xdg | system | package | build
    path: str
    used: bool = False
    reason: str = ""
    version: str | None = None


@dataclass(slots=True)
class IsoLocation:
    path: Path | None
    source: str | None
    version: str | None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def current(self) -> bool:
        return self.path is not None and self.version == agent_version()


def read_iso_version(path: Path) -> str:
    """The VERSION file of an agent ISO; raises ValueError when it is not one."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (PyCdlibException, OSError) as exc:
        raise ValueError(f"not an ISO 9660 image ({exc})") from exc
    try:
        label = iso.pvd.volume_identifier.decode(errors="replace").strip()
        if label != VOLUME_LABEL:
            raise ValueError(f"volume label is {label!r}, not {VOLUME_LABEL}")
        out = _BytesSink()
        try:
            iso.get_file_from_iso_fp(out, rr_path="/VERSION")
        except PyCdlibException as exc:
            raise ValueError("no VERSION file on the ISO") from exc
        return out.data.decode(errors="replace").strip()
    finally:
        iso.close()


class _BytesSink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)


def candidate_paths(settings: Settings) -> list[tuple[str, Path]]:
    def as_file(p: Path) -> Path:
        # A directory (existing, or named without a suffix) means the ISO inside it.
        if p.is_file():
            return p
        return p / ISO_NAME if p.is_dir() or not p.suffix else p

    out: list[tuple[str, Path]] = []
    if settings.agent.iso_path:
        out.append(("config", as_file(Path(settings.agent.iso_path).expanduser())))
    for entry in settings.agent.iso_search:
        out.append(("search", as_file(Path(entry).expanduser())))
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    out.append(("xdg", Path(xdg) / "kvm-manager" / ISO_NAME))
    out.append(("system", Path("/usr/share/kvm-manager") / ISO_NAME))
    # scripts/release puts the ISO into the wheel next to this module.
    out.append(("package", Path(__file__).parent / ISO_NAME))
    return out


def build_target(settings: Settings) -> Path:
    return settings.data_dir / "iso" / ISO_NAME


def locate_iso(settings: Settings, *, build: bool = True) -> IsoLocation:
    """Walk the candidates; with `build`, make a current ISO when none is found."""
    want = agent_version()
    candidates: list[Candidate] = []
    stale: Candidate | None = None
    chosen: Candidate | None = None
    for source, path in candidate_paths(settings):
        cand = Candidate(source=source, path=str(path))
        candidates.append(cand)
        if chosen is not None:
            cand.reason = f"not needed: {chosen.source} was used"
            continue
        if not path.exists():
            cand.reason = "does not exist"
            continue
        if not os.access(path, os.R_OK):
            cand.reason = "not readable by this user"
            continue
        try:
            cand.version = read_iso_version(path)
        except ValueError as exc:
            cand.reason = str(exc)
            continue
        if cand.version != want:
            cand.reason = f"version {cand.version}, this manager ships {want}"
            stale = stale or cand
            continue
        cand.used, cand.reason = True, f"current version {want}"
        chosen = cand

    target = build_target(settings)
    built = Candidate(source="build", path=str(target))
    candidates.append(built)
    if chosen is None and build:
        try:
            from kvmmanager.iso.builder import build_iso

            result = build_iso(target)
        except KvmmError as exc:
            built.reason = f"cannot build: {exc.message}"
        except OSError as exc:
            built.reason = f"cannot build: {exc}"
        else:
            built.used, built.version = True, result.version
            built.reason = f"built version {result.version} now"
            chosen = built
    elif chosen is None:
        built.reason = "not tried now; deploy builds the ISO here when no other one is found"
    else:
        built.reason = f"not needed: {chosen.source} was used"

    if chosen is None and stale is not None:
        stale.used = True
        stale.reason += " (used anyway: no current ISO could be found or built)"
        chosen = stale
    if chosen is None:
        return IsoLocation(path=None, source=None, version=None, candidates=candidates)
    return IsoLocation(
        path=Path(chosen.path), source=chosen.source, version=chosen.version, candidates=candidates
    )


def require_iso(settings: Settings, *, build: bool = True) -> IsoLocation:
    loc = locate_iso(settings, build=build)
    if loc.path is None:
        tried = "; ".join(f"{c.source} {c.path}: {c.reason}" for c in loc.candidates)
        raise NotFound(
            f"no agent ISO found (tried {tried}); run: kvm-manager agent-iso build",
            field="agent.iso_path",
        )
    return loc
