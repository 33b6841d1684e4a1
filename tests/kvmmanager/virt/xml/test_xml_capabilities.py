"""Host and domain capabilities, from captured libvirt 9.0 output and live drivers."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.capabilities import Capabilities, DomainCapabilities


def _caps(data_dir: Path, name: str) -> Capabilities:
    return Capabilities.from_xml((data_dir / name).read_text())


def _dcaps(data_dir: Path, name: str) -> DomainCapabilities:
    return DomainCapabilities.from_xml((data_dir / name).read_text())


def test_host_capabilities(data_dir: Path) -> None:
    caps = _caps(data_dir, "host-capabilities.xml")
    assert (caps.host_arch, caps.host_cpu_model, caps.host_cpu_vendor) == (
        "x86_64",
        "kvm64",
        "AMD",
    )
    assert "avx2" in caps.host_cpu_features
    assert caps.arches() == ["i686", "x86_64"]
    assert caps.domain_types() == ["qemu", "kvm"] and caps.kvm_offered()
    machines = caps.machines("x86_64", "kvm")
    assert {"pc", "q35", "pc-q35-7.2"} <= set(machines)
    guest = caps.guests_for("x86_64")[0]
    assert (guest.wordsize, guest.emulator) == (64, "/usr/bin/qemu-system-x86_64")
    q35 = next(m for m in guest.machines if m.name == "q35")
    assert (q35.canonical, q35.max_cpus) == ("pc-q35-7.2", 288)
    assert any(m.deprecated for m in guest.machines)
    with pytest.raises(InvalidInput):
        caps.host_arch = "aarch64"


def test_test_driver_capabilities() -> None:
    conn = libvirt.open("test:///default")
    try:
        caps = Capabilities.from_xml(conn.getCapabilities())
    finally:
        conn.close()
    assert caps.host_arch == "i686"
    assert caps.domain_types("i686") == ["test"] and not caps.kvm_offered()
    assert [g.os_type for g in caps.guests] == ["hvm", "xen"]


def test_domain_capabilities_kvm_q35(data_dir: Path) -> None:
    dc = _dcaps(data_dir, "domcaps-kvm-q35.xml")
    assert (dc.path, dc.domain_type, dc.machine, dc.arch, dc.vcpu_max) == (
        "/usr/bin/qemu-system-x86_64",
        "kvm",
        "pc-q35-7.2",
        "x86_64",
        288,
    )
    assert dc.supports_uefi and dc.supports_secure_boot
    assert dc.firmware_values == ["efi"]
    assert dc.firmware_paths[0] == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
    assert dc.loader_types == ["rom", "pflash"] and dc.loader_readonly_values == ["yes", "no"]
    # This host has no swtpm: libvirt offers only TPM passthrough.
    assert dc.tpm_supported and dc.tpm_models == ["tpm-tis", "tpm-crb"]
    assert not dc.supports_tpm() and dc.supports_tpm("passthrough")
    assert dc.tpm_versions() == []
    assert dc.supports_virtio_serial() is True and dc.channel_types == ["pty", "unix", "spicevmc"]
    assert "virtio" in dc.disk_buses and "cdrom" in dc.disk_devices
    assert "virtio" in dc.disk_models and "vnc" in dc.graphics_types
    assert "virtio" in dc.video_models and dc.hostdev_supported
    assert dc.hostdev_modes == ["subsystem"] and "pci" in dc.hostdev_subsys_types
    assert dc.rng_supported and "random" in dc.rng_backend_models and "virtio" in dc.rng_models
    assert dc.cpu_modes() == ["host-passthrough", "maximum", "host-model", "custom"]
    assert (dc.gic_supported, dc.sev_supported, dc.sgx_supported) == (False, False, False)
    assert dc.vmcoreinfo_supported and dc.genid_supported and dc.backup_supported
    assert dc.iothreads_supported and dc.disk_supported and dc.graphics_supported
    assert dc.video_supported and dc.os_supported and dc.loader_supported
    assert dc.feature_supported("hyperv") is True and dc.feature_supported("nope") is None


def test_domain_capabilities_tcg_i440fx(data_dir: Path) -> None:
    dc = _dcaps(data_dir, "domcaps-qemu.xml")
    assert (dc.domain_type, dc.machine) == ("qemu", "pc-i440fx-7.2")
    # i440fx cannot do SMM-backed Secure Boot: only the plain OVMF build is offered.
    assert dc.supports_uefi and not dc.supports_secure_boot
    assert dc.firmware_paths == ["/usr/share/OVMF/OVMF_CODE_4M.fd"]
    assert "host-passthrough" not in dc.cpu_modes()


def test_older_libvirt_without_channel_caps() -> None:
    dc = DomainCapabilities.from_xml(
        "<domainCapabilities><domain>kvm</domain><os supported='no'/>"
        "<devices><tpm supported='yes'><enum name='backendModel'><value>emulator</value>"
        "</enum></tpm></devices></domainCapabilities>"
    )
    assert dc.supports_virtio_serial() is None
    assert dc.supports_tpm() and not dc.supports_uefi and dc.firmware_paths == []


@pytest.mark.libvirtd
def test_live_domain_capabilities() -> None:
    conn = libvirt.open("qemu:///system")
    try:
        caps = Capabilities.from_xml(conn.getCapabilities())
        arch = caps.host_arch
        for virt_type in caps.domain_types(arch):
            dc = DomainCapabilities.from_xml(
                conn.getDomainCapabilities(None, arch, None, virt_type, 0)
            )
            assert dc.domain_type == virt_type and dc.arch == arch
            assert dc.vcpu_max >= 1 and dc.machine in caps.machines(arch) + [
                m.canonical for g in caps.guests_for(arch) for m in g.machines
            ]
    finally:
        conn.close()
