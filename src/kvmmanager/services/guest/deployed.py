"""What an agent ISO deploy did (guest/iso_deploy.py), in its own module: the installer
(guest/install.py) deploys before it inserts the disc, and iso_deploy builds on the installer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class DeployResult:
    host: str
    pool: str
    volume: str
    path: str
    version: str
    sha256: str
    size: int
    action: str  # uploaded | replaced | unchanged
    pool_created: bool = False
    removed: list[str] = field(default_factory=list)
    kept_in_use: dict[str, list[str]] = field(default_factory=dict)
    iso_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
