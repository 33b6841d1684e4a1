"""Build every release artifact into dist/ (run through scripts/release).

    dist/kvmmanager-<v>-py3-none-any.whl, kvmmanager-<v>.tar.gz      the manager (pip)
    dist/kvmmanager-agent-<av>.pyz                                    the agent zipapp
    dist/kvmmanager-guest-agent-<av>.iso                              the agent ISO
    dist/kvmmanager-agent_<av>-1_all.deb, ...-1.noarch.rpm, ...-r1.apk the agent packages
    dist/kvm-manager_<v>-1_amd64.deb                                  the manager package
    dist/SHA256SUMS, SHA256SUMS.asc                                   checksums, signed

Signing: `--gpg-key FILE` (an exported OpenPGP secret key, `gpg --armor
--export-secret-keys KEYID`) signs the .debs and the .rpm (nfpm) and writes SHA256SUMS.asc
(gpg --detach-sign); `--apk-key FILE` (an RSA private key in PEM) signs the .apk. A
passphrase comes from NFPM_PASSPHRASE. Without keys the artifacts are built unsigned and
the release says so on stderr. docs/operations.md says how a user verifies each artifact.

SOURCE_DATE_EPOCH makes the artifacts byte-reproducible. Without it the agent artifacts
take the same default as `kvm-manager agent-iso build` (kvmmanager.iso.builder's
default_epoch: the last commit that changed the agent), so both give one ISO hash for one
agent version; the manager's take the last commit's time.

The manager .deb carries its virtualenv, built here from the wheels of every runtime
dependency (pinned by constraints.txt, fetched by pip from the configured index):
packaging/venv_build.py.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bundled_copyright import npm_project, render, wheel_project
from venv_build import build_venv

from kvmmanager.iso.packages import APK_KEY_NAME, Signing

ROOT = Path(__file__).resolve().parents[1]
ISO_NAME = "kvmmanager-guest-agent.iso"
PACKAGING = ROOT / "packaging"


def _epoch() -> int:
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(env)
    out = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def _run(*cmd: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def _package_root(tree: Path) -> Path:
    """The npm package a served tree belongs to: the nearest directory with package.json."""
    for path in (tree, *tree.parents):
        if (path / "package.json").is_file():
            return path
    raise SystemExit(f"release: {tree} belongs to no npm package (no package.json above it)")


def stage_vendor(dst: Path, node_modules: Path = ROOT / "node_modules") -> list[Path]:
    """Copy the front-end trees the web UI serves (web/assets.py VENDOR_TREES) from the
    npm packages `npm ci` installed (pinned by package-lock.json) to dst, laid out like
    node_modules, with each package's package.json and licence files. Returns the
    package roots copied (for debian/copyright)."""
    from kvmmanager.web.assets import VENDOR_TREES

    roots: list[Path] = []
    for sub in VENDOR_TREES.values():
        tree = node_modules / sub
        if not tree.is_dir():
            raise SystemExit(f"release: front-end library missing: {tree} (run scripts/setup)")
        # Not the npm packages' pre-gzipped copies: nothing serves them, and their gzip
        # headers carry the npm build's timestamps.
        shutil.copytree(tree, dst / sub, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.gz"))
        pkg = _package_root(tree)
        rel = pkg.relative_to(node_modules)
        for meta in pkg.iterdir():
            upper = meta.name.upper()
            if meta.is_file() and (
                meta.name == "package.json" or upper.startswith(("LICEN", "COPYING", "NOTICE"))
            ):
                (dst / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(meta, dst / rel / meta.name)
        if pkg not in roots:
            roots.append(pkg)
    return roots


def build_python(dist: Path, iso: Path) -> Path:
    """The sdist, and the wheel with the agent ISO and the front-end libraries inside
    (package data), built with setuptools from a copy of the tracked files (no `build`
    frontend needed). Both build in the copy: setuptools makes its sdist tree and egg-info
    relative to its working directory, so two releases built at once from one checkout
    (scripts/test's chroot job beside the packaging tests) would remove each other's."""
    py = sys.executable
    tracked = (
        subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    with tempfile.TemporaryDirectory(prefix="kvmm-release-src-") as tmp:
        src = Path(tmp)
        for rel in filter(None, tracked):
            if (ROOT / rel).is_file():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, src / rel)
        # The sdist before the ISO and front-end libraries are staged: they are the wheel's.
        build_sdist = f"from setuptools import build_meta as b; b.build_sdist({str(dist)!r})"
        _run(py, "-c", build_sdist, cwd=src)
        shutil.copy2(iso, src / "src/kvmmanager/iso" / ISO_NAME)
        stage_vendor(src / "src/kvmmanager/web/vendor")
        _run(
            py,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        )
    (wheel,) = dist.glob("kvmmanager-*.whl")
    return wheel


def agent_epoch() -> int:
    from kvmmanager.iso.builder import default_epoch
    from kvmmanager.iso.packages import PackagingDirs

    return default_epoch(PackagingDirs(PACKAGING))


def build_agent(dist: Path, epoch: int, signing: Signing) -> dict[str, Path]:
    from kvmmanager.iso import agent_version
    from kvmmanager.iso.builder import build_iso
    from kvmmanager.iso.packages import build_agent_packages
    from kvmmanager.iso.zipapp import build_agent_zipapp

    version = agent_version()
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    pyz = build_agent_zipapp(dist / f"kvmmanager-agent-{version}.pyz")
    out = build_agent_packages(pyz, version, dist, epoch=epoch, signing=signing)
    out["pyz"] = pyz
    out["iso"] = build_iso(
        dist / f"kvmmanager-guest-agent-{version}.iso", source_date_epoch=epoch
    ).path
    return out


def copyright_text(wheels: Path, node_modules: Path = ROOT / "node_modules") -> str:
    """packaging/copyright (ours) plus a stanza per bundled wheel and npm package."""
    from kvmmanager.web.assets import VENDOR_TREES

    projects = [wheel_project(w) for w in sorted(wheels.glob("*.whl"))]
    projects = [p for p in projects if p.name != "kvmmanager"]  # covered by "Files: *"
    seen: set[Path] = set()
    for sub in VENDOR_TREES.values():
        pkg = _package_root(node_modules / sub)
        if pkg not in seen:
            seen.add(pkg)
            projects.append(npm_project(pkg, str(pkg.relative_to(node_modules))))
    return render((PACKAGING / "copyright").read_text(), projects)


def build_manager_deb(dist: Path, wheel: Path, iso: Path, epoch: int, signing: Signing) -> Path:
    import kvmmanager
    from kvmmanager.iso.packages import debian_changelog, nfpm_binary, run_nfpm, with_signatures

    version = kvmmanager.__version__
    target = dist / f"kvm-manager_{version}-1_amd64.deb"
    with tempfile.TemporaryDirectory(prefix="kvmm-release-") as tmp:
        stage = Path(tmp) / "stage"
        shutil.copytree(PACKAGING / "manager", stage)
        shutil.copy2(iso, stage / "kvmmanager-guest-agent.iso")
        wheels = Path(tmp) / "wheels"
        wheels.mkdir()
        shutil.copy2(wheel, wheels / wheel.name)
        _run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "-c",
            str(ROOT / "constraints.txt"),
            "-w",
            str(wheels),
            str(wheel),
        )
        build_venv(stage / "venvroot", wheels)
        (stage / "copyright").write_text(copyright_text(wheels))
        man = (stage / "kvm-manager.1").read_bytes()
        (stage / "kvm-manager.1.gz").write_bytes(gzip.compress(man, 9, mtime=0))
        (stage / "changelog.gz").write_bytes(debian_changelog("kvm-manager", version, epoch))
        config = stage / "nfpm.yaml"
        config.write_text(with_signatures(config.read_text(), signing, ("deb",)))
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), KVMM_VERSION=version)
        run_nfpm(stage / "nfpm.yaml", {"deb": target}, cwd=stage, env=env, nfpm=nfpm_binary())
    return target


def write_sums(dist: Path) -> Path:
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted(dist.iterdir())
        if p.is_file() and p.name not in ("SHA256SUMS", "SHA256SUMS.asc")
    ]
    sums = dist / "SHA256SUMS"
    sums.write_text("".join(lines))
    return sums


def sign_sums(sums: Path, gpg_key: Path) -> Path:
    """SHA256SUMS.asc: an armored detached signature by the release key, made in a
    throwaway GNUPGHOME so the releaser's own keyring is neither used nor changed."""
    gpg = shutil.which("gpg")
    if gpg is None:
        raise SystemExit("release: --gpg-key needs gpg (Debian package gnupg)")
    passphrase = os.environ.get("NFPM_PASSPHRASE")
    with tempfile.TemporaryDirectory(prefix="kvmm-release-gpg-") as home:
        env = dict(os.environ, GNUPGHOME=home)
        _run(gpg, "--batch", "--quiet", "--import", str(gpg_key), env=env)
        cmd = [gpg, "--batch", "--yes", "--armor", "--detach-sign"]
        if passphrase:
            cmd += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
        asc = sums.with_name("SHA256SUMS.asc")
        cmd += ["--output", str(asc), str(sums)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, input=(passphrase or "").encode(), check=True)
        # gpg-agent outlives the command otherwise, holding the deleted GNUPGHOME.
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)
    return asc


