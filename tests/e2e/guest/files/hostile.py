"""A hostile guest (kvmm.mode=hostile): writes garbage to the agent port, then one line
that never ends. The manager must stay responsive and other VMs' calls unaffected."""

import os
import sys


def main(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    garbage = [
        b"\xff\xfe\x00garbage\x80\x81\n",
        b'{"jsonrpc": "2.0", "id": 1, "result": {"pong": true}}\n',  # unsolicited reply
        b'{"jsonrpc": "2.0", "id": "x", "result": ' + b"[" * 10000 + b"\n",
        b"\xff" * 64 + b"\n",
        b'{"not": "json-rpc"}\n',
        bytes(range(256)) * 16 + b"\n",
    ]
    for chunk in garbage:
        os.write(fd, chunk)
    endless = b"A" * 65536  # no newline, ever
    while True:
        os.write(fd, endless)


if __name__ == "__main__":
    main(sys.argv[1])
