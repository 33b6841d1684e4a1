"""Coverage-guided fuzzing (atheris/libFuzzer) of the agent's line framer, JSON parser
and dispatcher, plus the host's reply framer. Runs in a child process (libFuzzer ends
with sys.exit); any uncaught exception there is a crash and fails the test.
KVMM_ATHERIS_RUNS sets the number of inputs (default 30,000: ~20 s here)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

atheris = pytest.importorskip("atheris")

RUNS = int(os.environ.get("KVMM_ATHERIS_RUNS", "30000"))

HARNESS = textwrap.dedent(
    """
    import json, sys, tempfile
    import atheris

    with atheris.instrument_imports():
        from kvmmanager_agent.config import Config
        from kvmmanager_agent.context import Context
        from kvmmanager_agent.dispatcher import Dispatcher, parse
        from kvmmanager_agent.framing import LineFramer, Overlong
        from kvmmanager_agent.server import HANDLERS
        from kvmmanager.agent.framing import ReplyFramer
        from kvmmanager.core.errors import GuestError

    base = tempfile.mkdtemp(prefix="kvmm-t-sec-atheris-")
    cfg = Config({"security": {"allowed_read_paths": [base], "allowed_write_paths": []}})

    class NoFreeze:
        def freezable(self): return []
        def freeze(self, mp): raise AssertionError("no freeze in fuzzing")
        def thaw(self, mp): pass

    def no_power(argv, delay): raise AssertionError("no power action in fuzzing")

    # Only methods that are harmless whatever their parameters reach their handlers.
    SAFE = {"ping", "sync", "get_agent_info", "get_time", "fsfreeze_status", "file_stat"}
    dispatcher = Dispatcher(
        Context(cfg, NoFreeze(), no_power), {k: v for k, v in HANDLERS.items() if k in SAFE}
    )

    def one_input(data: bytes) -> None:
        framer = LineFramer(4096)
        for item in framer.feed(data):
            if isinstance(item, Overlong):
                continue
            payload, err = parse(item)
            if err is None:
                reply, actions = dispatcher.run(payload)
                assert not actions
                if reply is not None:
                    json.dumps(reply).encode("ascii")
        try:
            ReplyFramer(4096).feed(data)
        except GuestError:
            pass

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
    """
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_atheris_agent_input_path(tmp_path: Path) -> None:
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ping").write_bytes(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
    (corpus / "batch").write_bytes(b'[{"jsonrpc":"2.0","id":"a","method":"get_time"}]\n\xff')
    proc = subprocess.run(
        [sys.executable, str(harness), f"-runs={RUNS}", "-max_len=8192", "-seed=1", str(corpus)],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert f"Done {RUNS} runs" in proc.stderr, tail
