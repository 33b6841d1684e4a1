"""`kvm-manager clone/template ...` against a live server on the test driver (next to the
API tests: the CLI is a client of these routes)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import libvirt

POOL = "default-pool"
PREFIX = "kvmm-t-clone-"


def _cleanup(prefix: str) -> None:
    c = libvirt.open("test:///default")
    try:
        for dom in c.listAllDomains():
            if dom.name().startswith(prefix):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for vol in c.storagePoolLookupByName(POOL).listAllVolumes():
            if vol.name().startswith(prefix):
                vol.delete(0)
    finally:
        c.close()


def test_clone_and_template_cli(cli: Any, live_server: Any) -> None:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host never connected"
        time.sleep(0.05)
    base = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    r = cli("--json", "vm", "create", base, "--memory", "128", "--disk", f"{POOL}:1")
    try:
        assert r.exit_code == 0, r.stdout + r.stderr
        r = cli("--json", "clone", "create", base, f"{base}-full")
        assert r.exit_code == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["mode"] == "full"
        r = cli("clone", "create", base, f"{base}-full")
        assert r.exit_code == 5 and "already exists" in r.stderr
        r = cli("clone", "create", base, f"{base}-l", "--mode", "linked")
        assert r.exit_code == 5 and "not a template" in r.stderr
        r = cli("--json", "template", "mark", base)
        assert r.exit_code == 0 and json.loads(r.stdout)["template"] is True
        r = cli("--json", "template", "deploy", base, f"{base}-l")
        assert r.exit_code == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["mode"] == "linked"
        r = cli("template", "list")
        assert r.exit_code == 0 and base in r.stdout and f"{base}-l" in r.stdout
        r = cli("template", "unmark", base)
        assert r.exit_code == 5 and "backs linked clones" in r.stderr
    finally:
        _cleanup(base)
