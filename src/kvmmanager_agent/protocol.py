"""The single description of the kvmmanager agent protocol.

Everything both sides must agree on lives here: the protocol version, error codes,
limits and the method registry (parameters with types, defaults and bounds; result
fields; the capability a method needs; whether it runs while filesystems are frozen;
its timeout class). The agent dispatches from this registry, the host client validates
against it, and docs/protocol.md is generated from it:

    python -m kvmmanager_agent.protocol --markdown > docs/protocol.md

Standard library only and Python 3.8 compatible: it runs inside guests.
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict

from .jsonwire import MAX_INT_DIGITS

# typing costs ~2 MB of resident memory in the guest agent; annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Tuple

PROTOCOL_VERSION = 2
# Version 1 is the original protocol (the ten methods, no sync); a host asking for it
# gets the same answers, minus nothing: every v1 method and field is unchanged in v2.
MIN_PROTOCOL_VERSION = 1
# What get_agent_info's `protocol_version` says: the original protocol's version string
# (guest-agent/PROTOCOL.md of theonlytruebigmac/kvm-manager), whose ten methods keep
# every field's name and JSON type here. The negotiated integer has its own field.
ORIGINAL_PROTOCOL_VERSION = "1.0.0"
CHANNEL_NAME = "org.kvmmanager.agent.0"
DEVICE_PATH = "/dev/virtio-ports/" + CHANNEL_NAME
SYNC_BYTE = b"\xff"

# JSON-RPC 2.0 standard codes, then the agent's own.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
COMMAND_FAILED = -32000
PERMISSION_DENIED = -32001
NOT_FOUND = -32002
TIMEOUT = -32003
BUSY = -32004

ERROR_CODES = OrderedDict(
    [
        (PARSE_ERROR, ("parse_error", "the line is not valid UTF-8 JSON")),
        (
            INVALID_REQUEST,
            ("invalid_request", "not a JSON-RPC 2.0 request, or the line is too long"),
        ),
        (
            METHOD_NOT_FOUND,
            ("method_not_found", "unknown method, or disabled by the agent's config"),
        ),
        (
            INVALID_PARAMS,
            (
                "invalid_params",
                "a parameter is missing, unknown, of the wrong type or out of range; "
                "`data.field` names it",
            ),
        ),
        (INTERNAL_ERROR, ("internal_error", "a bug in the agent; the agent keeps running")),
        (
            COMMAND_FAILED,
            ("command_failed", "the operation ran and failed (OS error, non-allowed state)"),
        ),
        (
            PERMISSION_DENIED,
            ("permission_denied", "outside the allowed paths or commands, or refused while frozen"),
        ),
        (NOT_FOUND, ("not_found", "file, user, service, handle or process does not exist")),
        (
            TIMEOUT,
            (
                "timeout",
                "the operation exceeded its time limit (exec: the process group was killed)",
            ),
        ),
        (BUSY, ("busy", "too many concurrent requests or requests per second; retry later")),
    ]
)

# Limits. The agent's config may lower or raise the first three.
MAX_LINE_BYTES = 1024 * 1024
MAX_CONCURRENT_REQUESTS = 8
MAX_REQUESTS_PER_SECOND = 200
# The token bucket holds this many: a burst a host may send at once before the rate applies.
MAX_REQUEST_BURST = 400
MAX_BATCH = 64
MAX_SIMPLE_FILE_BYTES = 10 * 1024 * 1024
# Raw bytes per transfer chunk; base64 of 512 KiB (683 KiB) fits in one 1 MiB line.
MAX_CHUNK_BYTES = 512 * 1024
# A binary chunk (file_write_chunk `binary_length`) travels after its request line as
# raw bytes: no base64, no JSON string to parse, not bound by the line limit.
MAX_BINARY_CHUNK_BYTES = 4 * 1024 * 1024
# A binary request line is short; longer lines are never checked for a payload.
MAX_BINARY_HEADER_BYTES = 4096
# A raw payload that stalls is abandoned: no byte of it for this long, or not all of it
# this long after its request line, and the bytes received are dropped (nothing is
# written), the request is answered -32003 and the framer reads lines again, so a host's
# 0xFF + sync sent after its own timeout (5 s at the least) is not taken as payload.
PAYLOAD_GAP_SECONDS = 3.0
PAYLOAD_TOTAL_SECONDS = 60.0
# The writes of one handle the host may keep in flight at once (file_open tells it).
MAX_CHUNKS_IN_FLIGHT = 4
# How long a write that arrived before its predecessor waits for it (then it is refused).
WRITE_ORDER_WAIT_SECONDS = 10.0
MAX_OPEN_HANDLES = 16
# Transfer offsets beyond this are refused as params (os.pread/pwrite take a C off_t).
MAX_FILE_OFFSET = 2**62
MAX_EXEC_OUTPUT_BYTES = 4 * 1024 * 1024
# Host side: the largest reply it accepts.
MAX_REPLY_BYTES = 16 * 1024 * 1024

# Timeout classes, in seconds, as the host applies them by default.
TIMEOUT_CLASSES = OrderedDict([("short", 5.0), ("normal", 30.0), ("long", 300.0)])

# Capabilities group methods for the agent's config and the host's role checks.
# `role` is the least host role that may call a method of that capability.
CAPABILITIES = OrderedDict(
    [
        ("core", ("viewer", "ping, sync, agent info")),
        ("facts", ("viewer", "read-only facts about the guest")),
        ("exec", ("operator", "run allowed commands")),
        ("files", ("operator", "read and write files under the allowed paths")),
        ("power", ("operator", "shutdown and reboot")),
        ("freeze", ("operator", "freeze and thaw filesystems")),
        ("admin", ("operator", "change guest state: time, services, ssh keys")),
    ]
)


class Param:
    """One named parameter; `kind` is its JSON type (string, integer, number, ...)."""

    __slots__ = ("choices", "default", "description", "kind", "max", "min", "name", "required")

    def __init__(
        self,
        name: str,
        kind: str,
        description: str,
        required: bool = False,
        default: Any = None,
        min: Optional[float] = None,
        max: Optional[float] = None,
        choices: Optional[Sequence[Any]] = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.description = description
        self.required = required
        self.default = default
        self.min = min  # numbers: value bounds; strings and arrays: length bounds
        self.max = max
        self.choices = tuple(choices) if choices is not None else None


class Method:
    __slots__ = (
        "capability",
        "description",
        "frozen_ok",
        "inline",
        "name",
        "params",
        "rate_exempt",
        "result",
        "since",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        description: str,
        params: Sequence[Param],
        result: Sequence[Tuple[str, str]],
        capability: str = "facts",
        frozen_ok: bool = True,
        timeout: str = "normal",
        since: int = 1,
        inline: bool = False,
        rate_exempt: bool = False,
    ) -> None:
        self.name = name
        # Never refused for rate: liveness and handshake calls cost next to nothing, and
        # a host that asks quickly must not be told "busy" by its own heartbeat.
        self.rate_exempt = rate_exempt
        # Cheap and never blocking: answered by the reader thread itself, skipping the
        # worker pool's thread handoff (the agent's latency floor for ping).
        self.inline = inline
        self.description = description
        self.params = tuple(params)
        self.result = tuple(result)
        self.capability = capability
        self.frozen_ok = frozen_ok
        self.timeout = timeout
        self.since = since

    @property
    def role(self) -> str:
        return CAPABILITIES[self.capability][0]

    @property
    def timeout_seconds(self) -> float:
        return TIMEOUT_CLASSES[self.timeout]


# Any, not type: isinstance() with these narrows the checked value, and the bounds checks
# below compare it with numbers or take its len() by kind.
_TYPES: Dict[str, Tuple[Any, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}

P = Param
_fs_entry = (
    "filesystems[]: mount_point, device, fs_type, total_bytes, used_bytes, available_bytes, "
    "used_percent"
)

_METHOD_LIST = [
    Method(
        "ping",
        "Liveness check.",
        [],
        [
            ("pong", "true"),
            ("timestamp", "guest Unix time, integer seconds"),
            ("timestamp_ms", "guest Unix time, integer milliseconds"),
        ],
        capability="core",
        timeout="short",
        inline=True,
        rate_exempt=True,
    ),
    Method(
        "sync",
        "Flush stale bytes: the agent writes one 0xFF byte, then this reply. The host "
        "discards everything it reads until 0xFF followed by the reply with its nonce.",
        [
            P(
                "nonce",
                "integer",
                "random number chosen by the host",
                required=True,
                min=0,
                max=2**53,
            )
        ],
        [("nonce", "the request's nonce")],
        capability="core",
        timeout="short",
        since=2,
        inline=True,
        rate_exempt=True,
    ),
    Method(
        "get_agent_info",
        "Agent version, negotiated protocol version and the methods this agent accepts "
        "under its current config.",
        [
            P(
                "protocol_version",
                "integer",
                "highest version the host speaks; the reply carries min(host, agent)",
                default=PROTOCOL_VERSION,
                min=1,
                max=1000,
            )
        ],
        [
            ("version", "agent version"),
            ("protocol_version", 'the original protocol\'s version string, "1.0.0"'),
            ("negotiated_protocol_version", "integer: min(host's, agent's) version"),
            ("max_protocol_version", "integer: highest version the agent speaks"),
            ("platform", "sys.platform, e.g. linux"),
            ("python_version", "the guest's Python version"),
            ("capabilities", "list of method names accepted now"),
            (
                "limits",
                "object: max_line_bytes, max_concurrent_requests, requests_per_second, "
                "max_chunk_bytes, max_file_bytes",
            ),
        ],
        capability="core",
        timeout="short",
        inline=True,
        rate_exempt=True,
    ),
    Method(
        "get_system_info",
        "Operating system facts.",
        [],
        [
            ("os_type", "linux"),
            ("os_name", "PRETTY_NAME or NAME of /etc/os-release"),
            ("os_version", "VERSION_ID"),
            ("kernel_version", "uname release"),
            ("hostname", "node name"),
            ("architecture", "uname machine"),
            ("cpu_count", "online CPUs"),
            ("total_memory_kb", "MemTotal"),
            ("uptime_seconds", "integer seconds since boot"),
            ("uptime", "float seconds since boot"),
            ("os_id", "ID of /etc/os-release"),
            ("timezone", "local timezone name"),
        ],
    ),
    Method(
        "get_network_info",
        "Network interfaces with their addresses.",
        [],
        [
            (
                "interfaces[]",
                "name, mac_address, ipv4_addresses (CIDR), ipv6_addresses (CIDR), state, mtu",
            )
        ],
    ),
    Method(
        "exec_command",
        "Run an allowed command without a shell, wait for it, return its output. On "
        "timeout the whole process group is killed and the error is -32003.",
        [
            P(
                "command",
                "string",
                "name or absolute path; must be in security.command_whitelist",
                required=True,
                min=1,
                max=4096,
            ),
            P("args", "array", "arguments (strings)", default=[], max=1024),
            P(
                "timeout_seconds",
                "number",
                "capped by security.max_command_timeout_seconds",
                default=30,
                min=0.1,
                max=86400,
            ),
            P("capture_output", "boolean", "return stdout and stderr", default=True),
            P(
                "working_directory",
                "string",
                "absolute directory to run in",
                default=None,
                max=4096,
            ),
            P("input", "string", "text written to stdin", default=None, max=MAX_SIMPLE_FILE_BYTES),
            P("env", "object", "extra environment variables", default=None),
        ],
        [
            ("exit_code", "process exit status (negative: killed by that signal)"),
            ("stdout", "text, UTF-8 with replacement"),
            ("stderr", "text, UTF-8 with replacement"),
            ("execution_time_ms", "integer"),
            ("truncated", "true when output exceeded the cap"),
        ],
        capability="exec",
        frozen_ok=False,
        timeout="long",
    ),
    Method(
        "exec_start",
        "Start an allowed command in the background; poll it with exec_poll (streaming).",
        [
            P("command", "string", "as exec_command", required=True, min=1, max=4096),
            P("args", "array", "arguments (strings)", default=[], max=1024),
            P(
                "timeout_seconds",
                "number",
                "killed (process group) after this",
                default=300,
                min=0.1,
                max=86400,
            ),
            P(
                "working_directory",
                "string",
                "absolute directory to run in",
                default=None,
                max=4096,
            ),
            P("env", "object", "extra environment variables", default=None),
        ],
        [("handle", "integer to pass to exec_poll"), ("pid", "process id")],
        capability="exec",
        frozen_ok=False,
        since=2,
    ),
    Method(
        "exec_poll",
        "Output produced since the last poll and, once finished, the exit code. The "
        "handle is released by the poll that reports `exited`.",
        [
            P("handle", "integer", "from exec_start", required=True, min=0),
            P(
                "wait_seconds",
                "number",
                "wait up to this long for output or exit",
                default=0,
                min=0,
                max=10,
            ),
        ],
        [
            ("stdout", "base64 of the new stdout bytes"),
            ("stderr", "base64 of the new stderr bytes"),
            ("exited", "boolean"),
            ("exit_code", "integer or null"),
            ("timed_out", "boolean"),
        ],
        capability="exec",
        since=2,
    ),
    Method(
        "file_read",
        "Read a whole small file (at most 10 MB and security.max_file_size_mb).",
        [
            P(
                "path",
                "string",
                "absolute path under security.allowed_read_paths",
                required=True,
                min=1,
                max=4096,
            ),
            P(
                "encoding",
                "string",
                "encoding of `content`",
                default="utf8",
                choices=("utf8", "base64"),
            ),
        ],
        [("content", "file content"), ("size_bytes", "integer"), ("encoding", "utf8 or base64")],
        capability="files",
    ),
    Method(
        "file_write",
        "Write a whole small file (at most 10 MB), never through a symlink.",
        [
            P(
                "path",
                "string",
                "absolute path under security.allowed_write_paths",
                required=True,
                min=1,
                max=4096,
            ),
            P("content", "string", "the data", required=True, max=2 * MAX_SIMPLE_FILE_BYTES),
            P(
                "encoding",
                "string",
                "encoding of `content`",
                default="utf8",
                choices=("utf8", "base64"),
            ),
            P("create_dirs", "boolean", "create missing parent directories", default=False),
            P("permissions", "string", "octal mode such as '0644'", default=None, min=3, max=5),
        ],
        [("bytes_written", "integer"), ("path", "the path written")],
        capability="files",
        frozen_ok=False,
    ),
    Method(
        "file_open",
        "Open a file for a chunked transfer of any size. Mode `r` reads; `w` writes "
        "(truncates unless `resume`, which keeps the existing bytes so the host "
        "continues from `size_bytes`). Writes go to a hidden `.NAME.kvmm-part` "
        "sibling that file_close renames over the file: an interrupted transfer "
        "never leaves a truncated file in place.",
        [
            P(
                "path",
                "string",
                "absolute path under the allowed read or write paths",
                required=True,
                min=1,
                max=4096,
            ),
            P("mode", "string", "r or w", default="r", choices=("r", "w")),
            P("resume", "boolean", "w only: keep existing content", default=False),
            P("create_dirs", "boolean", "w only: create missing parent directories", default=False),
            P(
                "permissions",
                "string",
                "w only: octal mode for a new file",
                default=None,
                min=3,
                max=5,
            ),
        ],
        [
            ("handle", "integer"),
            ("size_bytes", "current size of the file"),
            ("max_chunk_bytes", "largest base64 chunk accepted"),
            (
                "max_binary_chunk_bytes",
                "w only: largest `binary_length` of file_write_chunk (absent: an older agent, "
                "base64 `data` only, one chunk at a time)",
            ),
            (
                "max_chunks_in_flight",
                "w only: file_write_chunk calls of this handle the host may pipeline",
            ),
        ],
        capability="files",
        frozen_ok=True,
        since=2,
    ),
    Method(
        "file_read_chunk",
        "Read up to `length` bytes at `offset`. With `binary` the bytes are not in the "
        "reply: they follow its line raw (`binary_length` of them), as an upload's do.",
        [
            P("handle", "integer", "from file_open", required=True, min=0),
            P("offset", "integer", "byte offset", required=True, min=0, max=MAX_FILE_OFFSET),
            P(
                "length",
                "integer",
                "bytes wanted (at most max_chunk_bytes, or max_binary_chunk_bytes with binary)",
                default=MAX_CHUNK_BYTES,
                min=1,
                max=MAX_BINARY_CHUNK_BYTES,
            ),
            P("binary", "boolean", "send the bytes raw after the reply line", default=False),
        ],
        [
            ("data", "base64 (absent with binary)"),
            ("binary_length", "with binary: how many raw bytes follow the reply line"),
            ("offset", "integer"),
            ("length", "bytes returned"),
            ("eof", "boolean"),
        ],
        capability="files",
        since=2,
    ),
    Method(
        "file_write_chunk",
        "Write bytes at `offset`, which must be the end of what this handle holds (the "
        "size at file_open plus every chunk written since): a chunk already written is "
        "refused as a duplicate, one past the end as missing its predecessor. Chunks come "
        "either as base64 `data` or as `binary_length` raw bytes that follow the request's "
        "newline on the channel (no base64; the request line itself stays under %d bytes, "
        "single, not in a batch). The host may keep `max_chunks_in_flight` writes of one "
        "handle in flight: they are applied in offset order (one that arrives early waits "
        "up to %g s for its predecessor)." % (MAX_BINARY_HEADER_BYTES, WRITE_ORDER_WAIT_SECONDS),
        [
            P("handle", "integer", "from file_open", required=True, min=0),
            P("offset", "integer", "byte offset", required=True, min=0, max=MAX_FILE_OFFSET),
            P(
                "data",
                "string",
                "base64 (or give binary_length)",
                max=(MAX_CHUNK_BYTES * 4) // 3 + 4,
            ),
            P(
                "binary_length",
                "integer",
                "raw bytes following the request line (instead of data)",
                min=1,
                max=MAX_BINARY_CHUNK_BYTES,
            ),
        ],
        [("written", "bytes written"), ("size_bytes", "file size afterwards")],
        capability="files",
        frozen_ok=False,
        since=2,
    ),
    Method(
        "file_close",
        "Close a transfer handle; returns the sha256 of the whole file for verification. "
        "A written file is put in its place now, unless `abort`.",
        [
            P("handle", "integer", "from file_open", required=True, min=0),
            P(
                "abort",
                "boolean",
                "w only: keep the partial file aside (for a resume), do not put it in place",
                default=False,
            ),
        ],
        [("size_bytes", "integer"), ("sha256", "hex digest of the file")],
        capability="files",
        timeout="long",
        since=2,
    ),
    Method(
        "file_stat",
        "Size, type, mode and sha256 (optional) of a path under the allowed read paths.",
        [
            P("path", "string", "absolute path", required=True, min=1, max=4096),
            P("sha256", "boolean", "also hash a regular file", default=False),
        ],
        [
            ("size_bytes", "integer"),
            ("type", "file, directory, other"),
            ("mode", "octal string"),
            ("mtime", "float"),
            ("sha256", "hex or null"),
        ],
        capability="files",
        timeout="long",
        since=2,
    ),
    Method(
        "shutdown",
        "Power off. The reply is sent first, then the guest acts after `timeout_seconds`.",
        [
            P("timeout_seconds", "integer", "delay before acting", default=0, min=0, max=3600),
            P("force", "boolean", "skip the init system (poweroff -f)", default=False),
        ],
        [("initiated", "true"), ("message", "what will happen")],
        capability="power",
    ),
    Method(
        "reboot",
        "Reboot. The reply is sent first, then the guest acts after `timeout_seconds`.",
        [
            P("timeout_seconds", "integer", "delay before acting", default=0, min=0, max=3600),
            P("force", "boolean", "skip the init system (reboot -f)", default=False),
        ],
        [("initiated", "true"), ("message", "what will happen")],
        capability="power",
    ),
    Method(
        "get_disk_usage",
        "Usage of the real (non-pseudo) mounted filesystems.",
        [],
        [(_fs_entry, "")],
    ),
    Method(
        "get_metrics",
        "Resource usage. CPU % is measured since the previous call (or over 100 ms on the first).",
        [],
        [
            ("cpu_percent", "float"),
            ("load_average", "[1, 5, 15]"),
            ("memory", "total_kb, available_kb, used_kb, used_percent"),
            ("swap", "total_kb, free_kb, used_kb"),
            ("filesystems[]", "as get_disk_usage"),
            ("network[]", "name, rx_bytes, tx_bytes, rx_packets, tx_packets, rx_errors, tx_errors"),
            ("uptime_seconds", "float"),
        ],
        since=2,
    ),
    Method(
        "list_processes",
        "Processes, largest resident memory first.",
        [P("limit", "integer", "at most this many", default=200, min=1, max=5000)],
        [
            ("processes[]", "pid, ppid, user, name, state, rss_kb, cmdline, start_seconds"),
            ("total", "count of all processes"),
        ],
        since=2,
    ),
    Method(
        "get_users",
        "Logged-in sessions from utmp.",
        [],
        [("users[]", "user, terminal, host, login_time, pid")],
        since=2,
    ),
    Method(
        "get_time",
        "Guest clock.",
        [],
        [("timestamp", "float Unix time"), ("timezone", "name"), ("utc_offset_seconds", "integer")],
        since=2,
        inline=True,
    ),
    Method(
        "set_time",
        "Set the guest clock (CLOCK_REALTIME).",
        [P("timestamp", "number", "Unix time", required=True, min=0, max=2**40)],
        [("timestamp", "the clock after setting")],
        capability="admin",
        frozen_ok=False,
        since=2,
    ),
    Method(
        "ssh_authorized_keys",
        "List, add or remove a user's ~/.ssh/authorized_keys entries.",
        [
            P("user", "string", "account name", required=True, min=1, max=64),
            P(
                "action",
                "string",
                "list, add or remove",
                default="list",
                choices=("list", "add", "remove"),
            ),
            P("key", "string", "one public key line (add/remove)", default=None, max=16384),
        ],
        [("keys", "the user's keys after the action"), ("changed", "boolean")],
        capability="admin",
        frozen_ok=False,
        since=2,
    ),
    Method(
        "service_status",
        "State of a service (systemd or OpenRC).",
        [P("name", "string", "service name", required=True, min=1, max=256)],
        [
            ("name", "service"),
            ("init_system", "systemd or openrc"),
            ("active", "boolean"),
            ("enabled", "boolean or null"),
            ("status", "init system's word"),
        ],
        since=2,
    ),
    Method(
        "service_action",
        "Start, stop, restart, reload, enable or disable a service.",
        [
            P("name", "string", "service name", required=True, min=1, max=256),
            P(
                "action",
                "string",
                "what to do",
                required=True,
                choices=("start", "stop", "restart", "reload", "enable", "disable"),
            ),
        ],
        [
            ("name", "service"),
            ("action", "done"),
            ("init_system", "systemd or openrc"),
            ("active", "boolean"),
        ],
        capability="admin",
        frozen_ok=False,
        timeout="long",
        since=2,
    ),
    Method(
        "fsfreeze_freeze",
        "Freeze filesystems (FIFREEZE). They are thawed automatically after "
        "`timeout_seconds` so a lost host never leaves the guest frozen. While frozen, "
        "only methods marked frozen-safe are accepted.",
        [
            P(
                "mount_points",
                "array",
                "default: every freezable filesystem",
                default=None,
                max=256,
            ),
            P(
                "timeout_seconds",
                "number",
                "automatic thaw, capped by the agent's freeze_timeout_seconds",
                default=60,
                min=1,
                max=3600,
            ),
        ],
        [
            ("frozen", "number of filesystems frozen (as qemu-ga counts)"),
            ("mount_points", "the mount points frozen"),
            ("thaw_deadline", "Unix time of the automatic thaw"),
        ],
        capability="freeze",
        timeout="long",
        since=2,
    ),
    Method(
        "fsfreeze_thaw",
        "Thaw every filesystem this agent froze.",
        [],
        [("thawed", "number of filesystems thawed"), ("mount_points", "the mount points thawed")],
        capability="freeze",
        timeout="long",
        since=2,
    ),
    Method(
        "fsfreeze_status",
        "Whether filesystems are frozen.",
        [],
        [
            ("status", "frozen or thawed"),
            ("mount_points", "the frozen mount points"),
            ("thaw_deadline", "Unix time or null"),
        ],
        capability="core",
        since=2,
        inline=True,
    ),
]

METHODS = OrderedDict((m.name, m) for m in _METHOD_LIST)


class ParamError(ValueError):
    """A parameter is wrong; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        ValueError.__init__(self, message)
        self.field = field


