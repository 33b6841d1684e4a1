"""Host side of the guest agent: framing, sync, transports, the client, qemu-ga via libvirt."""

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.models import GuestInfo

__all__ = ["AgentClient", "GuestInfo"]
