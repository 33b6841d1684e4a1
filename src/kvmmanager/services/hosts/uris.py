"""Which libvirt URIs a host may be added with.

libvirt URIs are more than an address: `qemu+ext:///system?command=/path` runs a program as
the manager's user on every (re)connect, `?name=test:///etc/shadow` makes the daemon open
another driver's URI as root, and the test driver (`test:///some/file`) parses any file it
is pointed at and echoes its first line back in the connection error. Adding a host is an
admin action, but an admin of the manager is not root of its machine: only the transports
and parameters that reach a QEMU daemon are accepted. The test driver is refused unless
`libvirt.allow_test_driver` is set (the test suite does). The manager's own configured
`libvirt.default_uri` is trusted: it comes from the configuration file, not from a user.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from kvmmanager.core.errors import InvalidInput

TRANSPORTS = ("qemu", "qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+unix")
TEST_TRANSPORT = "test"
QEMU_PATHS = ("/system", "/session")
# Parameters of libvirt's remote driver that only choose how to reach and authenticate to
# the daemon. Refused (like any other): command (ssh/ext program to run), netcat (program
# run on the far side), name (the URI the daemon opens, e.g. another driver's file).
SAFE_PARAMS = frozenset(
    {
        "socket",
        "keyfile",
        "known_hosts",
        "known_hosts_verify",
        "pkipath",
        "sshauth",
        "no_tty",
        "no_verify",
        "tls_priority",
        "mode",
        "proxy",
    }
)


def check_host_uri(uri: str, *, allow_test_driver: bool = False, trusted: str = "") -> str:
    """`uri` when a host may be added with it, else InvalidInput naming the `uri` field.
    `trusted` is the configured default URI, accepted as it is."""
    if trusted and uri == trusted:
        return uri
    try:
        parts = urlsplit(uri)
        params = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InvalidInput(f"uri is not a valid libvirt URI: {exc}", field="uri") from None
    scheme = parts.scheme.lower()
    allowed = ", ".join(f"{t}://" for t in TRANSPORTS)
    if scheme == TEST_TRANSPORT:
        if not allow_test_driver:
            raise InvalidInput(
                "uri: the test driver is not enabled on this server "
                "(libvirt.allow_test_driver); use one of " + allowed,
                field="uri",
            )
        return uri
    if scheme not in TRANSPORTS:
        raise InvalidInput(
            f"uri: transport {parts.scheme!r} is not allowed; use one of {allowed}", field="uri"
        )
    if parts.path not in QEMU_PATHS:
        raise InvalidInput(
            f"uri: the path must be /system or /session, not {parts.path!r}", field="uri"
        )
    if parts.fragment:
        raise InvalidInput("uri must not have a #fragment", field="uri")
    for key, _ in params:
        if key not in SAFE_PARAMS:
            safe = ", ".join(sorted(SAFE_PARAMS))
            raise InvalidInput(
                f"uri: parameter {key!r} is not allowed (allowed: {safe})", field="uri"
            )
    return uri
