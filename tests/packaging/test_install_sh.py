"""install.sh / uninstall.sh against fake roots of each family, under dash and busybox sh."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kvmmanager.iso import agent_version

if TYPE_CHECKING:
    from tests.packaging.conftest import Guest

V = agent_version()
UNIT = "kvmmanager-agent.service"


def test_debian_systemd_installs_the_deb_and_enables_the_service(guest: Guest) -> None:
    guest.os_release("debian").systemd().tool("dpkg", "dpkg-query", "systemctl")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    calls = guest.calls()
    assert f"dpkg --root={guest.root} -i {guest.cd}/packages/kvmmanager-agent.deb" in calls
    assert "systemctl daemon-reload" in calls
    assert f"systemctl enable {UNIT}" in calls
    # No port yet: the service is enabled but not started, and the output says why.
    assert not any(c.startswith(("systemctl start", "systemctl restart")) for c in calls)
    assert "MISSING" in res.stdout
    assert "family: debian, init: systemd" in res.stdout
    assert f"installed kvmmanager-agent {V} (deb install)" in res.stdout


def test_ubuntu_with_port_restarts_the_service(guest: Guest) -> None:
    guest.os_release("ubuntu", like="debian").systemd().port()
    guest.tool("dpkg", "dpkg-query", "systemctl", "udevadm")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    assert f"systemctl restart {UNIT}" in guest.calls()
    assert "udevadm control --reload" in guest.calls()
    assert "org.kvmmanager.agent.0: present" in res.stdout


def test_same_version_installed_does_nothing(guest: Guest) -> None:
    guest.os_release("debian").systemd().port().tool("dpkg", "dpkg-query", "systemctl")
    guest.env["FAKE_DPKG_VERSION"] = f"{V}-1"
    res = guest.run()
    assert res.returncode == 0, res.stderr
    assert not any(c.startswith("dpkg ") for c in guest.calls())
    # The service stays as the admin left it: a re-run enabled a unit the admin had
    # disabled (issue 20 independent try), and said "installed" beside "nothing to do".
    assert not any(c.startswith("systemctl") for c in guest.calls()), guest.calls()
    assert "nothing to do" in res.stdout
    assert "installed kvmmanager-agent" not in res.stdout


def test_rocky_installs_the_rpm(guest: Guest) -> None:
    guest.os_release("rocky", like="rhel centos fedora").systemd().tool("rpm", "systemctl")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    rpm_file = f"{guest.cd}/packages/kvmmanager-agent.rpm"
    assert f"rpm --root={guest.root} -U --replacepkgs {rpm_file}" in guest.calls()
    assert f"systemctl enable {UNIT}" in guest.calls()


def test_opensuse_uses_rpm_too(guest: Guest) -> None:
    guest.os_release("opensuse-leap", like="suse opensuse").systemd().tool("rpm", "systemctl")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    assert "family: suse" in res.stdout
    assert any(c.startswith(f"rpm --root={guest.root} -U") for c in guest.calls())


def test_alpine_openrc_installs_the_apk_and_adds_the_service(guest: Guest) -> None:
    guest.os_release("alpine").openrc().tool("apk", "rc-update", "rc-service")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    calls = guest.calls()
    apk_file = f"{guest.cd}/packages/kvmmanager-agent.apk"
    assert f"apk --root={guest.root} add --allow-untrusted --no-network {apk_file}" in calls
    assert "rc-update add kvmmanager-agent default" in calls
    assert "rc-service kvmmanager-agent restart" in calls
    assert "init: openrc" in res.stdout


def test_debian_without_dpkg_falls_back_to_plain_copy(guest: Guest) -> None:
    guest.os_release("debian").systemd().tool("systemctl")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    pyz = guest.root / "usr/lib/kvmmanager-agent/kvmmanager-agent.pyz"
    assert pyz.read_bytes() == (guest.cd / "kvmmanager-agent.pyz").read_bytes()
    unit = guest.root / "etc/systemd/system" / UNIT
    assert unit.read_text() == (guest.cd / "service" / UNIT).read_text()
    assert (guest.root / "etc/udev/rules.d/60-kvmmanager-agent.rules").is_file()
    assert f"systemctl enable {UNIT}" in guest.calls()
    assert "(plain install)" in res.stdout


def test_arch_plain_install_then_upgrade_keeps_config_and_uninstall(guest: Guest) -> None:
    guest.os_release("arch").systemd().tool("systemctl")
    assert guest.run().returncode == 0
    conf = guest.root / "etc/kvmmanager-agent/config.json"
    assert conf.read_bytes() == (guest.cd / "config.json").read_bytes()
    conf.write_text('{"log_level": "debug"}\n')

    second = guest.run()
    assert second.returncode == 0, second.stderr
    assert "keeping the existing /etc/kvmmanager-agent/config.json" in second.stdout
    assert "nothing to do" in second.stdout
    assert conf.read_text() == '{"log_level": "debug"}\n'

    gone = guest.run("uninstall.sh")
    assert gone.returncode == 0, gone.stderr
    assert not (guest.root / "usr/lib/kvmmanager-agent").exists()
    assert not (guest.root / "etc/systemd/system" / UNIT).exists()
    assert conf.exists(), "a modified config must survive uninstall"
    assert "kept /etc/kvmmanager-agent/config.json because it was modified" in gone.stdout
    assert f"systemctl disable --now {UNIT}" in guest.calls()


def test_minimal_guest_without_init_or_os_release(guest: Guest) -> None:
    # The busybox + python3 test guest: no os-release, no package tool, no init system.
    res = guest.run()
    assert res.returncode == 0, res.stderr
    assert "family: plain, init: none" in res.stdout
    assert "python3 /usr/lib/kvmmanager-agent/kvmmanager-agent.pyz" in res.stdout
    assert (guest.root / "usr/lib/kvmmanager-agent/kvmmanager-agent.pyz").is_file()
    listed = (guest.root / "var/lib/kvmmanager-agent/installed.list").read_text().split()
    assert listed == ["/usr/lib/kvmmanager-agent/kvmmanager-agent.pyz"]
    # What the agent caches for itself on its first start (its bytecode) goes too.
    cached = guest.root / "var/cache/kvmmanager-agent/cpython-311-0-0/kvmmanager_agent"
    cached.mkdir(parents=True)
    (cached / "__init__.py").write_text("")

    gone = guest.run("uninstall.sh")
    assert gone.returncode == 0, gone.stderr
    # The config was never edited, so it goes too; nothing of the agent is left.
    assert not (guest.root / "etc/kvmmanager-agent").exists()
    assert not (guest.root / "usr/lib/kvmmanager-agent").exists()
    assert not (guest.root / "var/lib/kvmmanager-agent").exists()
    assert not (guest.root / "var/cache/kvmmanager-agent").exists()


def test_sysvinit_installs_the_init_script(guest: Guest) -> None:
    (guest.root / "etc/init.d").mkdir(parents=True)
    guest.os_release("devuan", like="debian").tool("service", "update-rc.d")
    res = guest.run("install.sh", "--plain")
    assert res.returncode == 0, res.stderr
    script = guest.root / "etc/init.d/kvmmanager-agent"
    assert script.read_bytes() == (guest.cd / "service/kvmmanager-agent.sysv").read_bytes()
    assert script.stat().st_mode & 0o111
    assert "update-rc.d kvmmanager-agent defaults" in guest.calls()
    assert "service kvmmanager-agent restart" in guest.calls()


def test_no_start_skips_the_init_system(guest: Guest) -> None:
    guest.os_release("debian").systemd().tool("dpkg", "dpkg-query", "systemctl")
    res = guest.run("install.sh", "--no-start")
    assert res.returncode == 0, res.stderr
    assert not any(c.startswith("systemctl") for c in guest.calls())


def test_not_root_fails_with_3_and_touches_nothing(guest: Guest) -> None:
    guest.os_release("debian").systemd().tool("dpkg", "systemctl")
    guest.env["FAKE_UID"] = "1000"
    res = guest.run()
    assert res.returncode == 3
    assert "run me as root" in res.stderr
    assert guest.calls() == []
    assert not (guest.root / "usr").exists()


def test_bad_checksum_fails_with_4_before_installing(guest: Guest, tmp_path: Path) -> None:
    cd = tmp_path / "cd"
    shutil.copytree(guest.cd, cd)
    (cd / "kvmmanager-agent.pyz").write_bytes(b"tampered")
    guest.cd = cd
    guest.os_release("debian").systemd().tool("dpkg", "systemctl")
    res = guest.run()
    assert res.returncode == 4
    assert "checksum mismatch" in res.stderr
    assert "kvmmanager-agent.pyz" in res.stderr
    assert guest.calls() == []


def test_checksums_verified_with_python_when_sha256sum_is_missing(
    guest: Guest, tmp_path: Path
) -> None:
    cd = tmp_path / "cd"
    shutil.copytree(guest.cd, cd)
    (cd / "install.sh").chmod(0o755)
    (cd / "config.json").write_text("{}")
    guest.cd = cd
    if guest.shell[0].endswith("busybox"):
        pytest.skip("busybox sh has sha256sum built in; the python path is for dash guests")
    guest.without("sha256sum")
    res = guest.run()
    assert res.returncode == 4
    assert "config.json: FAILED" in res.stderr


def test_missing_python_says_what_to_install_per_family(guest: Guest) -> None:
    guest.without("python3").tool("dpkg", "systemctl")
    for os_id, hint in [
        ("debian", "apt-get install python3"),
        ("fedora", "dnf install python3"),
        ("alpine", "apk add python3"),
        ("opensuse-tumbleweed", "zypper install python3"),
        ("arch", "pacman -S python"),
    ]:
        guest.os_release(os_id)
        res = guest.run()
        assert res.returncode == 5, (os_id, res.stderr)
        assert "python3 is not installed" in res.stderr
        assert hint in res.stderr, os_id
    assert not (guest.root / "usr").exists()


def test_too_old_python_fails_with_5(guest: Guest) -> None:
    guest.os_release("debian").old_python().tool("dpkg")
    res = guest.run()
    assert res.returncode == 5
    assert "older than 3.8 (Python 3.6.9)" in res.stderr
    assert "apt-get install python3" in res.stderr


def test_unknown_option_fails_with_2(guest: Guest) -> None:
    assert guest.run("install.sh", "--bogus").returncode == 2
    assert guest.run("uninstall.sh", "--bogus").returncode == 2


def test_uninstall_of_a_deb_install_uses_dpkg(guest: Guest) -> None:
    guest.os_release("debian").systemd().tool("dpkg", "dpkg-query", "systemctl")
    guest.env["FAKE_DPKG_VERSION"] = f"{V}-1"
    res = guest.run("uninstall.sh")
    assert res.returncode == 0, res.stderr
    assert f"dpkg --root={guest.root} -r kvmmanager-agent" in guest.calls()
    assert "config.json is kept" in res.stdout


def test_uninstall_when_nothing_is_installed(guest: Guest) -> None:
    res = guest.run("uninstall.sh")
    assert res.returncode == 0
    assert "nothing to remove" in res.stdout


def test_busybox_init_d_alone_is_not_sysvinit(guest: Guest) -> None:
    (guest.root / "etc/init.d").mkdir(parents=True)
    (guest.root / "etc/init.d/rcS").write_text("#!/bin/sh\n")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    assert "init: none" in res.stdout
    assert not (guest.root / "etc/init.d/kvmmanager-agent").exists()
    # The line the e2e guest's supervisor reads to start the agent.
    lines = res.stdout.splitlines()
    i = lines.index("kvmmanager-agent: no init system found: start the agent with")
    assert lines[i + 1].split(": ", 1)[1].strip() == (
        "python3 /usr/lib/kvmmanager-agent/kvmmanager-agent.pyz "
        "--config /etc/kvmmanager-agent/config.json"
    )


def test_uninstall_of_an_rpm_install_uses_rpm(guest: Guest) -> None:
    guest.os_release("fedora").systemd().tool("rpm", "systemctl")
    guest.env["FAKE_RPM_Q_RC"] = "0"
    res = guest.run("uninstall.sh")
    assert res.returncode == 0, res.stderr
    assert f"rpm --root={guest.root} -e kvmmanager-agent" in guest.calls()
    assert "config.json.rpmsave" in res.stdout


def test_uninstall_of_an_apk_install_uses_apk(guest: Guest) -> None:
    guest.os_release("alpine").openrc().tool("apk", "rc-update", "rc-service")
    guest.env["FAKE_APK_INFO_RC"] = "0"
    res = guest.run("uninstall.sh")
    assert res.returncode == 0, res.stderr
    assert f"apk --root={guest.root} del kvmmanager-agent" in guest.calls()


def test_rpm_same_version_installed_does_nothing(guest: Guest) -> None:
    guest.os_release("almalinux", like="rhel").systemd().tool("rpm", "systemctl")
    guest.env["FAKE_RPM_Q_RC"] = "0"
    res = guest.run()
    assert res.returncode == 0, res.stderr
    assert not any(" -U " in c for c in guest.calls())
    assert "nothing to do" in res.stdout


def test_failing_package_tool_exits_6(guest: Guest) -> None:
    guest.os_release("debian").systemd().tool("dpkg", "dpkg-query", "systemctl")
    guest.env["FAKE_DPKG_RC"] = "1"
    res = guest.run()
    assert res.returncode == 6
    assert "dpkg -i" in res.stderr


def test_debian_image_build_with_systemd_installed_but_not_running(guest: Guest) -> None:
    """An image build (a chroot with systemd installed, nothing running): the unit is
    enabled for the image's first boot and nothing is started in the build's namespaces
    (issue 20: /etc/init.d and update-rc.d made it look like sysvinit, and the missing
    init script made install.sh exit 7)."""
    (guest.root / "etc/init.d").mkdir(parents=True)
    (guest.root / "lib/systemd").mkdir(parents=True)
    (guest.root / "lib/systemd/systemd").write_text("")
    guest.os_release("debian").tool("dpkg", "dpkg-query", "systemctl", "update-rc.d", "service")
    res = guest.run()
    assert res.returncode == 0, res.stderr
    calls = guest.calls()
    assert "family: debian, init: systemd (not running)" in res.stdout
    assert f"systemctl enable {UNIT}" in calls
    assert not any(
        c.startswith(("service", "update-rc.d", "systemctl daemon-reload")) for c in calls
    )
    assert not any(" start " in c or " restart " in c for c in calls)
    assert "starts at the next boot" in res.stdout


def test_help_is_readable(guest: Guest) -> None:
    res = guest.run("install.sh", "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Install (or upgrade) the KVM Manager guest agent")
    assert not any(line.startswith("#") for line in res.stdout.splitlines())
    assert "--no-start" in res.stdout


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in root.rglob("*")
    }


def test_dry_run_names_what_it_would_do_and_changes_nothing(guest: Guest) -> None:
    """--dry-run (issue 20: there was none) works without root, says which package and
    which service commands it would run, runs none of them and writes nothing."""
    guest.os_release("debian").systemd().port().tool("dpkg", "dpkg-query", "systemctl", "udevadm")
    guest.env["FAKE_UID"] = "1000"
    before = _tree(guest.root)
    res = guest.run("install.sh", "--dry-run")
    assert res.returncode == 0, res.stderr
    deb = f"{guest.cd}/packages/kvmmanager-agent.deb"
    assert f"would run: {guest.bin}/dpkg --root={guest.root} -i {deb}" in res.stdout
    assert f"would run: {guest.bin}/systemctl enable {UNIT}" in res.stdout
    assert f"would run: {guest.bin}/systemctl restart {UNIT}" in res.stdout
    assert "dry run: nothing was changed" in res.stdout
    # Only the read-only question of what is installed was asked.
    assert all(c.startswith("dpkg-query ") for c in guest.calls()), guest.calls()
    assert _tree(guest.root) == before


def test_dry_run_of_a_plain_install_writes_nothing(guest: Guest) -> None:
    guest.os_release("arch").systemd().tool("systemctl")
    before = _tree(guest.root)
    res = guest.run("install.sh", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "would copy kvmmanager-agent.pyz to /usr/lib/kvmmanager-agent" in res.stdout
    assert "would install kvmmanager-agent" in res.stdout
    assert guest.calls() == []
    assert _tree(guest.root) == before
