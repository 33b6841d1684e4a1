"""Snapshots of real TCG guests through the manager's API.

- internal snapshot with memory: write a file in the guest, snapshot, change it, revert,
  read it back (the agent answers again after the revert);
- quiesced external snapshot by the project's agent: a file written (not synced) just
  before is inside the frozen base image (read on the host with qemu-img + debugfs), the
  guest is thawed at once, the frozen time is reported;
- an external chain deleted while running keeps the newest data, the image passes
  `qemu-img check` and the guest reads its file after a cold boot;
- a qemu-guest-agent guest is quiesced through libvirt's QUIESCE flag.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import Lab
from .support.api import ApiError
from .support.guests import LIBVIRT_URI, Guest

pytestmark = pytest.mark.vm
FILE = "/data/kvmm-snap.txt"
# The same file inside the data disk's own file system (mounted at /data in the guest).
FILE_ON_DISK = "/kvmm-snap.txt"


def snaps(lab: Lab, g: Guest, rest: str = "") -> str:
    return lab.api._vm(g.name, "snapshots" + (f"/{rest}" if rest else ""))


def write(lab: Lab, g: Guest, text: str) -> None:
    lab.api.write_file(g.name, FILE, text)


def read(lab: Lab, g: Guest) -> str:
    return lab.api.read_file(g.name, FILE)["content"]


def wait_ping(lab: Lab, g: Guest, timeout: float = 180) -> None:
    """After a revert the guest's agent resumes mid-conversation: poll until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            lab.api.ping(g.name)
            return
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def disk_source(lab: Lab, g: Guest) -> str:
    root = ET.fromstring(lab.api.vm_xml(g.name))
    return root.find("./devices/disk[@device='disk']/source").get("file")


