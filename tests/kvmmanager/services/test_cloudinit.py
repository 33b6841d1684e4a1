"""Cloud-init seeds: user-data that cloud-init's own schema accepts, refusals naming the
field, a NoCloud ISO (label cidata, long names) carrying the agent installer. The
provisioning service needs volume uploads (the test driver has none): see
test_cloudinit_libvirtd.py."""

from __future__ import annotations

import base64
import io
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services import cloudinit as ci

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
