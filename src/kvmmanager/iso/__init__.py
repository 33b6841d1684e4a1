"""The guest-agent ISO: its builder (pycdlib, reproducible) and its locator (config + fallbacks)."""

from __future__ import annotations

ISO_NAME = "kvmmanager-guest-agent.iso"
VOLUME_LABEL = "KVMM_AGENT"
CHANNEL_NAME = "org.kvmmanager.agent.0"


def agent_version() -> str:
    """The version of the agent this manager ships (the ISO's VERSION file)."""
    from kvmmanager_agent import __version__

    return __version__
