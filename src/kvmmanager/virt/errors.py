"""libvirt errors -> the product's error vocabulary (kvmmanager.core.errors).

libvirt's own message is kept verbatim: it is usually the most precise explanation the
user can get ("domain 'x' is already running"). Only the class (and so the HTTP status and
CLI exit code) is chosen here, from libvirt's error code; a code no class fits (its
"internal error" above all) is LibvirtRefused, a 502: the hypervisor failed, not the
manager.
"""

from __future__ import annotations

import re

import libvirt

from kvmmanager.core.errors import (
    AgentUnavailable,
    Cancelled,
    Conflict,
    HostUnavailable,
    InvalidInput,
    KvmmError,
    LibvirtRefused,
    NotFound,
    PermissionDenied,
    Timeout,
    Unsupported,
)


def _codes(*names: str) -> frozenset[int]:
    # getattr: a constant missing from an older binding simply never matches.
    return frozenset(getattr(libvirt, n) for n in names if hasattr(libvirt, n))


_NOT_FOUND = _codes(
    "VIR_ERR_NO_DOMAIN",
    "VIR_ERR_NO_NETWORK",
    "VIR_ERR_NO_STORAGE_POOL",
    "VIR_ERR_NO_STORAGE_VOL",
    "VIR_ERR_NO_NODE_DEVICE",
    "VIR_ERR_NO_SECRET",
    "VIR_ERR_NO_INTERFACE",
    "VIR_ERR_NO_NWFILTER",
    "VIR_ERR_NO_NWFILTER_BINDING",
    "VIR_ERR_NO_DOMAIN_SNAPSHOT",
    "VIR_ERR_NO_DOMAIN_CHECKPOINT",
    "VIR_ERR_NO_DOMAIN_BACKUP",
    "VIR_ERR_NO_DOMAIN_METADATA",
    "VIR_ERR_NO_NETWORK_PORT",
    "VIR_ERR_DEVICE_MISSING",
)
_CONFLICT = _codes(
    "VIR_ERR_OPERATION_INVALID",
    "VIR_ERR_OPERATION_DENIED",
    "VIR_ERR_OPERATION_FAILED",
    "VIR_ERR_DOM_EXIST",
    "VIR_ERR_NETWORK_EXIST",
    "VIR_ERR_NETWORK_PORT_EXIST",
    "VIR_ERR_STORAGE_VOL_EXIST",
    "VIR_ERR_STORAGE_POOL_BUILT",
    "VIR_ERR_RESOURCE_BUSY",
    "VIR_ERR_BLOCK_COPY_ACTIVE",
    "VIR_ERR_SNAPSHOT_REVERT_RISKY",
    "VIR_ERR_MIGRATE_UNSAFE",
    "VIR_ERR_CHECKPOINT_INCONSISTENT",
)
_INVALID = _codes(
    "VIR_ERR_INVALID_ARG",
    "VIR_ERR_XML_ERROR",
    "VIR_ERR_XML_DETAIL",
    "VIR_ERR_XML_INVALID_SCHEMA",
    "VIR_ERR_INVALID_MAC",
    "VIR_ERR_CONF_SYNTAX",
    "VIR_ERR_OS_TYPE",
    "VIR_ERR_NO_OS",
    "VIR_ERR_NO_KERNEL",
    "VIR_ERR_NO_ROOT",
    "VIR_ERR_NO_SOURCE",
    "VIR_ERR_NO_TARGET",
    "VIR_ERR_NO_NAME",
    "VIR_ERR_NO_DEVICE",
    "VIR_ERR_PARSE_FAILED",
    "VIR_ERR_OVERFLOW",
)
_UNSUPPORTED = _codes(
    "VIR_ERR_CONFIG_UNSUPPORTED",
    "VIR_ERR_NO_SUPPORT",
    "VIR_ERR_ARGUMENT_UNSUPPORTED",
    "VIR_ERR_OPERATION_UNSUPPORTED",
    "VIR_ERR_CPU_INCOMPATIBLE",
    "VIR_ERR_NO_SECURITY_MODEL",
)
# Always about reaching the host, whatever state the connection object is in.
_HOST_DOWN = _codes(
    "VIR_ERR_NO_CONNECT",
    "VIR_ERR_RPC",
    "VIR_ERR_INVALID_CONN",
    "VIR_ERR_AUTH_FAILED",
    "VIR_ERR_AUTH_CANCELLED",
    "VIR_ERR_AUTH_UNAVAILABLE",
    "VIR_ERR_UNKNOWN_HOST",
    "VIR_ERR_SSH",
    "VIR_ERR_LIBSSH",
    "VIR_ERR_GNUTLS_ERROR",
)
# Ambiguous codes: a host problem only when the connection is gone or the error comes
# from the transport layers (a local SYSTEM_ERROR can also be "disk image missing").
_HOST_DOWN_IF_DEAD = _codes("VIR_ERR_SYSTEM_ERROR", "VIR_ERR_INTERNAL_ERROR")
_TRANSPORT_DOMAINS = _codes("VIR_FROM_RPC", "VIR_FROM_REMOTE")
_AGENT = _codes("VIR_ERR_AGENT_UNRESPONSIVE", "VIR_ERR_AGENT_UNSYNCED")
_TIMEOUT = _codes("VIR_ERR_OPERATION_TIMEOUT")
_CANCELLED = _codes("VIR_ERR_OPERATION_ABORTED")
_DENIED = _codes("VIR_ERR_ACCESS_DENIED")