# A lone surrogate (JSON "\\ud800") is a str in Python but no text: it cannot be encoded
# for a path, an argv entry or a file, so every string in params is refused here.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def _check_value(p: Param, value: Any) -> Any:
    types = _TYPES[p.kind]
    # bool is an int in Python; JSON true is never a valid integer parameter.
    if (isinstance(value, bool) and p.kind != "boolean") or not isinstance(value, types):
        raise ParamError(p.name, "'%s' must be of type %s" % (p.name, p.kind))
    if p.kind in ("integer", "number"):
        if value != value or value in (float("inf"), float("-inf")):
            raise ParamError(p.name, "'%s' must be a finite number" % p.name)
        if p.min is not None and value < p.min:
            raise ParamError(p.name, "'%s' must be >= %s" % (p.name, p.min))
        if p.max is not None and value > p.max:
            raise ParamError(p.name, "'%s' must be <= %s" % (p.name, p.max))
    elif p.kind in ("string", "array"):
        if p.min is not None and len(value) < p.min:
            raise ParamError(p.name, "'%s' is too short (minimum %d)" % (p.name, p.min))
        if p.max is not None and len(value) > p.max:
            raise ParamError(p.name, "'%s' is too long (maximum %d)" % (p.name, p.max))
    if _has_surrogate(value):
        raise ParamError(p.name, "'%s' contains a lone surrogate (not valid Unicode text)" % p.name)
    if p.choices is not None and value not in p.choices:
        raise ParamError(
            p.name, "'%s' must be one of %s" % (p.name, ", ".join(map(str, p.choices)))
        )
    return value


