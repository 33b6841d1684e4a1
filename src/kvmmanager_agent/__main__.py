"""`kvmmanager-agent`: the guest agent's command line.

The four options are parsed by hand: argparse (with gettext, shutil and the compressors
it pulls in) would be ~1 MB of the idle agent's memory, for a command line that a
service file writes once.
"""

from __future__ import annotations

import sys

try:
    # The C module: `signal` wraps the same calls in enums, and `enum` costs idle memory.
    # typeshed has no stub for the C module; its functions are the ones signal re-exports.
    import _signal as signal  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - every CPython has it
    import signal

from . import __version__, protocol
from .config import ConfigError, load
from .log import log
from .server import Agent
from .transport import stdio_channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

PROG = "kvmmanager-agent"
USAGE = (
    "usage: %s [-h] [--config CONFIG] [--device DEVICE] [--listen-unix PATH] [--stdio]"
    " [--version]\n" % PROG
)
HELP = (
    USAGE
    + "\n"
    + "KVM Manager guest agent: JSON-RPC 2.0 over virtio-serial.\n\n"
    + "options:\n"
    + "  -h, --help          show this help message and exit\n"
    + "  --config CONFIG     config file (default /etc/kvmmanager-agent/config.json)\n"
    + "  --device DEVICE     virtio-serial port (default %s)\n" % protocol.DEVICE_PATH
    + "  --listen-unix PATH  serve on a unix socket instead\n"
    + "  --stdio             serve on stdin/stdout\n"
    + "  --version           show program's version number and exit\n"
)
VALUED = ("--config", "--device", "--listen-unix")


class UsageError(Exception):
    pass


class Args:
    def __init__(self) -> None:
        self.config: Optional[str] = None
        self.device: Optional[str] = None
        self.listen_unix: Optional[str] = None
        self.stdio = False


def parse_args(argv: List[str]) -> Args:
    """`--opt VALUE`, `--opt=VALUE`, `--stdio`; unknown options and stray words are errors."""
    args = Args()
    i = 0
    while i < len(argv):
        word = argv[i]
        name, eq, value = word.partition("=")
        if name in VALUED:
            if not eq:
                i += 1
                if i >= len(argv) or argv[i].startswith("--"):
                    raise UsageError("argument %s: expected one argument" % name)
                value = argv[i]
            setattr(args, name[2:].replace("-", "_"), value)
        elif word == "--stdio":
            args.stdio = True
        else:
            raise UsageError("unrecognized arguments: %s" % " ".join(argv[i:]))
        i += 1
    return args


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(HELP)
        return 0
    if "--version" in argv:
        sys.stdout.write(__version__ + "\n")
        return 0
    try:
        args = parse_args(argv)
    except UsageError as exc:
        sys.stderr.write("%s%s: error: %s\n" % (USAGE, PROG, exc))
        return 2
    # Until the config names the agent's level and file, records (the config's own
    # warnings) go to stderr.
    log.configure("info")
    try:
        config = load(args.config)
        log.configure(config.log_level, config.log_file)
        if config.log_file:
            # Said on stderr before the file was open; the file keeps the record too.
            for warning in config.warnings:
                log.warning("%s", warning)
    except ConfigError as exc:
        sys.stderr.write("kvmmanager-agent: %s\n" % exc)
        return 2
    except OSError as exc:
        sys.stderr.write("kvmmanager-agent: cannot open log_file: %s\n" % exc)
        return 2
    agent = Agent(config)

    def on_signal(signum: int, frame: object) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A host that vanishes mid-write must not kill us with SIGPIPE.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        if args.stdio:
            agent.run_channel(stdio_channel())
        elif args.listen_unix:
            agent.run_unix(args.listen_unix)
        else:
            device = args.device or "/dev/virtio-ports/" + config.channel_name
            agent.run_device(device)
    finally:
        agent.drain(config.shutdown_grace_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
