"""Builds the kvmm-e2e test guest: Debian's cloud kernel + a busybox/python3 initramfs.

Everything comes from Debian packages fetched with `apt-get download` and unpacked with
`dpkg-deb -x`: no root filesystem, no loop mounts, no root rights. The agent is NOT in
the image; the guest's init installs it from the agent ISO like an administrator would
(see files/init.sh). The same image also runs Debian's stock qemu-guest-agent
(`kvmm.mode=qga`) and a hostile port writer (`kvmm.mode=hostile`).

The result is cached in `<repo>/.cache/e2e-guest/<key>/` where key hashes the exact
package versions and this builder's own files, so a second build costs one apt-cache
call. Use as a module (`python -m tests.e2e.guest.build`) or call `build_guest()`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import elf
from .cpio import CpioWriter

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEFAULT_CACHE = REPO / ".cache" / "e2e-guest"

KERNEL_META = "linux-image-cloud-amd64"
PACKAGES = (
    "busybox-static",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "libcrypt1",
    # Variant 2: Debian's stock qemu-guest-agent and its libraries.
    "qemu-guest-agent",
    "libglib2.0-0",
    "libnuma1",
    "libudev1",
    "liburing2",
    "libpcre2-8-0",
    "libmount1",
    "libblkid1",
    "libselinux1",
)
# The cloud kernel has no AHCI: a CD-ROM must sit on IDE (pc machine) or virtio-scsi.
MODULES = (
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_rng",
    "ata_piix",
    "ata_generic",
    "sr_mod",
    "sd_mod",
    "isofs",
    # ACPI power button -> input event -> busybox acpid: the manager's ACPI shutdown and
    # reboot (virDomainShutdown/Reboot without an agent) reach this guest.
    "button",
    "evdev",
)
# Busybox applets left out: package tools would lure install.sh away from its plain
# copy path, and our /init is PID 1.
DROP_APPLETS = {"dpkg", "dpkg-deb", "rpm", "rpm2cpio", "init", "linuxrc", "apt"}
DROP_PATHS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/bash-completion",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/turtledemo",
    "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/distutils",
    "etc/init.d",
    "lib/systemd",
    "usr/lib/systemd",
)
GUEST_PYTHON = "3.11"
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")


class GuestBuildError(RuntimeError):
    """The guest image could not be built (missing package, library or tool)."""


@dataclass(frozen=True)
class GuestImage:
    key: str
    directory: Path
    kernel: Path
    initrd: Path
    kernel_version: str
    packages: dict[str, str]
    build_seconds: float
    initrd_bytes: int
    cached: bool


def _run(args: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestBuildError(f"{' '.join(args[:3])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _candidates(names: list[str]) -> dict[str, dict[str, str]]:
    """name -> {Version, Architecture, Depends} of each package's apt candidate."""
    out = _run(["apt-cache", "show", "--no-all-versions", *names])
    result: dict[str, dict[str, str]] = {}
    for stanza in out.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "") and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        if "Package" in fields:
            result.setdefault(fields["Package"], fields)
    missing = [n for n in names if n not in result]
    if missing:
        raise GuestBuildError(f"apt has no candidate for {missing}; run apt-get update")
    return result


def resolve_packages() -> tuple[dict[str, dict[str, str]], str]:
    """The exact packages of the image and the kernel release they carry."""
    meta = _candidates([KERNEL_META])[KERNEL_META]
    kernel_pkg = next(
        (
            d.strip().split(" ")[0]
            for d in meta.get("Depends", "").split(",")
            if d.strip().startswith("linux-image-")
        ),
        None,
    )
    if kernel_pkg is None:
        raise GuestBuildError(f"{KERNEL_META} depends on no linux-image-* package")
    pkgs = _candidates([kernel_pkg, *PACKAGES])
    return pkgs, kernel_pkg.removeprefix("linux-image-")


