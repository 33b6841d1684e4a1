"""`kvm-manager vm create-from-image`: the --agent-* flags become the agent's policy
(added to its safe defaults), and a bad one is refused naming the field before anything
is made. A successful provision needs volume uploads (real libvirtd):
tests/kvmmanager/services/cloudinit/test_seed_libvirtd.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from kvmmanager.cli.commands.vm import _agent_policy
from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager_agent.config import DEFAULTS

POOL = "default-pool"
PREFIX = "kvmm-t-cicli-"


def test_flags_add_to_the_agents_defaults() -> None:
    assert _agent_policy([], [], [], []) is None  # no flag: the packaged config stays
    policy = _agent_policy(["/etc", "/var/log"], ["/srv/drop"], ["id", "id"], ["reboot"])
    sec = DEFAULTS["security"]
    assert policy == {
        "allowed_read_paths": [*sec["allowed_read_paths"], "/etc"],
        "allowed_write_paths": [*sec["allowed_write_paths"], "/srv/drop"],
        "command_whitelist": ["id"],
        "disabled_methods": ["reboot"],
    }


@pytest.fixture
def image(live_server: Any) -> Iterator[str]:
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}.qcow2"
    conn = libvirt.open("test:///default")
    pool = conn.storagePoolLookupByName(POOL)
    pool.createXML(
        build_volume_xml(name, 1 << 30, "qcow2"),
        0,
    )
    try:
        yield name
    finally:
        for vol in pool.listAllVolumes():
            if vol.name().startswith(PREFIX):
                vol.delete(0)
        conn.close()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--agent-allow-read", "etc"], "'etc' is not an absolute path"),
        (["--agent-allow-exec", "rm -rf /"], "neither a command name nor an absolute path"),
        (["--agent-disable-method", "no_such"], "unknown agent method(s): no_such"),
    ],
)
def test_bad_agent_flags_are_refused(cli: Any, image: str, flags: list[str], message: str) -> None:
    before = _volumes()
    res = cli(
        "vm", "create-from-image", f"{PREFIX}vm", "--image", f"{POOL}/{image}",
        "--size", "2", "--no-start", *flags,
    )  # fmt: skip
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert _volumes() == before


def _volumes() -> list[str]:
    conn = libvirt.open("test:///default")
    try:
        return sorted(conn.storagePoolLookupByName(POOL).listVolumes())
    finally:
        conn.close()