_TABLE: tuple[tuple[frozenset[int], type[KvmmError]], ...] = (
    (_NOT_FOUND, NotFound),
    (_CONFLICT, Conflict),
    (_INVALID, InvalidInput),
    (_UNSUPPORTED, Unsupported),
    (_HOST_DOWN, HostUnavailable),
    (_AGENT, AgentUnavailable),
    (_TIMEOUT, Timeout),
    (_CANCELLED, Cancelled),
    (_DENIED, PermissionDenied),
)


# libvirt's VIR_ERR_NO_SUPPORT text names only its C function ("this function is not
# supported by the connection driver: virStorageVolDownload"); a user needs what the host
# cannot do. The function goes into the error's details (and stays in the message only
# where no words for it are known).
_NO_SUPPORT_FUNCTION = re.compile(r"not supported by the connection driver: (vir\w+)")
_RUNNING_DEVICES = "change the devices of a running VM; shut it down first"
_CANNOT = {
    "virStorageVolDownload": "download volumes (volume downloads, export bundles, backup checks)",
    "virStorageVolUpload": "upload volumes (uploads, the agent ISO, cloud images)",
    "virStorageVolResize": "resize volumes",
    "virDomainAttachDeviceFlags": _RUNNING_DEVICES,
    "virDomainDetachDeviceFlags": _RUNNING_DEVICES,
    "virDomainDetachDeviceAlias": _RUNNING_DEVICES,
    "virDomainUpdateDeviceFlags": _RUNNING_DEVICES,
    "virConnectGetDomainCapabilities": "report which VMs it can run (domain capabilities)",
    "virNetworkGetDHCPLeases": "report its networks' DHCP leases",
    "virDomainInterfaceAddresses": "report a VM's addresses",
    "virDomainBackupBegin": "take backups with libvirt's backup API",
}


def unsupported_function(message: str) -> str | None:
    """The libvirt function a "not supported by the connection driver" message names."""
    found = _NO_SUPPORT_FUNCTION.search(message)
    return found.group(1) if found else None


def unsupported_in_words(host: str, function: str) -> str:
    """What host `host` cannot do, its libvirt driver lacking `function`."""
    what = _CANNOT.get(function)
    if what is None:
        return f"host '{host}' cannot do this: its libvirt driver does not support {function}"
    return f"host '{host}' cannot {what} (its libvirt driver does not support it)"


def libvirt_message(exc: libvirt.libvirtError) -> str:
    msg = exc.get_error_message() or str(exc)
    return msg.strip() or "libvirt error"


def translate_libvirt_error(
    exc: libvirt.libvirtError, *, connection_dead: bool = False
) -> KvmmError:
    """Map a libvirtError to a KvmmError of the right class, keeping libvirt's message.

    `connection_dead` tells that the caller's connection was found dead after the failure:
    then the generic SYSTEM/INTERNAL errors mean "host unreachable", not a server bug.
    """
    code = exc.get_error_code()
    message = libvirt_message(exc)
    details = {
        "libvirt_code": code,
        "libvirt_domain": exc.get_error_domain(),
    }
    if code in _HOST_DOWN_IF_DEAD and (
        connection_dead or exc.get_error_domain() in _TRANSPORT_DOMAINS
    ):
        return _build(HostUnavailable, message, details, exc)
    for codes, cls in _TABLE:
        if code in codes:
            return _build(cls, message, details, exc)
    return _build(LibvirtRefused, message, details, exc)


def _build(
    cls: type[KvmmError], message: str, details: dict[str, int | None], exc: Exception
) -> KvmmError:
    err = cls(message, details=details)
    err.__cause__ = exc
    return err