def _builder_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(path.relative_to(HERE).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(pkgs: dict[str, dict[str, str]]) -> str:
    h = hashlib.sha256()
    for name in sorted(pkgs):
        h.update(f"{name}={pkgs[name]['Version']}\n".encode())
    h.update(_builder_digest().encode())
    return h.hexdigest()[:16]


def _download(pkgs: dict[str, dict[str, str]], debs: Path) -> dict[str, Path]:
    debs.mkdir(parents=True, exist_ok=True)
    paths = {}
    wanted = []
    for name, fields in pkgs.items():
        version = fields["Version"].replace(":", "%3a")
        path = debs / f"{name}_{version}_{fields['Architecture']}.deb"
        paths[name] = path
        if not path.exists():
            wanted.append(f"{name}={fields['Version']}")
    if wanted:
        _run(["apt-get", "download", "-q", *wanted], cwd=debs)
    for name, path in paths.items():
        if not path.exists():
            raise GuestBuildError(f"apt-get download gave no {path.name} for {name}")
    return paths


def _find_lib(root: Path, soname: str) -> Path | None:
    for d in LIB_DIRS:
        if (root / d / soname).exists():
            return root / d / soname
    return None


def _check_libraries(root: Path) -> list[str]:
    """Drops Python extension modules whose libraries are not in the image (sqlite,
    curses, readline, ...: the agent needs none of them); any other ELF file with a
    missing library is a build error. Returns the dropped modules."""
    dropped = []
    missing = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or not elf.is_elf(path):
            continue
        if path.suffix == ".ko":
            continue
        try:
            libs = elf.needed(path)
        except (ValueError, IndexError):
            continue
        absent = [lib for lib in libs if _find_lib(root, lib) is None]
        if not absent:
            continue
        if "lib-dynload" in path.parts:
            path.unlink()
            dropped.append(path.name.split(".")[0])
        else:
            missing.append(f"{path.relative_to(root)}: {', '.join(absent)}")
    if missing:
        raise GuestBuildError("libraries missing from the image:\n" + "\n".join(missing))
    return dropped


def _modules(kernel_root: Path, kver: str, root: Path) -> list[str]:
    """Copies MODULES and their dependencies into root; returns them deps-first."""
    base = kernel_root / "lib" / "modules" / kver
    by_name = {p.name.split(".ko")[0].replace("-", "_"): p for p in base.rglob("*.ko*")}
    builtin = {
        Path(line.strip()).name.split(".ko")[0].replace("-", "_")
        for line in (base / "modules.builtin").read_text().splitlines()
    }
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order or name in builtin:
            return
        if name not in by_name:
            raise GuestBuildError(f"kernel {kver} has no module {name} (needed by {chain})")
        if by_name[name].suffix != ".ko":
            raise GuestBuildError(f"{by_name[name].name}: compressed modules are not supported")
        deps = elf.modinfo(by_name[name]).get("depends", "")
        for dep in filter(None, deps.split(",")):
            visit(dep.replace("-", "_"), (*chain, name))
        order.append(name)

    for name in MODULES:
        visit(name, ())
    lines = []
    for name in order:
        rel = by_name[name].relative_to(base)
        (root / "lib/modules" / kver / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(by_name[name], root / "lib/modules" / kver / rel)
        lines.append(rel.as_posix())
    (root / "etc/kvmm-e2e").mkdir(parents=True, exist_ok=True)
    (root / "etc/kvmm-e2e/modules.load").write_text("\n".join(lines) + "\n")
    return order


def _busybox_links(root: Path) -> None:
    applets = _run([str(root / "bin/busybox"), "--list-full"]).split()
    for applet in applets:
        link = root / applet
        if link.name in DROP_APPLETS or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def _guest_files(root: Path) -> None:
    files = HERE / "files"
    lib = root / "usr/lib/kvmm-e2e"
    lib.mkdir(parents=True, exist_ok=True)
    shutil.copy(files / "init.sh", root / "init")
    (root / "init").chmod(0o755)
    for name in ("lib.sh", "echo.py", "hostile.py", "utmp.py", "agent-config.json"):
        shutil.copy(files / name, lib / name)
    acpi = root / "etc/acpi/PWRF"
    acpi.mkdir(parents=True, exist_ok=True)
    shutil.copy(files / "acpi-power.sh", acpi / "00000080")
    (acpi / "00000080").chmod(0o755)
    for name in ("admin-install.sh", "crash-agent.sh", "rss.sh"):
        target = lib / name.removesuffix(".sh") if name != "admin-install.sh" else lib / name
        shutil.copy(files / name, target)
        target.chmod(0o755)
    etc = root / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ne2e:x:1000:1000:kvmm e2e user:/home/e2e:/bin/sh\n"
    )
    (etc / "group").write_text("root:x:0:\ne2e:x:1000:\n")
    # A real secret-looking file the agent must never hand out (security scenario).
    (etc / "shadow").write_text("root:$6$kvmm-e2e-not-a-real-hash:19000:0:99999:7:::\n")
    (etc / "shadow").chmod(0o600)
    (etc / "os-release").write_text(
        'NAME="kvmm-e2e test guest"\nID=kvmm-e2e\nVERSION_ID="1"\n'
        'PRETTY_NAME="kvmm-e2e test guest 1 (Debian 12 packages)"\n'
    )
    for d in ("root", "home/e2e", "proc", "sys", "dev", "tmp", "run", "var", "mnt/kvmm"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "home/e2e").chmod(0o755)
    py = root / "usr/bin/python3"
    if not py.exists():
        py.symlink_to("python3.11")


def _tidy(root: Path) -> None:
    for rel in DROP_PATHS:
        shutil.rmtree(root / rel, ignore_errors=True)
    for path in root.rglob("*"):
        if path.is_symlink() and path.name in DROP_APPLETS:
            path.unlink()


def _compile_stdlib(root: Path) -> None:
    """Bytecode for the whole stdlib: a cold start costs ~2 s more under TCG without it.
    Unchecked-hash pycs stay valid whatever the mtimes in the archive say."""
    if sys.version_info[:2] == tuple(int(x) for x in GUEST_PYTHON.split(".")):
        python = sys.executable
    else:
        found = shutil.which(f"python{GUEST_PYTHON}")
        if found is None:
            raise GuestBuildError(f"python{GUEST_PYTHON} is needed on the host to precompile")
        python = found
    stdlib = root / "usr/lib" / f"python{GUEST_PYTHON}"
    _run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            "/",
            str(stdlib),
        ]
    )


