"""Logging of the server: every record one line, whatever strings it carries.

Log messages quote guest-chosen text (agent error messages, hostnames) and client-chosen
text (uvicorn's access log prints the percent-decoded URL path). `InertFilter`, set on
every handler `logging_config()` builds, rewrites each record's message arguments with
`core.sanitize.inert` before any formatter sees them, so a newline cannot forge a log
line and ESC/OSC sequences reach no terminal. It works below the formatter, so uvicorn's
own colours and formats are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kvmmanager.core.sanitize import inert, is_inert

# Values a %-format may need as they are (%d, %.1f); their str() is always plain.
_PLAIN = (int, float, type(None))


def _inert_arg(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return inert(value)
    text = str(value)  # an exception or any object: its text may quote a guest
    return value if is_inert(text) else inert(text)


def _inert_traceback(text: str) -> str:
    # The traceback's own line breaks stay; the exception message at its end may quote a
    # guest, so each line is made inert and every line after the first is indented:
    # a continuation line can never pass for a record of its own.
    return "\n".join(
        ("    " + inert(line) if i and not line.startswith(" ") else inert(line))
        for i, line in enumerate(text.split("\n"))
    )


class InertFilter(logging.Filter):
    """Make a record's message and traceback inert (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = inert(record.msg)
        else:
            record.msg = _inert_arg(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: _inert_arg(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_inert_arg(v) for v in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _inert_traceback(record.exc_text)
        if record.stack_info:
            record.stack_info = _inert_traceback(record.stack_info)
        return True


class NoResultRows(logging.Filter):
    """Drop SQLAlchemy's DEBUG `Row (...)` records: result rows hold what the database
    must keep in clear (a webhook's signing secret, an SMTP password) and would be
    logged whole by anyone running at DEBUG. Statement parameters are hidden by the
    engine itself (`hide_parameters=True`, db/base.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Row "))


def hide_sql_rows() -> None:
    """Install `NoResultRows` on SQLAlchemy's engine logger (idempotent). A filter on the
    logger itself applies whatever handlers the process has."""
    engine_log = logging.getLogger("sqlalchemy.engine.Engine")
    if not any(isinstance(f, NoResultRows) for f in engine_log.filters):
        engine_log.addFilter(NoResultRows())


def logging_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` for `kvm-manager serve` (passed to uvicorn as its
    `log_config`): uvicorn's own loggers as uvicorn formats them, plus the root logger
    (every `kvmmanager.*` module) at `level` on stderr; every handler inert."""
    filters = {"inert": {"()": f"{__name__}.InertFilter"}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": None,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": None,
            },
            "app": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["inert"],
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["inert"],
                "stream": "ext://sys.stdout",
            },
            "app": {
                "class": "logging.StreamHandler",
                "formatter": "app",
                "filters": ["inert"],
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["access"], "level": level.upper(), "propagate": False},
        },
        "root": {"handlers": ["app"], "level": level.upper()},
    }
