"""The shape of one protocol method and its parameters (the registry's entries).

Standard library only and Python 3.8 compatible: it runs inside guests.
"""

from __future__ import annotations

from .wire import CAPABILITIES, TIMEOUT_CLASSES

# typing costs ~2 MB of resident memory in the guest agent; annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Sequence, Tuple


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
