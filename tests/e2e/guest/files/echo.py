"""Raw line echo on a virtio-serial port: the floor for any protocol on this channel.

Whatever the host writes comes straight back; used by bench/e2e_agent.py to measure the
channel itself next to the agent.
"""

import os
import select
import sys


def main(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        data = os.read(fd, 65536)
        if not data:
            # No host connected: read() returns 0 at once; wait instead of spinning.
            poller.poll(200)
            continue
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]


if __name__ == "__main__":
    main(sys.argv[1])
