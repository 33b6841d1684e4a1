"""Typed models of libvirt XML (domain, devices, metadata, network, pool, volume,
capabilities) over lxml, virtinst style: edit what the model knows, keep everything else.

Modules: ``base`` (XMLObject and the property descriptors, parse and size helpers),
``domain``, ``devices``, ``metadata``, ``network``, ``pool``, ``volume``, ``capabilities``,
``validate`` (``validate_xml(xml, kind)`` with libvirt's schemas). Each module's docstring
has a usage example; the common names are re-exported here::

    from kvmmanager.virt.xml import Domain, Disk, Network, Pool, Volume
"""

from kvmmanager.virt.xml.base import XMLObject, parse_size, parse_xml
from kvmmanager.virt.xml.capabilities import Capabilities, DomainCapabilities
from kvmmanager.virt.xml.devices import (
    KVMM_AGENT_CHANNEL,
    QEMU_GA_CHANNEL,
    Channel,
    Console,
    Controller,
    Disk,
    Graphics,
    Input,
    Interface,
    MemBalloon,
    Rng,
    Serial,
    Tpm,
    Video,
    parse_device,
)
from kvmmanager.virt.xml.domain import OS, Domain, Features
from kvmmanager.virt.xml.metadata import NS_PREFIX, NS_URI, ManagerMetadata
from kvmmanager.virt.xml.network import IP, DhcpHost, DhcpRange, Network
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.volume import Volume

__all__ = [
    "IP",
    "KVMM_AGENT_CHANNEL",
    "NS_PREFIX",
    "NS_URI",
    "OS",
    "QEMU_GA_CHANNEL",
    "Capabilities",
    "Channel",
    "Console",
    "Controller",
    "DhcpHost",
    "DhcpRange",
    "Disk",
    "Domain",
    "DomainCapabilities",
    "Features",
    "Graphics",
    "Input",
    "Interface",
    "ManagerMetadata",
    "MemBalloon",
    "Network",
    "Pool",
    "Rng",
    "Serial",
    "Tpm",
    "Video",
    "Volume",
    "XMLObject",
    "parse_device",
    "parse_size",
    "parse_xml",
]
