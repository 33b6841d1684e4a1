"""The zipapp's `__main__.py`: run the agent from a bytecode cache beside the zipapp.

A zipapp carries no .pyc (guests run different Python versions), so every start would
compile the agent's sources, and the compiler's peak memory stays resident in the agent
for its whole life (~2 MB of the ~10 MB budget). Instead, the first start unpacks the
package into CACHE_DIR/<key>/ and compiles it there in a forked child, whose memory goes
away with it; every later start imports the cached bytecode. The key covers the
zipapp's bytes and the interpreter, so an upgrade of either makes a fresh copy (and
the stale ones are removed).

Trust: the agent runs as root, so the cache is only used when the cache directory is
ours and writable by nobody else; anything else (read-only /var, another owner, a
failed unpack) falls back to importing from the zipapp as before. The environment
variable KVMMANAGER_AGENT_CACHE names another cache directory, or (empty) none.

Once the cache is ready the interpreter is started again on it (`exec`, same pid), so
nothing of the launch (zip import, runpy, this file) stays in the agent's memory.
"""

from __future__ import annotations

import binascii
import os
import stat
import sys

CACHE_DIR = "/var/cache/kvmmanager-agent"
PACKAGE = "kvmmanager_agent/"


def cache_key(pyz: str) -> str:
    """Identify the zipapp's bytes and this interpreter (its bytecode format)."""
    with open(pyz, "rb") as fh:
        data = fh.read()
    return "%s-%08x-%d" % (sys.implementation.cache_tag, binascii.crc32(data), len(data))


def trusted_dir(path: str) -> bool:
    """Create `path` (0700) if needed; True when it is ours and nobody else may write it."""
    try:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)  # /var/cache in a bare root
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    ours = st.st_uid == os.geteuid()
    return stat.S_ISDIR(st.st_mode) and ours and not st.st_mode & 0o022


def _unpack(pyz: str, root: str, key: str) -> None:
    """In a child process: unpack and compile into root/key atomically; exit status 0 on success."""
    import compileall
    import shutil
    import zipfile

    tmp = os.path.join(root, ".%s.%d" % (key, os.getpid()))
    try:
        os.mkdir(tmp, 0o700)
        with zipfile.ZipFile(pyz) as zf:
            for name in zf.namelist():
                if name.startswith(PACKAGE) and name.endswith(".py") and ".." not in name:
                    zf.extract(name, tmp)
        if not compileall.compile_dir(os.path.join(tmp, PACKAGE), quiet=2):
            raise RuntimeError("compile failed")
        with open(os.path.join(tmp, LAUNCHER), "w") as fh:
            fh.write(LAUNCHER_SOURCE)
        os.rename(tmp, os.path.join(root, key))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Copies for another zipapp or interpreter are stale now (unpacks in progress
    # elsewhere start with a dot and clean up after themselves).
    for entry in os.listdir(root):
        if entry != key and not entry.startswith("."):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def prepare(pyz: str, root: str) -> str | None:
    """The directory to import the agent from: root/key, made on first use; None to use the zip."""
    try:
        if not root or not trusted_dir(root):
            return None
        key = cache_key(pyz)
        target = os.path.join(root, key)
        if not os.path.isdir(target):
            pid = os.fork()
            if pid == 0:  # the child: unpacking and compiling never touch our memory
                code = 1
                try:
                    _unpack(pyz, root, key)
                    code = 0
                finally:
                    os._exit(code)
            os.waitpid(pid, 0)
            # Another agent starting at the same moment may have won the rename: fine.
            if not os.path.isdir(target):
                return None
        return target
    except OSError:
        return None


# Written into each cache copy; the interpreter runs it with `-I` (no PYTHON* variables,
# no user site, no working directory on the path: the agent runs as root) and `-S` (no
# site: the agent needs the standard library only).
LAUNCHER = "kvmmanager-agent"
LAUNCHER_SOURCE = """import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from kvmmanager_agent.__main__ import main
sys.exit(main())
"""


def reexec(target: str) -> None:
    """Replace this process (same pid) by the interpreter running the agent from `target`.

    What started us stays resident otherwise: the zip importer, runpy and the compile of
    this file (~0.5 MB of the agent's budget). Returns only when that is not possible."""
    launcher = os.path.join(target, LAUNCHER)
    if not sys.executable or not os.path.isfile(launcher):
        return
    argv = [sys.executable, "-I", "-S", launcher, *sys.argv[1:]]
    try:
        os.execv(sys.executable, argv)  # noqa: S606 - the interpreter itself, no shell
    except OSError:
        return  # an interpreter we cannot exec (odd embedding): run on in this process


def run() -> None:
    pyz = sys.path[0]
    if os.path.isfile(pyz):
        target = prepare(pyz, os.environ.get("KVMMANAGER_AGENT_CACHE", CACHE_DIR))
        if target is not None:
            reexec(target)
            sys.path[0] = target
    from kvmmanager_agent.__main__ import main

    sys.exit(main())


if __name__ == "__main__":
    run()
