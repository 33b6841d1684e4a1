"""KVM-or-TCG detection."""

from __future__ import annotations

import os

import libvirt
import pytest

from kvmmanager.virt import probe
from kvmmanager.virt.probe import AccelInfo, host_accel, probe_accel, probe_dev_kvm


async def test_test_driver_offers_no_kvm(testhost):
    info = await host_accel(testhost)
    assert (info.accel, info.domain_type, info.source) == ("tcg", "qemu", "probe")
    assert info.reason == "libvirt offers no kvm domain type for i686"
    # Cached per connection: the same object, no second probe.
    assert await host_accel(testhost) is info
    assert info.to_dict() == {
        "accel": "tcg",
        "reason": info.reason,
        "source": "probe",
        "domain_type": "qemu",
    }


async def test_config_override_skips_the_probe(testhost):
    forced = await host_accel(testhost, "kvm")
    assert forced == AccelInfo("kvm", "set by the libvirt.accel setting", source="config")
    assert forced.domain_type == "kvm"
    assert "accel" not in testhost.cache
    assert (await host_accel(testhost, "tcg")).domain_type == "qemu"


def test_dev_kvm_probe_reports_missing_device(tmp_path):
    works, why = probe_dev_kvm(str(tmp_path / "kvm"))
    assert works is False and "does not exist" in why


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm on this machine")
def test_dev_kvm_probe_on_this_machine():
    works, why = probe_dev_kvm()
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert works is True and why == "KVM_CREATE_VM succeeded"
    else:
        assert works is None and "not accessible" in why


@pytest.mark.libvirtd
def test_probe_guests_on_the_real_daemon(monkeypatch):
    """The full probe against qemu:///system; its guests are gone afterwards. On these
    lab machines KVM exists but guests hang (vm-lab notes), so the verdict is tcg there."""
    prefix = "kvmm-t-host-probe-"
    monkeypatch.setattr(probe, "PROBE_PREFIX", prefix)
    conn = libvirt.open("qemu:///system")
    try:
        info = probe_accel(conn, local=True)
        left = [d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix)]
    finally:
        conn.close()
    assert left == []
    if info.accel == "kvm":
        assert "reached the firmware's idle loop" in info.reason
    else:
        assert info.accel == "tcg" and info.domain_type == "qemu"
        assert "kvm" in info.reason
