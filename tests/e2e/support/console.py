"""Captures a guest's serial console to a file, as a second libvirt client.

The product gives every VM a pty console; the suite reads it through
virDomainOpenConsole (what `virsh console` does) so a failing scenario can print what
the guest said. This is test tooling, never product code.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import libvirt


class ConsoleLog:
    def __init__(self, uri: str, domain: str, path: Path) -> None:
        self.path = path
        self._uri = uri
        self._domain = domain
        self._thread: threading.Thread | None = None
        self._stream: libvirt.virStream | None = None

    def start(self) -> ConsoleLog:
        conn = libvirt.open(self._uri)
        dom = conn.lookupByName(self._domain)
        stream = conn.newStream(0)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self._stream = stream
        self._thread = threading.Thread(
            target=self._pump, args=(conn, stream), name=f"console-{self._domain}", daemon=True
        )
        self._thread.start()
        return self

    def _pump(self, conn: libvirt.virConnect, stream: libvirt.virStream) -> None:
        with self.path.open("ab") as out:
            try:
                while True:
                    data = stream.recv(65536)
                    if not isinstance(data, bytes) or not data:
                        break
                    out.write(data)
                    out.flush()
            except libvirt.libvirtError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        """Stops the capture (the pump thread ends when its stream is aborted)."""
        if self._stream is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.abort()
            self._stream = None

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def qemu_log(domain: str) -> str:
    """libvirt's per-domain QEMU log (command line, QEMU's own errors)."""
    try:
        return Path(f"/var/log/libvirt/qemu/{domain}.log").read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read the QEMU log: {exc})"
