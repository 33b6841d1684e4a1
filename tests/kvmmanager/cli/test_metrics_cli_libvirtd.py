"""`kvm-manager metrics vm` on qemu:///system (issue 17, item 13): a 64 MiB guest without
a balloon driver showed `mem 421.2 MiB` with nothing saying it is the QEMU process's RSS.
The figure now names its source, beside the guest's own memory size."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import libvirt
import pytest
from tests.kvmmanager.conftest import drop_vm
from tests.libvirtd_pools import DirPool

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
    settings.metrics.interval_seconds = 0.5
    return settings


def test_vm_memory_names_its_source(
    cli: Any,
    live_server: Any,
    libvirtd_conn: libvirt.virConnect,
    dir_pool: Callable[..., DirPool],
) -> None:
    name = dir_pool("kvmm-t-metmem-").name  # a unique name, cleaned with the pool
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    try:
        libvirtd_conn.createXML(dom.to_xml(), 0)
        svc = live_server.manager.metrics
        deadline = time.monotonic() + 60
        while True:
            r = cli("--json", "metrics", "vm", name)
            if r.exit_code == 0 and '"mem_source": "rss"' in r.stdout:
                break
            assert time.monotonic() < deadline, (r.stdout, r.stderr, svc.hosts())
            time.sleep(0.2)
        r = cli("metrics", "vm", name)
        assert r.exit_code == 0, r.stderr
        mem = next(line for line in r.stdout.splitlines() if " mem " in line)
        assert "(QEMU process RSS)" in mem
        size = next(line for line in r.stdout.splitlines() if "guest memory size" in line)
        assert "64.0 MiB" in size
    finally:
        drop_vm(name)
