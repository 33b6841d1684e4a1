"""Scenario 8.5: cloud-init provisioning for real, and a clone's new identity.

A debootstrap Debian 12 disk with cloud-init inside (tests/e2e/cloud/build.py, cached
under .cache/e2e-cloud/) is uploaded as a volume through the API, then
POST .../vms/from-cloud-image makes a linked disk at a bigger size and a NoCloud seed
(hostname, a user with an SSH key and a password, the agent installer, and an agent
policy that lets the agent read /etc and the user's ~/.ssh) and boots it. Nothing else
is done to the guest: cloud-init writes the agent's config, sets the guest up and
installs our agent from the seed, and every check goes THROUGH THAT AGENT: hostname,
the user in /etc/passwd, the key in authorized_keys, the machine-id, the config file
the agent runs with.

Then the clone: the source is shut down through its agent, cloned (full) through the
API, which gives the clone a seed of its own (new instance-id and hostname); the clone
boots while the source stays off (one TCG guest at a time on the 2-core machine) and
its agent shows its hostname is the clone's name, and its machine-id and SSH host key
differ from the source's.

The image boots its own kernel directly (it has no bootloader: the root file system is
the whole disk). Measured on the 2-core CI machine under TCG (docs/performance.md, e2e):
image build 256 s once (then cached: under 1 s), upload 1-4 s, boot to agent answering
42-78 s (114-181 s at load ~9: systemd + four cloud-init stages + dpkg installing the
agent), the clone's boot to cloud-init done 41-119 s, the whole file 192-210 s.
Timeouts below are generous wall-clock limits for waits, never assertions.

Other e2e sessions on the same libvirtd run managers of their own, which probe every
guest whose agent connects: when one of them wins a guest's agent socket (QEMU serves
one client), ours gets EAGAIN ("cannot connect to agent socket"); and when ours holds
a guest's socket that another session reaches through libvirt (virDomainOpenChannel),
libvirtd blocks in connect() and every libvirt call hangs until we let go. One e2e
session at a time per host.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from kvmmanager.services.cloudinit.seed import hostname_for

from .cloud.build import CloudImage, build_cloud_image
from .conftest import Lab, wait_job
from .support.api import ApiError
from .support.console import ConsoleLog
from .support.events import agent_event, lifecycle_event
from .support.guests import LIBVIRT_URI

# The first test's setup builds a cloud image, uploads it and boots it under TCG to the
# end of cloud-init: 205 s in stop 15's CI, over the 300 s default in a busier run. Each
# wait inside has its own bound; this one is only the outer stop.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
BOOT_TIMEOUT = 900  # systemd + cloud-init under TCG on a busy 2-core machine
MEMORY_MIB = 768
PASSWORD = "kvmm-e2e-not-secret"  # hashed into the seed (unit-tested)
USER = "alice"
# The agent's defaults (/var/log, /tmp) plus what the checks read: /etc (hostname,
# passwd, machine-id, SSH host keys, the agent's own config) and the user's ~/.ssh.
POLICY = {
    "allowed_read_paths": ["/var/log", "/tmp", "/etc", f"/home/{USER}/.ssh"],
    "allowed_write_paths": ["/tmp"],
}
# cloud-init's final stage ends every boot's run with this line in its output log.
FINISHED_RE = re.compile(r"^Cloud-init v\. \S+ finished at ", re.M)
# ...and warns this way when a runcmd entry exits non-zero (module scripts-user).
RUNCMD_FAILED = "Failed to run module scripts"
T = TypeVar("T")


def ssh_key() -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", os.urandom(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} e2e@kvmm"


@dataclass
class CloudVm:
    name: str
    hostname: str
    user: str
    key: str
    created: dict[str, Any]
    build_seconds: float
    upload_seconds: float
    boot_seconds: float


@dataclass
class CloneVm:
    name: str
    source_machine_id: str
    source_host_key: str
    job: dict[str, Any]
    boot_seconds: float  # start -> agent connected
    ready_seconds: float  # start -> cloud-init finished and the agent answering


def retry(fn: Callable[[], T], timeout: float = 120) -> T:
    """`fn` until it stops raising ApiError (an agent restarting answers errors)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def wait_agent(lab: Lab, name: str, mark: int) -> None:
    """The agent's connected event, then a ping that answers."""
    lab.events.wait(agent_event(name, "connected"), timeout=BOOT_TIMEOUT, after=mark)
    retry(lambda: lab.api.ping(name))


def read(lab: Lab, vm: str, path: str) -> str:
    return retry(lambda: lab.api.read_file(vm, path)["content"])


def finished_runs(lab: Lab, vm: str) -> int:
    return len(FINISHED_RE.findall(read(lab, vm, "/var/log/cloud-init-output.log")))