def validate_params(method: Method, params: Any) -> Dict[str, Any]:
    """Return the complete parameter dict (defaults filled in) or raise ParamError.

    `params` may be absent (None), an object (by name) or an array (by position), as
    JSON-RPC 2.0 allows.
    """
    if params is None:
        params = {}
    elif isinstance(params, list):
        if len(params) > len(method.params):
            raise ParamError("params", "too many positional parameters for '%s'" % method.name)
        params = dict(zip((p.name for p in method.params), params))  # noqa: B905 (3.8)
    elif not isinstance(params, dict):
        raise ParamError("params", "params must be an object or an array")
    known = {p.name for p in method.params}
    for key in params:
        if key not in known:
            raise ParamError(
                str(key)[:64], "unknown parameter '%s' for '%s'" % (str(key)[:64], method.name)
            )
    out = {}  # type: Dict[str, Any]
    for p in method.params:
        if p.name not in params or (params[p.name] is None and not p.required):
            if p.required:
                raise ParamError(p.name, "missing required parameter '%s'" % p.name)
            default = p.default
            out[p.name] = list(default) if isinstance(default, list) else default
            continue
        out[p.name] = _check_value(p, params[p.name])
    return out


def method_names() -> List[str]:
    return list(METHODS)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"%s"' % value
    return str(value)


