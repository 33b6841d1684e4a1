"""The single description of the kvmmanager agent protocol, and its public face.

Everything both sides must agree on is here, one job a module:

- wire.py: the protocol version, channel, error codes, limits, timeout classes and
  capabilities;
- schema.py: the shape of a method and of its parameters;
- registry.py: the method table (data), METHODS;
- validation.py: checking a request's params against the table (ParamError);
- markdown.py: docs/protocol.md generated from all of the above
  (`python -m kvmmanager_agent.protocol --markdown > docs/protocol.md`).

The agent dispatches from the registry and the host client validates against it, both
through the names below (`from kvmmanager_agent import protocol; protocol.METHODS`).
The doc generator is not imported here: the running agent never needs it.

Standard library only and Python 3.8 compatible: it runs inside guests.
"""

from __future__ import annotations

from .registry import METHODS, method_names
from .schema import Method, Param
from .validation import ParamError, validate_params
from .wire import (
    BUSY,
    CAPABILITIES,
    CHANNEL_NAME,
    COMMAND_FAILED,
    DEVICE_PATH,
    ERROR_CODES,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BATCH,
    MAX_BINARY_CHUNK_BYTES,
    MAX_BINARY_HEADER_BYTES,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS_IN_FLIGHT,
    MAX_CONCURRENT_REQUESTS,
    MAX_EXEC_OUTPUT_BYTES,
    MAX_FILE_OFFSET,
    MAX_LINE_BYTES,
    MAX_OPEN_HANDLES,
    MAX_REPLY_BYTES,
    MAX_REQUEST_BURST,
    MAX_REQUESTS_PER_SECOND,
    MAX_SIMPLE_FILE_BYTES,
    METHOD_NOT_FOUND,
    MIN_PROTOCOL_VERSION,
    NOT_FOUND,
    ORIGINAL_PROTOCOL_VERSION,
    PARSE_ERROR,
    PAYLOAD_GAP_SECONDS,
    PAYLOAD_TOTAL_SECONDS,
    PERMISSION_DENIED,
    PROTOCOL_VERSION,
    SYNC_BYTE,
    TIMEOUT,
    TIMEOUT_CLASSES,
    WRITE_ORDER_WAIT_SECONDS,
)

__all__ = [
    "BUSY",
    "CAPABILITIES",
    "CHANNEL_NAME",
    "COMMAND_FAILED",
    "DEVICE_PATH",
    "ERROR_CODES",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_BATCH",
    "MAX_BINARY_CHUNK_BYTES",
    "MAX_BINARY_HEADER_BYTES",
    "MAX_CHUNKS_IN_FLIGHT",
    "MAX_CHUNK_BYTES",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_EXEC_OUTPUT_BYTES",
    "MAX_FILE_OFFSET",
    "MAX_LINE_BYTES",
    "MAX_OPEN_HANDLES",
    "MAX_REPLY_BYTES",
    "MAX_REQUESTS_PER_SECOND",
    "MAX_REQUEST_BURST",
    "MAX_SIMPLE_FILE_BYTES",
    "METHODS",
    "METHOD_NOT_FOUND",
    "MIN_PROTOCOL_VERSION",
    "NOT_FOUND",
    "ORIGINAL_PROTOCOL_VERSION",
    "PARSE_ERROR",
    "PAYLOAD_GAP_SECONDS",
    "PAYLOAD_TOTAL_SECONDS",
    "PERMISSION_DENIED",
    "PROTOCOL_VERSION",
    "SYNC_BYTE",
    "TIMEOUT",
    "TIMEOUT_CLASSES",
    "WRITE_ORDER_WAIT_SECONDS",
    "Method",
    "Param",
    "ParamError",
    "method_names",
    "validate_params",
]