def wait_cloud_init(lab: Lab, vm: str, runs_before: int) -> None:
    """cloud-init's run of this boot finished, then the agent connected and answering
    (the run may end by restarting it)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while finished_runs(lab, vm) <= runs_before:
        assert time.monotonic() < deadline, f"cloud-init never finished in {vm}"
        time.sleep(3)
    while lab.api.vm(vm)["agent_status"] != "connected":
        assert time.monotonic() < deadline, f"the agent of {vm} did not reconnect"
        time.sleep(1)
    retry(lambda: lab.api.ping(vm))


def remove(lab: Lab, name: str) -> None:
    with contextlib.suppress(ApiError):
        lab.api.action(name, "destroy")
    with contextlib.suppress(ApiError):
        lab.api.delete_vm(name)
    # CD-ROM media stay with remove_volumes: the seed goes on its own.
    with contextlib.suppress(ApiError):
        lab.api.call("DELETE", lab.api._h(f"pools/{lab.pool}/volumes/{name}-seed.iso"))


@pytest.fixture(scope="module")
def cloud_image() -> tuple[CloudImage, float]:
    started = time.monotonic()
    image = build_cloud_image()
    return image, time.monotonic() - started


@pytest.fixture(scope="module")
def image_volume(lab: Lab, cloud_image: tuple[CloudImage, float]) -> Iterator[tuple[str, float]]:
    image, _ = cloud_image
    vol = f"{lab.name('cloudimg')}.qcow2"
    started = time.monotonic()
    with image.disk.open("rb") as fh:
        lab.api.call(
            "PUT",
            lab.api._h(f"pools/{lab.pool}/volumes/{vol}/content"),
            params={"create": True, "format": "qcow2"},
            content=fh,
            headers={"Content-Length": str(image.disk_bytes)},
        )
    yield vol, time.monotonic() - started
    with contextlib.suppress(ApiError):
        lab.api.call("DELETE", lab.api._h(f"pools/{lab.pool}/volumes/{vol}"))


@pytest.fixture(scope="module")
def cloud_vm(
    lab: Lab, cloud_image: tuple[CloudImage, float], image_volume: tuple[str, float]
) -> Iterator[CloudVm]:
    image, build_seconds = cloud_image
    vol, upload_seconds = image_volume
    name = lab.name("ci")
    hostname = f"kvmm-ci-{lab.run_id}"
    key = ssh_key()
    body = {
        "name": name,
        "pool": lab.pool,
        "image": vol,
        "size_gib": 3,  # the image is 2 GiB: cloud-init grows the file system
        "memory_mib": MEMORY_MIB,
        "cloud_init": {
            "hostname": hostname,
            "users": [{"name": USER, "ssh_authorized_keys": [key], "password": PASSWORD}],
            "agent_policy": POLICY,
        },
        "boot": {
            "kernel": str(image.kernel),
            "initrd": str(image.initrd),
            "cmdline": image.cmdline,
        },
        "start": False,
    }
    created = lab.api.call("POST", lab.api._h("vms/from-cloud-image"), json=body)
    try:
        mark = lab.events.mark()
        started = time.monotonic()
        lab.api.action(name, "start")
        console = ConsoleLog(LIBVIRT_URI, name, lab.log_dir / f"{name}.console.log").start()
        try:
            wait_agent(lab, name, mark)
        finally:
            boot = time.monotonic() - started
        # The installer restarts the agent once more after dpkg's own start: the checks
        # begin once cloud-init is done with the guest.
        wait_cloud_init(lab, name, 0)
        ready = time.monotonic() - started
        print(f"cloud image: build {build_seconds:.1f} s, upload {upload_seconds:.1f} s, "
              f"boot to agent {boot:.1f} s, to cloud-init done {ready:.1f} s")  # fmt: skip
        yield CloudVm(name, hostname, USER, key, created, build_seconds, upload_seconds, boot)
        del console
    finally:
        remove(lab, name)


def test_provisioned_through_the_manager(lab: Lab, cloud_vm: CloudVm) -> None:
    c = cloud_vm.created
    assert c["agent"] is True and c["hostname"] == cloud_vm.hostname
    assert c["agent_policy"]["security"]["allowed_read_paths"] == POLICY["allowed_read_paths"]
    vols = {v["name"]: v for v in lab.api.volumes(lab.pool)}
    assert vols[c["disk"]]["capacity"] == 3 * 1024**3
    assert c["seed"] in vols


def test_the_agent_came_up_by_itself_with_the_policy(lab: Lab, cloud_vm: CloudVm) -> None:
    """Installed by cloud-init's runcmd from the seed (dpkg, systemd unit), nobody else,
    and running with the config cloud-init wrote before the install (dpkg kept it)."""
    assert lab.api.vm(cloud_vm.name)["agent_status"] == "connected"
    log = read(lab, cloud_vm.name, "/var/log/cloud-init-output.log")
    assert "kvmmanager-agent: installed kvmmanager-agent" in log
    assert "(deb install)" in log and RUNCMD_FAILED not in log, log
    written = json.loads(read(lab, cloud_vm.name, "/etc/kvmmanager-agent/config.json"))
    assert written == cloud_vm.created["agent_policy"]
    # Writes stay where the policy says: /etc is readable, not writable.
    with pytest.raises(ApiError) as e:
        lab.api.write_file(cloud_vm.name, "/etc/kvmm-e2e-denied", "x")
    assert 400 <= e.value.status < 500 and "allowed paths" in str(e.value.body), e.value


def test_hostname_user_key_and_machine_id_through_the_agent(lab: Lab, cloud_vm: CloudVm) -> None:
    name = cloud_vm.name
    assert lab.api.agent(name, "system")["hostname"] == cloud_vm.hostname
    assert read(lab, name, "/etc/hostname").strip() == cloud_vm.hostname
    passwd = [line.split(":") for line in read(lab, name, "/etc/passwd").splitlines()]
    alice = next(f for f in passwd if f[0] == cloud_vm.user)
    assert alice[5] == f"/home/{cloud_vm.user}" and alice[6] == "/bin/bash"
    keys = read(lab, name, f"/home/{cloud_vm.user}/.ssh/authorized_keys").splitlines()
    assert cloud_vm.key in keys
    assert re.fullmatch(r"[0-9a-f]{32}", read(lab, name, "/etc/machine-id").strip())


@pytest.fixture(scope="module")
def clone_vm(lab: Lab, cloud_vm: CloudVm) -> Iterator[CloneVm]:
    """The source shut down through its agent, cloned, and the clone booted alone."""
    src = cloud_vm.name
    machine_id = read(lab, src, "/etc/machine-id").strip()
    host_key = read(lab, src, "/etc/ssh/ssh_host_ed25519_key.pub").strip()
    runs = finished_runs(lab, src)
    mark = lab.events.mark()
    lab.api.agent(src, "shutdown", "POST", json={"timeout_seconds": 0})
    lab.events.wait(lifecycle_event(src, "shutoff"), timeout=300, after=mark)
    name = lab.name("ci-clone")
    res = lab.api.call("POST", lab.api._vm(src, "clone"), json={"name": name, "mode": "full"})
    try:
        job = wait_job(lab, res["job_id"], timeout=600)
        mark = lab.events.mark()
        started = time.monotonic()
        lab.api.action(name, "start")
        console = ConsoleLog(LIBVIRT_URI, name, lab.log_dir / f"{name}.console.log").start()
        wait_agent(lab, name, mark)
        boot = time.monotonic() - started
        # The agent on the copied disk starts early; cloud-init's new instance (hostname,
        # machine-id, host keys) finishes later and then restarts it for the policy.
        wait_cloud_init(lab, name, runs)
        ready = time.monotonic() - started
        print(f"cloud clone: boot to agent {boot:.1f} s, to cloud-init done {ready:.1f} s")
        yield CloneVm(name, machine_id, host_key, job, boot, ready)
        del console
    finally:
        remove(lab, name)


def test_clone_gets_its_own_seed(lab: Lab, cloud_vm: CloudVm, clone_vm: CloneVm) -> None:
    result = clone_vm.job["result"]
    assert result["identity"] == "cloud-init" and result["source"] == cloud_vm.name
    vols = {v["name"] for v in lab.api.volumes(lab.pool)}
    assert f"{clone_vm.name}-seed.iso" in vols


def test_clone_identity_through_its_agent(lab: Lab, clone_vm: CloneVm) -> None:
    name = clone_vm.name
    hostname = hostname_for(name)
    assert lab.api.agent(name, "system")["hostname"] == hostname
    assert read(lab, name, "/etc/hostname").strip() == hostname
    machine_id = read(lab, name, "/etc/machine-id").strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
    assert machine_id != clone_vm.source_machine_id
    host_key = read(lab, name, "/etc/ssh/ssh_host_ed25519_key.pub").strip()
    assert host_key.startswith("ssh-ed25519 ") and host_key != clone_vm.source_host_key
    # The copied disk keeps the user and the agent's policy.
    assert read(lab, name, f"/home/{USER}/.ssh/authorized_keys").strip()
    # This boot's cloud-init run: the installer found the agent in place and runcmd
    # (install, then the restart for the policy) went through.
    log = read(lab, name, "/var/log/cloud-init-output.log")
    this_boot = log[[m.end() for m in FINISHED_RE.finditer(log)][-2] :]
    assert "is already installed" in this_boot, this_boot
    assert RUNCMD_FAILED not in this_boot, this_boot
