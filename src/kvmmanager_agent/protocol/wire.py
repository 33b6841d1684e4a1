"""What both ends of the agent protocol agree on besides its methods: the protocol
version, the channel, the error codes, the limits, the timeout classes and the
capabilities that group methods for roles and the agent's config.

Standard library only and Python 3.8 compatible: it runs inside guests.
"""

from __future__ import annotations

from collections import OrderedDict

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
