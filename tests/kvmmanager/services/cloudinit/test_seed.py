"""Cloud-init seeds: user-data that cloud-init's own schema accepts, refusals naming the
field, a NoCloud ISO (label cidata, long names) carrying the agent installer. The
provisioning service needs volume uploads (the test driver has none): see
test_cloudinit_libvirtd.py."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.cloudinit import seed as ci
from kvmmanager_agent import config as agent_config

HASH = "$6$salt$" + "x" * 86


def ssh_key() -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", os.urandom(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} alice@laptop"


def spec(**kw: Any) -> ci.CloudInitSpec:
    user = ci.CloudUser(name="alice", ssh_authorized_keys=[ssh_key()], passwd_hash=HASH)
    return ci.CloudInitSpec(**{"hostname": "web1", "users": [user], "packages": ["curl"], **kw})


def test_user_data_content_and_schema() -> None:
    s = spec()
    text = ci.user_data(s)
    assert text.startswith("#cloud-config\n")
    cfg = yaml.safe_load(text)
    assert cfg["hostname"] == "web1" and cfg["packages"] == ["curl"]
    alice = cfg["users"][1]
    assert alice["name"] == "alice" and alice["passwd"] == HASH and not alice["lock_passwd"]
    assert alice["ssh_authorized_keys"] == s.users[0].ssh_authorized_keys
    assert "kvmm-agent/install.sh" in cfg["runcmd"][0][2]
    assert "runcmd" not in yaml.safe_load(ci.user_data(spec(install_agent=False)))
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init (the schema validator) is not installed")
    ci.validate_user_data(text)
    with pytest.raises(InvalidInput) as e:
        ci.validate_user_data("#cloud-config\nusers: 5\npackages: {a: b}\n")
    assert e.value.field == "spec"
    meta = yaml.safe_load(ci.meta_data(s, "i-1"))
    assert meta == {"instance-id": "i-1", "local-hostname": "web1"}
    assert yaml.safe_load(ci.network_config())["version"] == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostname": "bad_host!"}, "hostname"),
        ({"users": [ci.CloudUser(name="Root Bad")]}, "users[0].name"),
        ({"users": [ci.CloudUser(name="bob", ssh_authorized_keys=["hello"])]},
         "users[0].ssh_authorized_keys"),
        ({"users": [ci.CloudUser(name="bob", passwd_hash="secret123")]}, "users[0].passwd_hash"),
        ({"users": [ci.CloudUser(name="bob", shell="bash")]}, "users[0].shell"),
        ({"packages": ["curl; rm -rf /"]}, "packages"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        ci.validate_spec(spec(**change))
    assert e.value.field == field


def _fake_agent_iso(path: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="KVMM_AGENT")
    iso.add_fp(io.BytesIO(b"#!/bin/sh\necho hi\n"), 18, "/INSTALL.SH;1", rr_name="install.sh")
    iso.add_directory("/PACKAGES", rr_name="packages")
    iso.add_fp(io.BytesIO(b"deb"), 3, "/PACKAGES/A.DEB;1", rr_name="agent_0.1.0_all.deb")
    iso.write(str(path))
    iso.close()


def _read(iso: pycdlib.PyCdlib, rr_path: str) -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, rr_path=rr_path)
    return buf.getvalue()


def test_seed_iso_is_nocloud_with_the_agent_tree(tmp_path: Path) -> None:
    agent = tmp_path / "agent.iso"
    _fake_agent_iso(agent)
    files = {"meta-data": b"m", "user-data": b"#cloud-config\n", "network-config": b"n"}
    data = ci.build_seed_iso(files, agent)
    out = tmp_path / "seed.iso"
    out.write_bytes(data)
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        for name, content in files.items():
            assert _read(iso, f"/{name}") == content
        assert _read(iso, "/kvmm-agent/install.sh").startswith(b"#!/bin/sh")
        assert _read(iso, "/kvmm-agent/packages/agent_0.1.0_all.deb") == b"deb"
        joliet = io.BytesIO()
        iso.get_file_from_iso_fp(joliet, joliet_path="/user-data")
        assert joliet.getvalue() == files["user-data"]
    finally:
        iso.close()


POLICY = {
    "allowed_read_paths": ["/var/log", "/etc", "/home/alice/.ssh"],
    "command_whitelist": ["id"],
}


def test_agent_policy_is_written_before_the_install(tmp_path: Path) -> None:
    """write_files (cloud-init's init stage) puts the agent's config in place before
    runcmd (its final stage) installs the agent; the agent's own loader reads it."""
    s = spec(agent_policy=ci.AgentPolicy(**POLICY))
    ci.validate_spec(s)
    text = ci.user_data(s)
    cfg = yaml.safe_load(text)
    (entry,) = cfg["write_files"]
    assert entry["path"] == agent_config.DEFAULT_CONFIG_PATH == ci.AGENT_CONFIG_PATH
    assert entry["permissions"] == "0644" and entry["owner"] == "root:root"
    assert "|" in text.split("content:", 1)[1].splitlines()[0]  # a readable block
    path = tmp_path / "config.json"
    path.write_text(entry["content"])
    agent = agent_config.load(str(path))
    assert agent.allowed_read_paths == POLICY["allowed_read_paths"]
    assert agent.allowed_write_paths == ["/tmp"]  # omitted: the agent's default
    assert agent.command_whitelist == ["id"] and "exec_command" in agent.capabilities()
    script = cfg["runcmd"][-1][2]
    assert ci.DPKG_KEEP_CONFIG + ' sh "$d/kvmm-agent/install.sh"' in script
    # An agent already on the disk started before write_files: restarted to read it.
    assert "if [ $had = 1 ]; then" in script and "try-restart kvmmanager-agent" in script
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init (the schema validator) is not installed")
    ci.validate_user_data(text)


def test_no_policy_keeps_the_packaged_defaults() -> None:
    cfg = yaml.safe_load(ci.user_data(spec()))
    assert "write_files" not in cfg
    assert "try-restart" not in cfg["runcmd"][-1][2]
    # Without the install, a policy still reaches an agent the image already has.
    cfg = yaml.safe_load(ci.user_data(spec(install_agent=False, agent_policy=ci.AgentPolicy())))
    assert cfg["write_files"][0]["path"] == ci.AGENT_CONFIG_PATH
    (cmd,) = cfg["runcmd"]
    assert cmd[2].startswith(f"if [ -e {ci.AGENT_PYZ} ]; then") and "install.sh" not in cmd[2]
    # The default policy is the agent's own default, key for key.
    written = json.loads(cfg["write_files"][0]["content"])
    assert written["security"] == agent_config.DEFAULTS["security"]


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"allowed_read_paths": ["etc"]}, "allowed_read_paths"),
        ({"allowed_read_paths": ["/var/../etc"]}, "allowed_read_paths"),
        ({"allowed_write_paths": ["/tmp\n/etc"]}, "allowed_write_paths"),
        ({"allowed_write_paths": [""]}, "allowed_write_paths"),
        ({"allowed_read_paths": [f"/d{i}" for i in range(65)]}, "allowed_read_paths"),
        ({"command_whitelist": ["rm -rf /"]}, "command_whitelist"),
        ({"command_whitelist": ["bin/sh"]}, "command_whitelist"),
        ({"disabled_methods": ["file_read", "no_such_method"]}, "disabled_methods"),
        ({"max_file_size_mb": 0}, "max_file_size_mb"),
        ({"max_file_size_mb": 11}, "max_file_size_mb"),
        ({"max_command_timeout_seconds": 0.5}, "max_command_timeout_seconds"),
    ],
)
def test_bad_policies_name_the_field(policy: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        ci.validate_spec(spec(agent_policy=ci.AgentPolicy(**policy)))
    assert e.value.field == f"agent_policy.{field}"


def test_policy_keys_are_the_agents_own() -> None:
    """A typo never silently widens or narrows access: unknown keys are refused."""
    with pytest.raises(ValueError, match="read_paths"):
        ci.AgentPolicy(read_paths=["/etc"])  # type: ignore[call-arg]
    assert set(ci.agent_config_data(ci.AgentPolicy())["security"]) == set(
        agent_config.DEFAULTS["security"]
    )


def test_a_clones_seed_keeps_the_policy() -> None:
    s = spec(install_agent=False, agent_policy=ci.AgentPolicy(**POLICY))
    seed = ci.build_seed_iso(
        {"meta-data": ci.meta_data(s, "i-1").encode(), "user-data": ci.user_data(s).encode()}
    )
    new = ci.read_seed_files(ci.reseed_bytes(seed, "web2", Settings()))
    cfg = yaml.safe_load(new["user-data"])
    assert cfg["hostname"] == "web2"
    assert cfg["write_files"] == yaml.safe_load(ci.user_data(s))["write_files"]


@pytest.mark.skipif(
    not (shutil.which("dpkg") and shutil.which("dpkg-deb")), reason="needs dpkg and dpkg-deb"
)
def test_dpkg_keeps_the_written_config(tmp_path: Path) -> None:
    """The reason for DPKG_KEEP_CONFIG: the agent's .deb ships config.json as a conffile;
    dpkg meets the file cloud-init wrote and, with no terminal, fails at its prompt.
    With the setting it keeps ours (and leaves its own as .dpkg-dist)."""
    pkg, root = tmp_path / "pkg", tmp_path / "root"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: kvmm-t-conf\nVersion: 1\nArchitecture: all\n"
        "Maintainer: t <t@example.org>\nDescription: t\n"
    )
    (pkg / "DEBIAN" / "conffiles").write_text("/etc/kvmm-t/config.json\n")
    (pkg / "etc" / "kvmm-t").mkdir(parents=True)
    (pkg / "etc" / "kvmm-t" / "config.json").write_text('{"packaged": true}\n')
    deb = tmp_path / "t.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(deb)], check=True, capture_output=True)

    def install(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc/kvmm-t"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").write_text("")
        (root / "etc/kvmm-t/config.json").write_text('{"ours": true}\n')
        return subprocess.run(
            ["dpkg", f"--root={root}", "--force-not-root", "--force-script-chrootless", "-i",
             str(deb)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env={**os.environ, **env},
        )  # fmt: skip

    failed = install({})
    assert failed.returncode != 0 and "conffile prompt" in failed.stderr
    shutil.rmtree(root)
    key, value = ci.DPKG_KEEP_CONFIG.split("=", 1)
    kept = install({key: value})
    assert kept.returncode == 0, kept.stderr
    assert (root / "etc/kvmm-t/config.json").read_text() == '{"ours": true}\n'
