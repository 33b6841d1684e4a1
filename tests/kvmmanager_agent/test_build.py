from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kvmmanager_agent import __version__
from kvmmanager_agent.build import build_zipapp


def test_zipapp_is_deterministic_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = Path(build_zipapp(str(tmp_path / "a.pyz")))
    b = Path(build_zipapp(str(tmp_path / "b.pyz")))
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = zf.namelist()
        assert names[0] == "__main__.py"
        assert names[1:] == sorted(names[1:])
        assert "kvmmanager_agent/protocol/registry.py" in names
        assert not any("__pycache__" in n for n in names)
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}
    out = subprocess.run(
        [sys.executable, str(a), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == __version__
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    proc = subprocess.run(
        [sys.executable, str(a), "--config", str(cfg), "--stdio"],
        input=b'{"jsonrpc":"2.0","id":1,"method":"get_agent_info"}\n',
        capture_output=True,
        timeout=60,
    )
    assert json.loads(proc.stdout)["result"]["version"] == __version__