def file_in_image(image: str, path: str) -> str:
    """The file's content as stored in a (possibly in-use) qcow2 image, read on the host."""
    with tempfile.TemporaryDirectory(prefix="kvmm-t-snap-") as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(
            ["qemu-img", "convert", "-U", "-O", "raw", image, str(raw)], check=True, timeout=120
        )
        r = subprocess.run(
            ["debugfs", "-R", f"cat {path}", str(raw)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "not found" not in r.stderr, r.stderr
        return r.stdout


def qemu_img_check(image: str) -> None:
    r = subprocess.run(["qemu-img", "check", image], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _drop_snapshots(lab: Lab, g: Guest) -> None:
    """Merge whatever a failed test left, so deleting the VM removes every image; as a last
    resort drop the metadata and let the suite's sweep find the files (pool refresh)."""
    with contextlib.suppress(ApiError):
        for s in reversed(lab.api.call("GET", snaps(lab, g))["snapshots"]):
            with contextlib.suppress(ApiError):
                lab.api.call("DELETE", snaps(lab, g, s["name"]))
    conn = libvirt.open(LIBVIRT_URI)
    try:
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(g.name)
            for s in dom.listAllSnapshots():
                s.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
        with contextlib.suppress(libvirt.libvirtError):
            conn.storagePoolLookupByName(lab.pool).refresh(0)
    finally:
        conn.close()


def _boot(lab: Lab, g: Guest, channel: str) -> Guest:
    g.create(lab.pool, lab.network)
    if g.mode == "agent":
        lab.api.install_agent(g.name, lab.pool)
    mark = g.start()
    g.wait_agent(mark, channel=channel)
    return g


@pytest.fixture(scope="module")
def guest(lab: Lab, agent_iso: dict) -> Iterator[Guest]:
    g = _boot(lab, lab.guest("snap", "agent", 40), "kvmm")
    try:
        yield g
    finally:
        _drop_snapshots(lab, g)
        g.remove()


def test_internal_snapshot_revert_restores_the_file(lab: Lab, guest: Guest) -> None:
    write(lab, guest, "before")
    r = lab.api.call("POST", snaps(lab, guest), json={"name": "mem"})
    assert (r["kind"], r["memory"]) == ("internal", True)
    assert r["consistency"]["level"] == "full-state"
    write(lab, guest, "after")
    assert read(lab, guest) == "after"

    r = lab.api.call("POST", snaps(lab, guest, "mem/revert"), json={})
    assert r["running"] is True
    wait_ping(lab, guest)
    assert read(lab, guest) == "before"
    tree = lab.api.call("GET", snaps(lab, guest))
    assert tree["current"] == "mem"
    lab.api.call("DELETE", snaps(lab, guest, "mem"))
    assert read(lab, guest) == "before"


def test_quiesced_external_chain_merged_while_running(lab: Lab, guest: Guest) -> None:
    base = disk_source(lab, guest)
    # Not synced: only the agent's freeze puts it on the disk before the snapshot.
    write(lab, guest, "v1")
    r = lab.api.call("POST", snaps(lab, guest), json={"name": "e1", "kind": "external"})
    c = r["consistency"]
    assert (c["method"], c["level"]) == ("kvmm-agent", "quiesced"), c
    assert 0 <= c["frozen_seconds"] < 30
    assert lab.api.agent(guest.name, "fsfreeze")["status"] == "thawed"
    assert file_in_image(base, FILE_ON_DISK) == "v1"
    assert disk_source(lab, guest) != base

    write(lab, guest, "v2")
    lab.api.call("POST", snaps(lab, guest), json={"name": "e2", "kind": "external"})
    write(lab, guest, "v3")
    tree = lab.api.call("GET", snaps(lab, guest))["tree"]
    assert tree == [{"name": "e1", "children": [{"name": "e2", "children": []}]}]

    # Inner one first: libvirt commits e1's overlay into the base under the running guest.
    assert lab.api.call("DELETE", snaps(lab, guest, "e1"))["merge"] == "block-commit"
    assert read(lab, guest) == "v3"
    lab.api.call("DELETE", snaps(lab, guest, "e2"))
    assert read(lab, guest) == "v3"
    assert disk_source(lab, guest) == base

    # Flush the guest's page cache the way a freeze does (no `sync` command is allowed).
    params = {"mount_points": ["/data"], "timeout_seconds": 10}
    lab.api.agent(guest.name, "call/fsfreeze_freeze", "POST", json=params)
    lab.api.agent(guest.name, "call/fsfreeze_thaw", "POST", json={})
    lab.api.action(guest.name, "destroy")
    qemu_img_check(base)
    assert file_in_image(base, FILE_ON_DISK) == "v3"
    mark = guest.start()
    guest.wait_agent(mark)
    assert read(lab, guest) == "v3"
    remaining = lab.api.call("GET", snaps(lab, guest))["snapshots"]
    assert remaining == []


def test_never_quiesce_policy_is_crash_consistent(lab: Lab, guest: Guest) -> None:
    lab.api.call("PUT", lab.api._vm(guest.name, "quiesce-policy"), json={"policy": "never"})
    try:
        r = lab.api.call("POST", snaps(lab, guest), json={"name": "nq", "kind": "external"})
        assert r["consistency"]["method"] == "none"
        assert "policy" in r["consistency"]["message"]
        lab.api.call("DELETE", snaps(lab, guest, "nq"))
    finally:
        lab.api.call("PUT", lab.api._vm(guest.name, "quiesce-policy"), json={"policy": "auto"})


def test_qemu_guest_agent_quiesces_through_libvirt(lab: Lab, agent_iso: Any) -> None:
    g = _boot(lab, lab.guest("snapqga", "qga", 41), "qga")
    try:
        r = lab.api.call("POST", snaps(lab, g), json={"name": "q1", "kind": "external"})
        c = r["consistency"]
        assert (c["method"], c["level"]) == ("qemu-ga", "quiesced"), c
        lab.api.call("DELETE", snaps(lab, g, "q1"))
        assert lab.api.call("GET", snaps(lab, g))["snapshots"] == []
    finally:
        _drop_snapshots(lab, g)
        g.remove()
