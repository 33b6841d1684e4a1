"""The agent's command line (parsed by hand) and its log writer (logging's format)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvmmanager_agent.__main__ import UsageError, main, parse_args
from kvmmanager_agent.log import Log


def test_options_in_both_spellings() -> None:
    args = parse_args(["--config", "/c.json", "--device=/dev/vport1p1", "--stdio"])
    assert (args.config, args.device, args.listen_unix, args.stdio) == (
        "/c.json",
        "/dev/vport1p1",
        None,
        True,
    )
    assert parse_args(["--listen-unix=/run/a.sock"]).listen_unix == "/run/a.sock"
    assert parse_args([]).stdio is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config"], "argument --config: expected one argument"),
        (["--device", "--stdio"], "argument --device: expected one argument"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["extra", "--stdio"], "unrecognized arguments: extra --stdio"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_args(argv)


def test_usage_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kvmmanager-agent") and "unrecognized arguments: --nope" in err
    assert main(["--help"]) == 0
    assert "--listen-unix PATH" in capsys.readouterr().out
    assert main(["--config", "/nonexistent/kvmm.json"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_log_writes_loggings_format_at_the_configured_level(tmp_path: Path) -> None:
    log = Log()
    target = tmp_path / "agent.log"
    log.configure("WARNING", str(target))
    log.info("not written")
    log.warning("cannot open %s: %s", "/dev/x", "busy")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("worker failure")
    text = target.read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.match(stamp + r" WARNING cannot open /dev/x: busy\n", text)
    assert re.search(stamp + r" ERROR worker failure\nTraceback .*ValueError: boom\n", text, re.S)
    assert "not written" not in text


def test_an_unconfigured_log_goes_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    # The host imports the agent's config as a library: its warnings reach the host's logging.
    with caplog.at_level("WARNING", logger="kvmmanager_agent"):
        Log().warning("config: unknown key %s ignored", "x")
    assert [r.getMessage() for r in caplog.records] == ["config: unknown key x ignored"]


def test_the_agent_process_imports_no_logging_argparse_or_typing(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text('{"nonsense": 1}')
    code = (
        "import sys; from kvmmanager_agent.__main__ import main; "
        f"main(['--config', {str(cfg)!r}, '--stdio']); "
        "print(sorted(m for m in ('logging', 'argparse', 'typing', 'socket', 'platform', "
        "'subprocess', 'hashlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n',
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.decode().splitlines()[-1] == "[]"
    # The config's warning went through the agent's own writer, in logging's format.
    assert re.search(rb"^\d{4}-.* WARNING config: unknown key nonsense ignored$", out.stderr, re.M)
