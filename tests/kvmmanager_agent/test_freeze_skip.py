"""A default freeze skips filesystems that cannot be frozen (a mounted CD-ROM answers
EOPNOTSUPP), as qemu-ga does; a freeze that names them still fails and thaws the rest."""

from __future__ import annotations

import errno

import pytest

from kvmmanager_agent.errors import AgentError
from kvmmanager_agent.methods.freeze import Freezer


class CdromBackend:
    def __init__(self) -> None:
        self.frozen: list[str] = []

    def freezable(self) -> list[str]:
        return ["/", "/mnt/cdrom"]

    def freeze(self, mp: str) -> None:
        if mp == "/mnt/cdrom":
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        self.frozen.append(mp)

    def thaw(self, mp: str) -> None:
        self.frozen.remove(mp)


def test_default_freeze_skips_what_cannot_freeze() -> None:
    backend = CdromBackend()
    f = Freezer(60, backend)
    result = f.freeze(None, 30)
    assert result["mount_points"] == ["/"] and backend.frozen == ["/"]
    assert f.thaw()["thawed"] == 1 and backend.frozen == []


def test_naming_an_unfreezable_mount_fails_and_thaws_the_rest() -> None:
    backend = CdromBackend()
    f = Freezer(60, backend)
    with pytest.raises(AgentError, match="/mnt/cdrom"):
        f.freeze(["/", "/mnt/cdrom"], 30)
    assert backend.frozen == [] and not f.is_frozen()
