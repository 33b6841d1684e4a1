"""Agent configuration: /etc/kvmmanager-agent/config.json merged over safe defaults.

Safe means: exec is disabled until commands are listed, files are readable only under
a few log/temp directories and writable only under /tmp, file sizes and command
timeouts are bounded. Unknown keys are ignored (logged); wrongly typed keys are an
error at start, so a typo never silently widens access.
"""

from __future__ import annotations

from . import jsonwire, protocol
from .log import LEVELS, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


DEFAULT_CONFIG_PATH = "/etc/kvmmanager-agent/config.json"

DEFAULTS = {
    "log_level": "info",
    "log_file": "",
    "channel_name": protocol.CHANNEL_NAME,
    "max_message_size_kb": protocol.MAX_LINE_BYTES // 1024,
    "connection_retry_seconds": 5.0,
    "request_timeout_seconds": 300.0,
    "max_concurrent_requests": protocol.MAX_CONCURRENT_REQUESTS,
    "requests_per_second": protocol.MAX_REQUESTS_PER_SECOND,
    "requests_burst": protocol.MAX_REQUEST_BURST,
    "freeze_timeout_seconds": 60.0,
    "shutdown_grace_seconds": 10.0,
    "disabled_methods": [],
    "security": {
        "allowed_read_paths": ["/var/log", "/tmp"],
        "allowed_write_paths": ["/tmp"],
        "command_whitelist": [],
        "max_file_size_mb": 10,
        "max_command_timeout_seconds": 300,
    },
}  # type: Dict[str, Any]


# Keys whose `null` has a meaning of its own: the original protocol's example config
# says `"command_whitelist": null` means every command is allowed.
NULLABLE = ("security.command_whitelist",)

# Top-level keys that only describe the file (the original example config's "version"):
# accepted and not used.
INFORMATIONAL = ("version",)

# The numbers' ranges, (lowest, highest, whole numbers only); a value outside is refused
# at start rather than clamped, so a typo never silently changes a limit.
BIG = 10**9
RANGES = {
    "max_message_size_kb": (1, 1024 * 1024, True),
    "connection_retry_seconds": (0.1, BIG, False),
    "request_timeout_seconds": (1, BIG, False),
    "max_concurrent_requests": (1, 4096, True),
    "requests_per_second": (1, BIG, True),
    "requests_burst": (1, BIG, True),
    "freeze_timeout_seconds": (1, BIG, False),
    "shutdown_grace_seconds": (0, BIG, False),
    "security.max_file_size_mb": (0, BIG, False),
    "security.max_command_timeout_seconds": (1, BIG, False),
}


class ConfigError(ValueError):
    pass


