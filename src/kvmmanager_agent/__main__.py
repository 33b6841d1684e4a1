"""`kvmmanager-agent`: the guest agent's command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import List, Optional

from . import __version__, protocol
from .config import ConfigError, load
from .server import Agent
from .transport import stdio_channel


def _setup_logging(level: str, log_file: str) -> None:
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("kvmmanager_agent")
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="kvmmanager-agent", description=__doc__)
    parser.add_argument("--config", help="config file (default /etc/kvmmanager-agent/config.json)")
    parser.add_argument("--device", help="virtio-serial port (default %s)" % protocol.DEVICE_PATH)
    parser.add_argument("--listen-unix", metavar="PATH", help="serve on a unix socket instead")
    parser.add_argument("--stdio", action="store_true", help="serve on stdin/stdout")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        sys.stderr.write("kvmmanager-agent: %s\n" % exc)
        return 2
    _setup_logging(config.log_level, config.log_file)
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
