"""The client tests run against the real agent: reuse its test fixtures (loaded by path,
since test folders are not packages)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).parents[2] / "kvmmanager_agent" / "conftest.py"
_spec = importlib.util.spec_from_file_location("kvmm_t_agent_fixtures", _path)
assert _spec is not None and _spec.loader is not None
fixtures = importlib.util.module_from_spec(_spec)
sys.modules["kvmm_t_agent_fixtures"] = fixtures
_spec.loader.exec_module(fixtures)

FakeFreezeBackend = fixtures.FakeFreezeBackend
PowerRecorder = fixtures.PowerRecorder
Raw = fixtures.Raw
RunningAgent = fixtures.RunningAgent
roots = fixtures.roots
start_agent = fixtures.start_agent
agent = fixtures.agent
raw = fixtures.raw