def _write_initrd(root: Path, out: Path) -> int:
    with out.open("wb") as f:
        writer = CpioWriter(f)
        writer.add_dir("dev")
        writer.add_chardev("dev/console", 5, 1)
        writer.add_chardev("dev/null", 1, 3, 0o666)
        count = writer.add_tree(root)
        writer.close()
    return count


def _assemble(pkgs: dict[str, dict[str, str]], kernel_pkg: str, kver: str, work: Path) -> dict:
    debs = _download(pkgs, work.parent.parent / "debs")
    root = work / "root"
    kernel_root = work / "kernel"
    for name, deb in debs.items():
        _run(["dpkg-deb", "-x", str(deb), str(kernel_root if name == kernel_pkg else root)])
    _tidy(root)
    modules = _modules(kernel_root, kver, root)
    _busybox_links(root)
    _guest_files(root)
    dropped = _check_libraries(root)
    _compile_stdlib(root)
    shutil.copy(kernel_root / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
    entries = _write_initrd(root, work / "initrd.img")
    shutil.rmtree(root)
    shutil.rmtree(kernel_root)
    return {"modules": modules, "dropped_extensions": dropped, "initrd_entries": entries}


def build_guest(cache_dir: Path | None = None, force: bool = False) -> GuestImage:
    """Returns the cached guest image for the current package versions, building it
    first when needed. Safe to call from several processes at once."""
    cache = Path(cache_dir or os.environ.get("KVMM_E2E_CACHE") or DEFAULT_CACHE)
    pkgs, kver = resolve_packages()
    kernel_pkg = f"linux-image-{kver}"
    key = cache_key(pkgs)
    final = cache / key
    manifest = final / "manifest.json"
    if manifest.exists() and not force:
        return _image(final, json.loads(manifest.read_text()), cached=True)
    (cache / "tmp").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cache / "tmp"))
    work.chmod(0o755)  # QEMU (libvirt-qemu) must reach the kernel and initrd
    try:
        info = _assemble(pkgs, kernel_pkg, kver, work)
        data = {
            "key": key,
            "kernel_version": kver,
            "packages": {n: f["Version"] for n, f in sorted(pkgs.items())},
            "build_seconds": round(time.monotonic() - started, 2),
            "initrd_bytes": (work / "initrd.img").stat().st_size,
            **info,
        }
        (work / "manifest.json").write_text(json.dumps(data, indent=2) + "\n")
        if force and final.exists():
            shutil.rmtree(final)
        try:
            work.rename(final)
        except OSError:
            if not manifest.exists():  # another process won the race only if complete
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(cache, key)
    return _image(final, json.loads(manifest.read_text()), cached=False)


def _prune(cache: Path, keep: str, older_than: float = 3600) -> None:
    """Removes images of other keys (older builder files or packages) once they are an
    hour old: ~65 MB each. Running guests are unaffected (QEMU read them at start)."""
    now = time.time()
    for d in cache.iterdir():
        stale = now - d.stat().st_mtime > older_than
        if d.name != keep and len(d.name) == 16 and (d / "manifest.json").exists() and stale:
            shutil.rmtree(d, ignore_errors=True)


def _image(directory: Path, data: dict, cached: bool) -> GuestImage:
    # QEMU runs as libvirt-qemu: the image must be readable by others.
    for name in ("vmlinuz", "initrd.img"):
        (directory / name).chmod(0o644)
    return GuestImage(
        key=data["key"],
        directory=directory,
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        kernel_version=data["kernel_version"],
        packages=data["packages"],
        build_seconds=data["build_seconds"],
        initrd_bytes=data["initrd_bytes"],
        cached=cached,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        image = build_guest(args.cache_dir, force=args.force)
    except GuestBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = asdict(image) | {"seconds_this_call": round(time.monotonic() - started, 2)}
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
