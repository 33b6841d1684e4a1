"""``<graphics>``: VNC and SPICE displays.

Example::

    gfx = Graphics(type="vnc", autoport=True, listen_address="127.0.0.1", passwd="s3cret")
    live.port        # the port libvirt picked (live XML), -1/None before start

libvirt repeats the listen address in a ``listen`` attribute and a ``<listen>`` child and
rejects XML where they differ; ``listen_address`` keeps both in step.
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLProperty
from kvmmanager.virt.xml.devices.common import Device

VNC_PASSWORD_MAX = 8  # the RFB protocol's DES challenge uses 8 bytes; libvirt refuses more


def _check_passwd(obj: Graphics, value: str) -> str | None:
    if obj.type == "vnc" and len(value) > VNC_PASSWORD_MAX:
        return f"a VNC password has at most {VNC_PASSWORD_MAX} characters"
    return None


class Graphics(Device):
    TAG = "graphics"

    type = XMLProperty("@type", choices=("vnc", "spice"))
    port = XMLProperty("@port", kind=int, minimum=-1)
    autoport = XMLProperty("@autoport", kind=bool)
    websocket = XMLProperty("@websocket", kind=int, minimum=-1)
    passwd = XMLProperty(
        "@passwd",
        check=_check_passwd,
        doc="VNC: at most 8 characters; in XML read back only with VIR_DOMAIN_XML_SECURE",
    )
    passwd_valid_to = XMLProperty(
        "@passwdValidTo", doc="UTC expiry of passwd, 2030-01-01T00:00:00 (SPICE tickets)"
    )
    tls_port = XMLProperty("@tlsPort", kind=int, minimum=-1, doc="SPICE TLS port (live XML)")
    keymap = XMLProperty("@keymap")
    listen_socket = XMLProperty(
        "listen[@type='socket']",
        present=True,
        doc="VNC on a unix socket libvirt creates in the domain's private directory: no TCP port",
    )
    _listen_attr = XMLProperty("@listen")
    _listen_address = XMLProperty("listen[@type='address']/@address")

    @property
    def alias(self) -> None:
        """libvirt's schema gives ``<graphics>`` no ``<alias>``."""
        return None

    @property
    def listen_address(self) -> str | None:
        address: str | None = self._listen_address or self._listen_attr
        return address

    @listen_address.setter
    def listen_address(self, value: str | None) -> None:
        self._listen_address = value
        # The attribute is only rewritten when present: new XML uses the <listen> child only.
        if value is None or self._listen_attr is not None:
            self._listen_attr = value