def _key(parser: argparse.ArgumentParser, flag: str, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).resolve()
    if not path.is_file():
        parser.error(f"{flag} {value}: no such file")
    return path


def _unsigned_notice(signing: Signing) -> str:
    missing = []
    if signing.gpg_key is None:
        missing.append("the .debs, the .rpm and SHA256SUMS (no --gpg-key)")
    if signing.apk_key is None:
        missing.append("the .apk (no --apk-key)")
    return "release: UNSIGNED: " + "; ".join(missing) if missing else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Without --gpg-key/--apk-key the artifacts are built unsigned (said on stderr).",
    )
    parser.add_argument("--dist", default=str(ROOT / "dist"), help="Output directory.")
    parser.add_argument(
        "--gpg-key",
        metavar="FILE",
        help="OpenPGP secret key (gpg --armor --export-secret-keys KEYID) that signs the "
        ".deb and .rpm packages and SHA256SUMS (as SHA256SUMS.asc). Passphrase: NFPM_PASSPHRASE.",
    )
    parser.add_argument(
        "--apk-key",
        metavar="FILE",
        help="RSA private key (PEM, openssl genrsa) that signs the .apk.",
    )
    parser.add_argument(
        "--apk-key-name",
        default=APK_KEY_NAME,
        metavar="NAME",
        help="Name of the .apk's public key in /etc/apk/keys, without .rsa.pub "
        "(default: %(default)s).",
    )
    args = parser.parse_args(argv)
    signing = Signing(
        gpg_key=_key(parser, "--gpg-key", args.gpg_key),
        apk_key=_key(parser, "--apk-key", args.apk_key),
        apk_key_name=args.apk_key_name,
    )
    notice = _unsigned_notice(signing)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    dist = Path(args.dist)
    if dist.exists():
        shutil.rmtree(dist)
    dist.mkdir(parents=True)
    epoch = _epoch()
    agent = build_agent(dist, agent_epoch(), signing)
    wheel = build_python(dist, agent["iso"])
    build_manager_deb(dist, wheel, agent["iso"], epoch, signing)
    sums = write_sums(dist)
    if signing.gpg_key is not None:
        sign_sums(sums, signing.gpg_key)
    for path in sorted(dist.iterdir()):
        print(f"{path.stat().st_size:>12}  {path.name}")
    if notice:  # again at the end, where a reader of the log looks
        print(notice, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
