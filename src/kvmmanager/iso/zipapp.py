"""The agent zipapp that goes onto the ISO and into the packages.

The agent package owns how it is zipped (`kvmmanager_agent.build.build_zipapp`,
deterministic under SOURCE_DATE_EPOCH); this module only adapts the call, so there is
one implementation of the zipapp format.
"""

from __future__ import annotations

from pathlib import Path

from kvmmanager_agent.build import build_zipapp


def build_agent_zipapp(out_path: Path) -> Path:
    return Path(build_zipapp(str(out_path)))
