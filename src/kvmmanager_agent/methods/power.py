"""shutdown and reboot: the reply goes out first, then the guest acts.

The command is looked up BEFORE replying, so a guest that cannot power off says so
instead of answering `initiated` and doing nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

from ..errors import failed
from ..log import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Tuple


def power_command(action: str, force: bool) -> List[str]:
    verb = "poweroff" if action == "shutdown" else "reboot"
    if not force and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        return [shutil.which("systemctl") or "systemctl", verb]
    binary = shutil.which(verb)
    if binary is None:
        raise failed("no %s command in the guest" % verb)
    return [binary, "-f"] if force else [binary]


def run_later(argv: List[str], delay: float) -> None:
    def go() -> None:
        if delay:
            time.sleep(delay)
        log.warning("running %s", " ".join(argv))
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("%s failed: %s", argv[0], exc)

    threading.Thread(target=go, name="power", daemon=True).start()


def _power(ctx: Any, action: str, params: Dict[str, Any]) -> Tuple[Dict[str, Any], Any]:
    argv = power_command(action, params["force"])
    delay = params["timeout_seconds"]
    message = "%s in %d s%s" % (action, delay, " (forced)" if params["force"] else "")
    return {"initiated": True, "message": message}, lambda: ctx.power(argv, delay)


def shutdown(ctx: Any, params: Dict[str, Any]) -> Tuple[Dict[str, Any], Any]:
    return _power(ctx, "shutdown", params)


def reboot(ctx: Any, params: Dict[str, Any]) -> Tuple[Dict[str, Any], Any]:
    return _power(ctx, "reboot", params)


HANDLERS = {"shutdown": shutdown, "reboot": reboot}
