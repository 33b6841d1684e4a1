"""Builds the cloud-init test image: a debootstrap Debian 12 disk with cloud-init inside.

It stands in for a vendor's "generic cloud" image: the manager never looks inside it,
it only copies it, attaches a NoCloud seed and boots it; cloud-init in the guest does
the rest (hostname, users, SSH keys, and the agent from the seed). What differs from a
vendor image is only how it boots: the root file system fills the whole disk (made with
`mke2fs -d ROOTDIR`, no partition table, no loop mounts, no bootloader), so the VM boots
the image's own kernel and initramfs directly (they are kept next to the disk).

    image = build_cloud_image()  # .cache/e2e-cloud/<key>/{disk.qcow2,vmlinuz,initrd.img}

The key hashes the apt candidates of the packages below and this builder's own files;
debootstrap downloads from the mirror this machine's apt uses (/etc/apt/sources.list*).
A first build costs about two minutes (debootstrap), a cached one an apt-cache call.
Use as a module (`python -m tests.e2e.cloud.build`) or call `build_cloud_image()`.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEFAULT_CACHE = REPO / ".cache" / "e2e-cloud"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KERNEL_META = "linux-image-cloud-amd64"
# Besides minbase: an init that runs cloud-init's units, udev (it names the agent's
# virtio port and loads the CD-ROM drivers), cloud-init itself, the agent's python3,
# sudo and sshd (cloud-init configures both) and the cloud kernel.
PACKAGES = (
    "systemd-sysv",
    "udev",
    "cloud-init",
    "python3",
    "sudo",
    "openssh-server",
    # debootstrap does not resolve virtual packages: python3-cryptography (cloud-init,
    # through oauthlib) needs python3-cffi-backend-api-*, which this one provides.
    "python3-cffi-backend",
    KERNEL_META,
)
DISK_BYTES = 2 * 1024**3
# What the guest's cloud-init may look for: only the seed CD (no metadata servers to
# probe: the test network has none, and probing them costs minutes of timeouts).
CLOUD_CFG = """\
datasource_list: [NoCloud, None]
# A minbase system has no locales package: nothing to generate.
locale: false
# One host key type keeps first boot short under TCG (RSA keygen is slow there).
ssh_genkeytypes: [ed25519]
"""
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"


class CloudImageError(RuntimeError):
    """The image could not be built (debootstrap, mke2fs or qemu-img failed)."""


@dataclass(frozen=True)
class CloudImage:
    key: str
    directory: Path
    disk: Path  # qcow2
    kernel: Path
    initrd: Path
    cmdline: str
    kernel_version: str
    packages: dict[str, str]
    build_seconds: float
    disk_bytes: int  # the qcow2 file's size
    virtual_bytes: int
    cached: bool


def _run(args: list[str], **kw: object) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()[-3000:]
        raise CloudImageError(f"{' '.join(args[:3])} failed ({proc.returncode}): {out}")
    return proc.stdout


def mirror() -> str:
    """The Debian mirror this machine's apt is configured with (deb822 or one-line)."""
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        for m in re.finditer(r"^\s*URIs:\s*(\S+)", text, re.M):
            if SUITE in text and "security" not in m.group(1) and "debian" in m.group(1):
                return m.group(1).rstrip("/")
        for m in re.finditer(rf"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M):
            return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def resolve_packages() -> dict[str, str]:
    """name -> apt candidate version of every explicitly installed package, plus the
    kernel package the meta package points at (the cache key's ingredients)."""
    out = _run(["apt-cache", "show", "--no-all-versions", *PACKAGES])
    versions: dict[str, str] = {}
    kernel = None
    for stanza in out.split("\n\n"):
        fields = dict(
            line.split(":", 1) for line in stanza.splitlines() if line[:1] not in (" ", "")
        )
        name = fields.get("Package", "").strip()
        if name and name not in versions:
            versions[name] = fields.get("Version", "").strip()
            if name == KERNEL_META:
                kernel = next(
                    d.strip().split(" ")[0]
                    for d in fields.get("Depends", "").split(",")
                    if d.strip().startswith("linux-image-")
                )
    missing = [p for p in PACKAGES if p not in versions]
    if missing or kernel is None:
        raise CloudImageError(f"apt has no candidate for {missing or [KERNEL_META]}")
    versions["kernel"] = kernel.removeprefix("linux-image-")
    return versions


def _builder_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(HERE.rglob("*.py")):
        if "__pycache__" not in path.parts and not path.name.startswith("test_"):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_key(versions: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(versions):
        h.update(f"{name}={versions[name]}\n".encode())
    h.update(_builder_digest().encode())
    return h.hexdigest()[:16]


def _configure(root: Path) -> None:
    """What a vendor does to a cloud image before shipping it: no identity of its own
    (machine-id, host keys, hostname come at first boot), cloud-init's datasource."""
    (root / "etc/fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/machine-id").write_text("")  # systemd makes one at first boot
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/cloud/cloud.cfg.d/90-kvmm-e2e.cfg").write_text(CLOUD_CFG)
    # No package downloads at boot: the test network reaches no mirror.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer"):
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    for rel in ("var/lib/apt/lists",):
        for f in (root / rel).glob("*_Packages"):
            f.unlink()


def _assemble(work: Path, debs: Path) -> str:
    """Builds disk.qcow2, vmlinuz and initrd.img in `work`; returns the kernel release."""
    root = work / "root"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--components=main",
                f"--cache-dir={debs}",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror(),
            ],
            timeout=1800,
        )
    except CloudImageError:
        log = root / "debootstrap/debootstrap.log"
        if log.exists():
            shutil.copy(log, work.parent.parent / "last-debootstrap.log")
        raise
    _configure(root)
    # The suite's kernel (debootstrap reads no -updates/-security suites).
    kvers = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(kvers) != 1:
        raise CloudImageError(f"expected one kernel in /boot, found {kvers}")
    kver = kvers[0]
    shutil.copy(root / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
    shutil.copy(root / "boot" / f"initrd.img-{kver}", work / "initrd.img")
    raw = work / "disk.raw"
    _run(["mke2fs", "-q", "-t", "ext4", "-L", "cloudimg-rootfs", "-d", str(root), str(raw),
          str(DISK_BYTES // 1024) + "k"])  # fmt: skip
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")])
    raw.unlink()
    shutil.rmtree(root)
    return kver


def build_cloud_image(cache_dir: Path | None = None, force: bool = False) -> CloudImage:
    """The cached image for the current package versions, built first when needed.
    Needs root (debootstrap). Safe to call from several processes at once: one builds,
    the others wait for it (a lock file in the cache) and take its image."""
    cache = Path(cache_dir or os.environ.get("KVMM_E2E_CLOUD_CACHE") or DEFAULT_CACHE)
    versions = resolve_packages()
    key = cache_key(versions)
    final = cache / key
    manifest = final / "manifest.json"
    if manifest.exists() and not force:
        return _image(final, json.loads(manifest.read_text()), cached=True)
    cache.mkdir(parents=True, exist_ok=True)
    # scripts/test builds the image in the background while the other tests run; the
    # cloud-init test then waits here for that build instead of starting a second one.
    with (cache / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if manifest.exists() and not force:
            return _image(final, json.loads(manifest.read_text()), cached=True)
        return _build(cache, key, versions, force)


def _build(cache: Path, key: str, versions: dict[str, str], force: bool) -> CloudImage:
    final = cache / key
    manifest = final / "manifest.json"
    if shutil.which("debootstrap") is None:
        raise CloudImageError(
            "debootstrap is not installed: scripts/install-system-packages --test"
        )
    (cache / "tmp").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cache / "tmp"))
    work.chmod(0o755)  # QEMU (libvirt-qemu) reads the kernel and initrd from here
    try:
        kver = _assemble(work, cache / "debs")
        data = {
            "key": key,
            "kernel_version": kver,
            "packages": versions,
            "mirror": mirror(),
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (work / "manifest.json").write_text(json.dumps(data, indent=2) + "\n")
        if force and final.exists():
            shutil.rmtree(final)
        try:
            work.rename(final)
        except OSError:
            if not manifest.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(cache, key)
    return _image(final, json.loads(manifest.read_text()), cached=False)


def _prune(cache: Path, keep: str, older_than: float = 3600) -> None:
    """Removes images of other keys once they are an hour old (~400 MB each)."""
    now = time.time()
    for d in cache.iterdir():
        stale = now - d.stat().st_mtime > older_than
        if d.name != keep and len(d.name) == 16 and (d / "manifest.json").exists() and stale:
            shutil.rmtree(d, ignore_errors=True)


def _image(directory: Path, data: dict, cached: bool) -> CloudImage:
    for name in ("vmlinuz", "initrd.img", "disk.qcow2"):
        (directory / name).chmod(0o644)
    info = json.loads(_run(["qemu-img", "info", "--output=json", str(directory / "disk.qcow2")]))
    return CloudImage(
        key=data["key"],
        directory=directory,
        disk=directory / "disk.qcow2",
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        cmdline=KERNEL_CMDLINE,
        kernel_version=data["kernel_version"],
        packages=data["packages"],
        build_seconds=data["build_seconds"],
        disk_bytes=(directory / "disk.qcow2").stat().st_size,
        virtual_bytes=int(info["virtual-size"]),
        cached=cached,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    # scripts/test ends its background build with SIGTERM when a run is interrupted: exit
    # through the `finally` that removes the half-made work directory (~2 GB).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    try:
        image = build_cloud_image(args.cache_dir, force=args.force)
    except CloudImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = asdict(image) | {"seconds_this_call": round(time.monotonic() - started, 2)}
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
