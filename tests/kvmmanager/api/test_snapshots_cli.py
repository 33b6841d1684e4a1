"""`kvm-manager snapshot ...` against a live server on the test driver (kept next to the
API tests: the CLI is a client of these routes)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import libvirt

POOL = "default-pool"
PREFIX = "kvmm-t-snap-"


def _cleanup(name: str) -> None:
    c = libvirt.open("test:///default")
    try:
        for dom in c.listAllDomains():
            if dom.name() == name:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        for vol in c.storagePoolLookupByName(POOL).listAllVolumes():
            if vol.name().startswith(name):
                vol.delete(0)
    finally:
        c.close()


def test_snapshot_cli(cli: Any, live_server: Any) -> None:
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host never connected"
        time.sleep(0.05)
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = cli("--json", "vm", "create", name, "--memory", "128", "--disk", f"{POOL}:1")
    try:
        assert r.exit_code == 0, r.stdout + r.stderr
        r = cli("--json", "snapshot", "create", name, "base", "-d", "clean")
        assert r.exit_code == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["consistency"]["level"] == "offline"
        r = cli("snapshot", "create", name, "next")
        assert r.exit_code == 0 and "internal, offline" in r.stderr
        r = cli("snapshot", "list", name, "--tree")
        assert r.exit_code == 0
        assert r.stdout.splitlines() == ["base", "  └─ next  <- current"]
        r = cli("snapshot", "list", name)
        assert r.exit_code == 0 and "clean" in r.stdout
        r = cli("--json", "snapshot", "revert", name, "base")
        assert r.exit_code == 0 and json.loads(r.stdout)["snapshot"] == "base"
        r = cli("snapshot", "create", name, "base")
        assert r.exit_code == 5 and "already has a snapshot 'base'" in r.stderr
        r = cli("snapshot", "create", name, "m", "--memory")
        assert r.exit_code == 2 and "no memory state" in r.stderr
        r = cli("--json", "snapshot", "quiesce-policy", name, "never")
        assert r.exit_code == 0 and json.loads(r.stdout)["quiesce_policy"] == "never"
        r = cli("--json", "snapshot", "delete", name, "base", "--children")
        assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] == ["base", "next"]
        # Issue 17's try: the tree of a VM without snapshots printed nothing.
        r = cli("snapshot", "list", name, "--tree")
        assert r.exit_code == 0 and f"vm {name} has no snapshots" in r.stderr, r.stderr
        r = cli("snapshot", "delete", name, "base")
        assert r.exit_code == 4
    finally:
        _cleanup(name)
