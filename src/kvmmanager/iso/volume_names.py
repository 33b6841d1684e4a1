"""The name of the agent ISO's volume in a storage pool, and the version it carries.

Both the deploy (which uploads the ISO) and the install into a VM (which recognises the
agent disc in a VM's CD-ROM) read it, so it lives with the ISO, below both of them.
"""

from __future__ import annotations

import re

VOLUME_PREFIX = "kvmmanager-guest-agent-"
_VOLUME_RE = re.compile(r"^kvmmanager-guest-agent-(?P<version>[0-9A-Za-z.+~_-]+)\.iso$")


def volume_name(version: str) -> str:
    return f"{VOLUME_PREFIX}{version}.iso"


def volume_version(name: str) -> str | None:
    m = _VOLUME_RE.match(name)
    return m.group("version") if m else None