def render_markdown() -> str:
    """docs/protocol.md, generated from this module (a test keeps them equal)."""
    out = []  # type: List[str]
    w = out.append
    w("# kvmmanager agent protocol, version %d" % PROTOCOL_VERSION)
    w("")
    w("Generated by `python -m kvmmanager_agent.protocol --markdown`; do not edit by hand.")
    w("")
    w("## Transport and framing")
    w("")
    w("- JSON-RPC 2.0, one UTF-8 JSON message per line (`\\n`), on the virtio-serial port")
    w("  `%s` (guest device `%s`)." % (CHANNEL_NAME, DEVICE_PATH))
    w(
        "- Notifications (no `id`) get no reply; batches (arrays, at most %d entries) are"
        % MAX_BATCH
    )
    w("  answered with an array of the replies, or nothing if all were notifications;")
    w("  any valid `id` (string, number, null) is echoed.")
    w("- Parameters may be given by name (object) or by position (array, in the order listed).")
    w("- **sync**: the host sends `sync` with a random `nonce` on every (re)connect and")
    w("  after any timeout. The agent writes a single 0xFF byte, then the reply. The host")
    w("  discards everything until 0xFF followed by the reply carrying its nonce. A 0xFF")
    w("  byte from the host makes the agent drop any partial line it holds. 0xFF never")
    w("  occurs in UTF-8, so it cannot be confused with message content.")
    w("- Version negotiation: `get_agent_info` takes the host's highest `protocol_version`")
    w(
        "  (an integer) and answers min(host, agent) in `negotiated_protocol_version`;"
        " versions below %d are refused (-32602)." % MIN_PROTOCOL_VERSION
    )
    w("- Replies are always RFC 8259 JSON: a request whose `id` is NaN or infinite (which")
    w("  Python-style JSON allows) is answered -32600 with `id: null`; NaN or infinity in")
    w("  `params` is answered -32602 (with the request's id, which is valid).")
    w("")
    w("## Compatibility with the original protocol")
    w("")
    w(
        "The ten methods of the original KVM Manager guest agent protocol %s"
        % ORIGINAL_PROTOCOL_VERSION
    )
    w("(`guest-agent/PROTOCOL.md` of theonlytruebigmac/kvm-manager: ping, get_agent_info,")
    w("get_system_info, get_network_info, exec_command, file_read, file_write, shutdown,")
    w("reboot, get_disk_usage) answer every field the original documents, with the same")
    w("name and the same JSON type: integers stay integers (`ping.timestamp`,")
    w("`get_system_info.uptime_seconds`), `get_agent_info.protocol_version` is the string")
    w(
        '`"%s"`. Richer values are new fields beside them (`timestamp_ms`, `uptime`,'
        % ORIGINAL_PROTOCOL_VERSION
    )
    w("`negotiated_protocol_version`, `python_version`); a host built for the original")
    w("ignores them. The original's example config file (comments removed) starts the")
    w("agent; its `command_whitelist: null` means what the original says, every command")
    w("allowed, and the agent logs a warning saying so at start (the config shipped here")
    w("keeps exec limited to a list). Proven by")
    w("`tests/kvmmanager_agent/test_original_protocol.py` against the shipped zipapp.")
    w("- Methods marked *answered inline* are cheap and answered by the reader at once,")
    w("  without a worker slot; the others run on `max_concurrent_requests` workers.")
    w(
        "- Integers of more than %d digits are refused like 1e999: -32602 in params (the"
        % MAX_INT_DIGITS
    )
    w("  request's id kept), -32600 as an id. Test: test_process_conformance.py::")
    w("  test_five_thousand_digit_integer_is_invalid_params_keeping_the_id.")
    w("- Raw payload: a `file_write_chunk` request with `binary_length` N is followed,")
    w("  right after its newline, by exactly N raw bytes (0xFF and newlines included) that")
    w("  are the chunk; the next request starts after them. Only a host whose `file_open`")
    w("  result carries `max_binary_chunk_bytes` sends one (an older agent would read the")
    w("  bytes as lines). The write happens only once all N bytes arrived. A payload that")
    w(
        "  stalls (no byte of it for %g s, or not complete %g s after its request line) is"
        % (PAYLOAD_GAP_SECONDS, PAYLOAD_TOTAL_SECONDS)
    )
    w("  abandoned: the bytes received are dropped, nothing is written, the request is")
    w("  answered -32003, and the agent reads lines again (so the host's 0xFF + `sync`")
    w("  after its timeout resyncs). Test: test_process_conformance.py::")
    w("  test_stalled_raw_payload_is_abandoned_and_sync_recovers.")
    w("")
    w("## Limits")
    w("")
    w("| limit | default |")
    w("| --- | --- |")
    w(
        "| line length (agent config `max_message_size_kb`; longer lines are discarded "
        "to the next newline and answered -32600) | %d bytes |" % MAX_LINE_BYTES
    )
    w(
        "| concurrent requests (config `max_concurrent_requests`; excess answered -32004) | %d |"
        % MAX_CONCURRENT_REQUESTS
    )
    w(
        "| requests per second, a token bucket (config `requests_per_second`; excess "
        "answered -32004; ping, sync and get_agent_info are never refused for rate) | %d |"
        % MAX_REQUESTS_PER_SECOND
    )
    w(
        "| burst: requests the bucket holds, sent at once before the rate applies "
        "(config `requests_burst`) | %d |" % MAX_REQUEST_BURST
    )
    w("| batch entries | %d |" % MAX_BATCH)
    w("| file_read / file_write size | %d bytes |" % MAX_SIMPLE_FILE_BYTES)
    w("| transfer chunk (base64 `data`) | %d bytes |" % MAX_CHUNK_BYTES)
    w("| transfer chunk (raw, `binary_length`) | %d bytes |" % MAX_BINARY_CHUNK_BYTES)
    w("| transfer writes in flight per handle | %d |" % MAX_CHUNKS_IN_FLIGHT)
    w("| open transfer handles | %d |" % MAX_OPEN_HANDLES)
    w("| exec output per stream | %d bytes |" % MAX_EXEC_OUTPUT_BYTES)
    w("| reply size accepted by the host | %d bytes |" % MAX_REPLY_BYTES)
    w("")
    w("## Error codes")
    w("")
    w("| code | name | meaning |")
    w("| --- | --- | --- |")
    for code, (name, meaning) in ERROR_CODES.items():
        w("| %d | %s | %s |" % (code, name, meaning))
    w("")
    w("Errors carry `data.field` when a parameter is at fault.")
    w("")
    w("## Timeout classes (host side)")
    w("")
    w("| class | seconds |")
    w("| --- | --- |")
    for name, secs in TIMEOUT_CLASSES.items():
        w("| %s | %g |" % (name, secs))
    w("")
    w("## Capabilities")
    w("")
    w("| capability | least host role | methods |")
    w("| --- | --- | --- |")
    for cap, (role, desc) in CAPABILITIES.items():
        names = ", ".join("`%s`" % m.name for m in METHODS.values() if m.capability == cap)
        w("| %s (%s) | %s | %s |" % (cap, desc, role, names))
    w("")
    w("## Methods")
    for m in METHODS.values():
        w("")
        w("### `%s`" % m.name)
        w("")
        w(m.description)
        w("")
        w(
            "capability `%s` · timeout `%s` · %s · since v%d%s"
            % (
                m.capability,
                m.timeout,
                "allowed while frozen" if m.frozen_ok else "refused while frozen",
                m.since,
                " · answered inline" if m.inline else "",
            )
        )
        w("")
        if m.params:
            w("| param | type | required | default | limits | description |")
            w("| --- | --- | --- | --- | --- | --- |")
            for p in m.params:
                limits = []
                if p.min is not None:
                    limits.append("min %s" % _fmt(p.min))
                if p.max is not None:
                    limits.append("max %s" % _fmt(p.max))
                if p.choices:
                    limits.append("one of " + ", ".join(p.choices))
                w(
                    "| `%s` | %s | %s | %s | %s | %s |"
                    % (
                        p.name,
                        p.kind,
                        "yes" if p.required else "no",
                        _fmt(p.default),
                        "; ".join(limits),
                        p.description,
                    )
                )
        else:
            w("No parameters.")
        w("")
        w("| result field | description |")
        w("| --- | --- |")
        for name, desc in m.result:
            w("| `%s` | %s |" % (name, desc))
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        sys.stderr.write("usage: python -m kvmmanager_agent.protocol --markdown\n")
        return 2
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
