"""File-descriptor channels: the virtio-serial port, a unix socket connection, stdio.

All descriptors are non-blocking and driven by poll(), so reading and writing happen
concurrently (reader thread vs. worker threads) and no call blocks forever: a reader
wakes up at least every `tick` seconds to notice shutdown, and a writer gives up after
its deadline (a host that stopped reading must not wedge the agent).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Optional


# The most one read() gathers from a burst of already-queued bytes.
BURST_BYTES = 1 << 20


class ChannelClosed(Exception):
    pass


class Channel:
    def __init__(self, rfd: int, wfd: int, name: str, owner: object = None) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.name = name
        self._owner = owner  # keeps a socket object alive while we use its fd
        self.write_lock = threading.Lock()
        self.closed = False
        os.set_blocking(rfd, False)
        if wfd != rfd:
            os.set_blocking(wfd, False)

    def read(self, tick: float) -> Optional[bytes]:
        """Bytes; b"" at end of stream (or no host on a virtio port); None after a quiet `tick`."""
        poller = select.poll()
        poller.register(self.rfd, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(int(tick * 1000)):
            return None
        try:
            data = os.read(self.rfd, 65536)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET, errno.ENODEV, errno.ENXIO, errno.EBADF):
                raise ChannelClosed(str(exc)) from None
            raise
        if len(data) >= 4096:
            # A burst (a transfer): a virtio port hands out one 4 KiB page per read, so
            # take what is queued already in one go; the poll, this call and the framer
            # then run once per burst instead of once per page. (A small request, a
            # ping, skips this: no extra syscall on the latency path.)
            parts, got = [data], len(data)
            while got < BURST_BYTES:
                try:
                    more = os.read(self.rfd, 65536)
                except OSError:
                    break  # EAGAIN, or an error the next read() reports
                if not more:
                    break
                parts.append(more)
                got += len(more)
            if len(parts) > 1:
                data = b"".join(parts)
        return data

    def write(self, data: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        with self.write_lock:
            if self.closed:
                raise ChannelClosed("closed")
            while view:
                try:
                    n = os.write(self.wfd, view)
                    view = view[n:]
                    continue
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise ChannelClosed(str(exc)) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChannelClosed("write timed out: the host is not reading")
                poller = select.poll()
                poller.register(self.wfd, select.POLLOUT)
                poller.poll(int(min(left, 1.0) * 1000))

    def close(self) -> None:
        with self.write_lock:
            if self.closed:
                return
            self.closed = True
        for fd in {self.rfd, self.wfd}:
            with contextlib.suppress(OSError):
                os.close(fd)


def open_device(path: str) -> Channel:
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    return Channel(fd, fd, path)


def socket_channel(sock: socket.socket) -> Channel:
    fd = sock.detach()
    return Channel(fd, fd, "unix")


def stdio_channel() -> Channel:
    return Channel(os.dup(0), os.dup(1), "stdio")


def listen_unix(path: str) -> socket.socket:
    import socket  # only here: a guest agent on its virtio port never needs it

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(4)
    sock.settimeout(0.5)
    return sock
