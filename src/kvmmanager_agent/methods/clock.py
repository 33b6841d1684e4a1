"""get_time and set_time."""

from __future__ import annotations

import time

from ..errors import denied, failed
from .system import timezone_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict


def get_time(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    now = time.time()
    return {
        "timestamp": now,
        "timezone": timezone_name(),
        "utc_offset_seconds": int(time.localtime(now).tm_gmtoff),
    }


def set_time(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    try:
        time.clock_settime(time.CLOCK_REALTIME, float(params["timestamp"]))
    except PermissionError:
        raise denied("setting the clock needs CAP_SYS_TIME", "timestamp") from None
    except OSError as exc:
        raise failed("clock_settime failed: %s" % exc.strerror, "timestamp") from None
    return {"timestamp": time.time()}


HANDLERS = {"get_time": get_time, "set_time": set_time}
