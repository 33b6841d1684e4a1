"""service_status and service_action for systemd and OpenRC guests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from ..errors import failed, invalid, not_found

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Tuple


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9@._:+-]{0,255}$")


def init_system() -> str:
    if os.path.isdir("/run/systemd/system"):
        return "systemd"
    if shutil.which("rc-service"):
        return "openrc"
    raise failed("neither systemd nor OpenRC is running in the guest")


def _run(argv: List[str]) -> Tuple[int, str]:
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise failed("%s failed: %s" % (argv[0], exc)) from None
    return proc.returncode, proc.stdout.decode("utf-8", "replace").strip()[:4000]


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise invalid("invalid service name", "name")
    return name


def status(name: str) -> Dict[str, Any]:
    system = init_system()
    if system == "systemd":
        _, load = _run(["systemctl", "show", "-p", "LoadState", "--value", name])
        if load == "not-found":
            raise not_found("service %s not found" % name, "name")
        _, active = _run(["systemctl", "is-active", name])
        _, enabled_state = _run(["systemctl", "is-enabled", name])
        return {
            "name": name,
            "init_system": system,
            "active": active == "active",
            "enabled": enabled_state in ("enabled", "enabled-runtime", "static", "alias"),
            "status": active,
        }
    if not os.path.exists(os.path.join("/etc/init.d", name)):
        raise not_found("service %s not found" % name, "name")
    code, text = _run(["rc-service", name, "status"])
    _, runlevels = _run(["rc-update", "show", "-a"])
    enabled = any(
        line.split("|")[0].strip() == name
        for line in runlevels.splitlines()
        if "|" in line and line.split("|")[1].strip()
    )
    return {
        "name": name,
        "init_system": system,
        "active": code == 0,
        "enabled": enabled,
        "status": text.rsplit(":", 1)[-1].strip() or ("started" if code == 0 else "stopped"),
    }


def service_status(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    return status(_check_name(params["name"]))


def service_action(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    name = _check_name(params["name"])
    action = params["action"]
    current = status(name)
    if current["init_system"] == "systemd":
        argv = ["systemctl", action, name]
    elif action in ("enable", "disable"):
        argv = ["rc-update", "add" if action == "enable" else "del", name, "default"]
    else:
        argv = ["rc-service", name, action]
    code, text = _run(argv)
    if code != 0:
        raise failed("%s %s failed: %s" % (action, name, text[:500]), "action")
    after = status(name)
    return {
        "name": name,
        "action": action,
        "init_system": after["init_system"],
        "active": after["active"],
    }


HANDLERS = {"service_status": service_status, "service_action": service_action}
