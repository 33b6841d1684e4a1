"""libvirtError -> KvmmError: real errors from the test driver, and the codes it cannot
produce (agent, timeout, transport) built from libvirt's own error tuple."""

from __future__ import annotations

import libvirt
import pytest

from kvmmanager.core.errors import (
    AgentUnavailable,
    Cancelled,
    Conflict,
    HostUnavailable,
    InvalidInput,
    LibvirtRefused,
    NotFound,
    PermissionDenied,
    Timeout,
    Unsupported,
)
from kvmmanager.virt.errors import translate_libvirt_error


def _raised(fn, *args) -> libvirt.libvirtError:
    with pytest.raises(libvirt.libvirtError) as info:
        fn(*args)
    return info.value


def _synthetic(code: int, domain: int = libvirt.VIR_FROM_QEMU, msg: str = "boom"):
    exc = libvirt.libvirtError(msg)
    exc.err = (code, domain, msg, 2, None, None, None, -1, -1)
    return exc


@pytest.fixture
def conn(testnode_uri):
    c = libvirt.open(testnode_uri)
    yield c
    c.close()


def test_real_errors_from_the_test_driver(conn):
    missing = translate_libvirt_error(_raised(conn.lookupByName, "kvmm-t-host-missing"))
    assert isinstance(missing, NotFound) and missing.status == 404
    assert missing.message == "Domain not found"
    assert missing.details["libvirt_code"] == libvirt.VIR_ERR_NO_DOMAIN

    stopped = conn.lookupByName("kvmm-t-host-db")
    stopped.destroy()
    not_running = translate_libvirt_error(_raised(stopped.destroy))
    assert isinstance(not_running, Conflict) and not_running.status == 409
    assert isinstance(translate_libvirt_error(_raised(conn.defineXML, "<domain")), InvalidInput)
    no_support = _raised(conn.getDomainCapabilities)
    assert isinstance(translate_libvirt_error(no_support), Unsupported)
    assert isinstance(
        translate_libvirt_error(_raised(conn.networkLookupByName, "kvmm-t-host-x")), NotFound
    )
    assert isinstance(
        translate_libvirt_error(_raised(conn.storagePoolLookupByName, "kvmm-t-host-x")), NotFound
    )


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, AgentUnavailable),
        (libvirt.VIR_ERR_AGENT_UNSYNCED, AgentUnavailable),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, Timeout),
        (libvirt.VIR_ERR_OPERATION_ABORTED, Cancelled),
        (libvirt.VIR_ERR_ACCESS_DENIED, PermissionDenied),
        (libvirt.VIR_ERR_NO_CONNECT, HostUnavailable),
        (libvirt.VIR_ERR_RPC, HostUnavailable),
        (libvirt.VIR_ERR_AUTH_FAILED, HostUnavailable),
        (libvirt.VIR_ERR_DOM_EXIST, Conflict),
        (libvirt.VIR_ERR_OPERATION_DENIED, Conflict),
        (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, Unsupported),
        (libvirt.VIR_ERR_XML_DETAIL, InvalidInput),
        (libvirt.VIR_ERR_NO_STORAGE_VOL, NotFound),
    ],
)
def test_code_mapping(code, cls):
    err = translate_libvirt_error(_synthetic(code, msg="libvirt says why"))
    assert type(err) is cls
    assert err.message == "libvirt says why"


def test_system_error_is_a_host_problem_only_when_the_connection_is_gone():
    local = _synthetic(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE, "No such file")
    assert type(translate_libvirt_error(local)) is LibvirtRefused
    assert type(translate_libvirt_error(local, connection_dead=True)) is HostUnavailable
    transport = _synthetic(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv")
    assert type(translate_libvirt_error(transport)) is HostUnavailable
    internal = _synthetic(libvirt.VIR_ERR_INTERNAL_ERROR)
    # libvirt's (or QEMU's) own failure: a 502, not the manager's 500 (issue 17 try).
    refused = translate_libvirt_error(internal)
    assert type(refused) is LibvirtRefused and refused.status == 502
    assert type(translate_libvirt_error(internal, connection_dead=True)) is HostUnavailable


def test_cause_is_kept():
    exc = _synthetic(libvirt.VIR_ERR_NO_DOMAIN)
    assert translate_libvirt_error(exc).__cause__ is exc
