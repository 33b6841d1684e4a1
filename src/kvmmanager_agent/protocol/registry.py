"""The method table: every method the agent answers, its parameters (types, defaults,
bounds), its result fields, the capability it needs, whether it runs while filesystems
are frozen and its timeout class. Data only: validation.py checks params against it,
markdown.py writes docs/protocol.md from it.

Standard library only and Python 3.8 compatible: it runs inside guests.
"""

from __future__ import annotations

from collections import OrderedDict

from .schema import Method, Param
from .wire import (
    MAX_BINARY_CHUNK_BYTES,
    MAX_BINARY_HEADER_BYTES,
    MAX_CHUNK_BYTES,
    MAX_FILE_OFFSET,
    MAX_SIMPLE_FILE_BYTES,
    PROTOCOL_VERSION,
    WRITE_ORDER_WAIT_SECONDS,
)

# typing costs ~2 MB of resident memory in the guest agent; annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

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


def method_names() -> List[str]:
    return list(METHODS)
