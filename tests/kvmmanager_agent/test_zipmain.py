"""The zipapp's entry point: the agent runs from a bytecode cache made on first start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmmanager_agent import __version__
from kvmmanager_agent.build import build_zipapp
from kvmmanager_agent.zipmain import cache_key, trusted_dir


def run(pyz: Path, cache: str, *args: str, data: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(os.environ, KVMMANAGER_AGENT_CACHE=cache)
    return subprocess.run(
        [sys.executable, str(pyz), *args],
        input=data,
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )


@pytest.fixture
def pyz(tmp_path: Path) -> Path:
    return Path(build_zipapp(str(tmp_path / "agent.pyz")))


def test_first_start_fills_the_cache_and_later_starts_import_from_it(
    pyz: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    ping = b'{"jsonrpc":"2.0","id":1,"method":"get_agent_info"}\n'
    out = run(pyz, str(cache), "--config", str(cfg), "--stdio", data=ping)
    assert json.loads(out.stdout)["result"]["version"] == __version__
    key = cache_key(str(pyz))
    assert [p.name for p in cache.iterdir()] == [key]
    assert cache.stat().st_mode & 0o777 == 0o700
    pkg = cache / key / "kvmmanager_agent"
    tag = sys.implementation.cache_tag
    for name in ("__main__", "protocol/registry", "server", "methods/exec"):
        src = pkg / (name + ".py")
        assert (src.parent / "__pycache__" / f"{src.stem}.{tag}.pyc").is_file(), name
    # Proof that the agent's modules now come from the cache, not from the zipapp.
    (pkg / "__init__.py").write_text('__version__ = "from-the-cache"\n')
    assert run(pyz, str(cache), "--version").stdout.decode().strip() == "from-the-cache"


def test_a_new_zipapp_replaces_the_stale_copy(
    pyz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    run(pyz, str(cache), "--version")
    old = cache_key(str(pyz))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # other bytes, same sources
    build_zipapp(str(pyz))
    assert cache_key(str(pyz)) != old
    assert run(pyz, str(cache), "--version").stdout.decode().strip() == __version__
    assert [p.name for p in cache.iterdir()] == [cache_key(str(pyz))]


def test_a_cache_others_may_write_is_not_used(pyz: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    planted = cache / cache_key(str(pyz)) / "kvmmanager_agent"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text('__version__ = "planted"\n')
    (planted / "__main__.py").write_text("def main():\n    print('planted')\n    return 0\n")
    assert run(pyz, str(cache), "--version").stdout.decode().strip() == __version__
    assert not trusted_dir(str(cache))
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    assert not trusted_dir(str(link))


def test_no_cache_when_disabled_or_unwritable(pyz: Path, tmp_path: Path) -> None:
    assert run(pyz, "", "--version").stdout.decode().strip() == __version__
    blocker = tmp_path / "file"
    blocker.write_text("")
    # A path that cannot become a directory: the agent runs from the zipapp as before.
    assert run(pyz, str(blocker / "cache"), "--version").stdout.decode().strip() == __version__
    assert blocker.is_file()


def test_cache_key_follows_the_bytes_and_the_interpreter(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"one")
    k1 = cache_key(str(a))
    a.write_bytes(b"two")
    assert cache_key(str(a)) != k1
    assert cache_key(str(a)).startswith(sys.implementation.cache_tag + "-")


def test_the_agent_runs_as_a_fresh_interpreter_on_the_cache(pyz: Path, tmp_path: Path) -> None:
    # The launch (zip import, runpy) is not kept: the process re-executes itself, same
    # pid, isolated (-I) and without site (-S), on the launcher in the cache.
    cache = tmp_path / "cache"
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    env = dict(os.environ, KVMMANAGER_AGENT_CACHE=str(cache))
    agent = subprocess.Popen(
        [sys.executable, str(pyz), "--config", str(cfg), "--stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert agent.stdin is not None and agent.stdout is not None
        agent.stdin.write(b'{"jsonrpc":"2.0","id":7,"method":"ping"}\n')
        agent.stdin.flush()
        assert json.loads(agent.stdout.readline())["result"]["pong"] is True
        argv = Path(f"/proc/{agent.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        launcher = cache / cache_key(str(pyz)) / "kvmmanager-agent"
        assert argv == [sys.executable, "-I", "-S", str(launcher), "--config", str(cfg), "--stdio"]
    finally:
        agent.stdin.close()  # type: ignore[union-attr]
        assert agent.wait(30) == 0
        agent.stdout.close()  # type: ignore[union-attr]