def _merge(
    base: Dict[str, Any], override: Dict[str, Any], prefix: str, warnings: List[str]
) -> None:
    for key, value in override.items():
        name = prefix + key
        if name in INFORMATIONAL:
            continue
        if key not in base:
            warnings.append("config: unknown key %s ignored" % name)
            log.warning("%s", warnings[-1])
            continue
        current = base[key]
        if name in NULLABLE and value is None:
            base[key] = None
            continue
        if isinstance(current, dict):
            if not isinstance(value, dict):
                raise ConfigError("config key %s must be an object" % name)
            _merge(current, value, name + ".", warnings)
            continue
        ok = (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
            if isinstance(current, list)
            else isinstance(value, str)
            if isinstance(current, str)
            else isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if not ok:
            raise ConfigError("config key %s has the wrong type" % name)
        if name in RANGES:
            _check_range(name, value)
        if name == "log_level" and value.lower() not in LEVELS:
            raise ConfigError(
                "config key log_level must be one of %s (got %r)"
                % (", ".join(sorted(LEVELS)), value[:40])
            )
        base[key] = value


def _check_range(name: str, value: Any) -> None:
    low, high, whole = RANGES[name]
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError("config key %s must be a finite number" % name)
    if whole and value != int(value):
        raise ConfigError("config key %s must be a whole number (got %r)" % (name, value))
    if not low <= value <= high:
        raise ConfigError(
            "config key %s must be between %s and %s (got %r)" % (name, low, high, value)
        )


class Config:
    """Typed view over the merged dict."""

    def __init__(self, data: Optional[Dict[str, Any]] = None) -> None:
        merged = jsonwire.loads(jsonwire.dumps(DEFAULTS))  # a deep copy, without the copy module
        # What was logged about this config, for the log file once it is open.
        self.warnings: List[str] = []
        if data is not None:
            if not isinstance(data, dict):
                raise ConfigError("config must be a JSON object")
            _merge(merged, data, "", self.warnings)
        self.data = merged
        sec = merged["security"]
        self.log_level = str(merged["log_level"])
        self.log_file = str(merged["log_file"])
        self.channel_name = str(merged["channel_name"])
        self.max_line_bytes = max(1024, int(merged["max_message_size_kb"]) * 1024)
        self.connection_retry_seconds = max(0.1, float(merged["connection_retry_seconds"]))
        self.request_timeout_seconds = max(1.0, float(merged["request_timeout_seconds"]))
        self.max_concurrent_requests = max(1, int(merged["max_concurrent_requests"]))
        self.requests_per_second = max(1, int(merged["requests_per_second"]))
        self.requests_burst = max(1, int(merged["requests_burst"]))
        self.freeze_timeout_seconds = max(1.0, float(merged["freeze_timeout_seconds"]))
        self.shutdown_grace_seconds = max(0.0, float(merged["shutdown_grace_seconds"]))
        self.disabled_methods: List[str] = list(merged["disabled_methods"])
        self.allowed_read_paths: List[str] = list(sec["allowed_read_paths"])
        self.allowed_write_paths: List[str] = list(sec["allowed_write_paths"])
        # None: every command allowed (the original protocol's meaning of null).
        self.command_whitelist: Optional[List[str]] = (
            None if sec["command_whitelist"] is None else list(sec["command_whitelist"])
        )
        if self.command_whitelist is None:
            self.warnings.append(
                "config: security.command_whitelist is null: exec_command and exec_start "
                "may run ANY command in this guest (list the allowed commands to limit it)"
            )
            log.warning("%s", self.warnings[-1])
        self.max_file_bytes = min(
            protocol.MAX_SIMPLE_FILE_BYTES, int(float(sec["max_file_size_mb"]) * 1024 * 1024)
        )
        self.max_command_timeout_seconds = max(1.0, float(sec["max_command_timeout_seconds"]))
        for path in self.allowed_read_paths + self.allowed_write_paths:
            if not path.startswith("/"):
                raise ConfigError("allowed paths must be absolute: %r" % path)

    def method_enabled(self, name: str) -> bool:
        """Whether this config lets the agent accept `name` at all."""
        method = protocol.METHODS.get(name)
        if method is None or name in self.disabled_methods:
            return False
        if method.capability == "exec":
            return self.command_whitelist is None or bool(self.command_whitelist)
        if method.capability == "files":
            return bool(self.allowed_read_paths or self.allowed_write_paths)
        return True

    def capabilities(self) -> List[str]:
        return [name for name in protocol.METHODS if self.method_enabled(name)]


def load(path: Optional[str]) -> Config:
    """Load `path`; a missing default file means defaults, a missing explicit file is an error."""
    target = path or DEFAULT_CONFIG_PATH
    try:
        with open(target, encoding="utf-8") as fh:
            data = jsonwire.loads(fh.read())
    except FileNotFoundError:
        if path:
            raise ConfigError("config file not found: %s" % path) from None
        return Config()
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (target, exc)) from None
    except Exception as exc:  # any parse failure (see jsonwire) names the file
        raise ConfigError("config file %s is not valid JSON: %s" % (target, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError("config file %s must hold a JSON object" % target)
    return Config(data)
