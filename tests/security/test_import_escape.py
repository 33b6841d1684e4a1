"""An operator must not define VMs over host resources through an import (issue 14).

`POST /api/hosts/{h}/imports` (and bundle imports) kept whatever the XML said: a disk on
any host file or block device, a `<filesystem>` passthrough of `/`, `<qemu:commandline>`,
a host PCI device, a chardev writing a host file, a kernel read from anywhere. Each of
those is imported here as an operator against the real libvirtd and must be refused with
a message naming the element, leaving no domain behind; the same XML is accepted from an
admin, and a VM the manager built itself (exported, deleted, imported again) still
imports for an operator, who then owns it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from fastapi.testclient import TestClient
from lxml import etree
from tests.libvirtd_pools import LIBVIRTD_URI, DirPool, libvirtd_dir_pool, qemu_dir

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.libvirtd

PREFIX = "kvmm-t-sechost-imp-"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = LIBVIRTD_URI
    return settings


def _drop_domains() -> None:
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _domains() -> set[str]:
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        return {d.name() for d in conn.listAllDomains() if d.name().startswith(PREFIX)}


@pytest.fixture
def connected(client: TestClient) -> Iterator[TestClient]:
    host = client.app.state.manager.registry.get("local")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    try:
        yield client
    finally:
        _drop_domains()


@pytest.fixture
def operator(connected: TestClient, role_client: Callable[[str], TestClient]) -> TestClient:
    return role_client("operator")


@pytest.fixture
def pool() -> Iterator[DirPool]:
    with libvirtd_dir_pool("kvmm-t-sechost-imp-") as made:
        yield made


@pytest.fixture
def host_file() -> Iterator[Path]:
    where = qemu_dir("kvmm-t-sechost-host-")
    path = where / "secret"
    path.write_bytes(b"root-only\n")
    path.chmod(0o600)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        where.rmdir()


# The attack fragments below are raw XML text, as an attacker sends it; the domain
# around them is built as a tree. Their `qemu:` prefix needs the namespace in scope.
_FRAGMENT_OPEN = "<fragment xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"


def _append(parent: etree._Element, fragment: str) -> None:
    if fragment:
        parent.extend(list(etree.fromstring(_FRAGMENT_OPEN + fragment + "</fragment>")))


def domain_xml(name: str, devices: str = "", os_extra: str = "", top: str = "") -> str:
    root = etree.Element("domain", type="qemu", nsmap={"qemu": QEMU_NS})
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "memory", unit="MiB").text = "64"
    etree.SubElement(root, "vcpu").text = "1"
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    _append(os_el, os_extra)
    _append(etree.SubElement(root, "devices"), devices)
    _append(root, top)
    return etree.tostring(root, encoding="unicode")


# (case id, parts of the XML, the element the refusal must name). `{host}` is a root-only
# file outside every pool.
ESCAPES = [
    ("file-disk-on-a-host-path",
     {"devices": "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                 "<source file='{host}'/><target dev='vda' bus='virtio'/></disk>"},
     "<source>"),
    ("block-device",
     {"devices": "<disk type='block' device='disk'><source dev='/dev/sda'/>"
                 "<target dev='vda' bus='virtio'/></disk>"},
     "<disk>"),
    ("filesystem-passthrough-of-root",
     {"devices": "<filesystem type='mount' accessmode='passthrough'><source dir='/'/>"
                 "<target dir='hostroot'/></filesystem>"},
     "<filesystem>"),
    ("qemu-commandline",
     {"top": "<qemu:commandline><qemu:arg value='-fw_cfg'/>"
             "<qemu:arg value='name=opt/x,file={host}'/></qemu:commandline>"},
     "<qemu:commandline>"),
    ("host-pci-device",
     {"devices": "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
                 "<address domain='0' bus='0' slot='1' function='0'/></source></hostdev>"},
     "<hostdev>"),
    ("serial-writing-a-host-file",
     {"devices": "<serial type='file'><source path='{host}'/><target port='0'/></serial>"},
     "<serial>"),
    ("chardev-log-file",
     {"devices": "<serial type='pty'><log file='{host}'/><target port='0'/></serial>"},
     "<log>"),
    ("unix-channel-at-a-host-path",
     {"devices": "<channel type='unix'><source mode='bind' path='/run/kvmm-t-x.sock'/>"
                 "<target type='virtio' name='org.example.x'/></channel>"},
     "<channel>"),
    ("direct-nic",
     {"devices": "<interface type='direct'><source dev='lo' mode='bridge'/></interface>"},
     "<interface>"),
    ("ethernet-nic-with-script",
     {"devices": "<interface type='ethernet'><script path='/bin/true'/></interface>"},
     "<interface>"),
    ("kernel-from-a-host-path",
     {"os_extra": "<kernel>{host}</kernel>"},
     "<kernel>"),
    ("firmware-from-a-host-path",
     {"os_extra": "<loader readonly='yes' type='rom'>{host}</loader>"},
     "<loader>"),
    ("static-root-security-label",
     {"top": "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"},
     "<seclabel>"),
    ("fw-cfg-file",
     {"top": "<sysinfo type='fwcfg'><entry name='opt/x' file='{host}'/></sysinfo>"},
     "<sysinfo>"),
    ("nic-option-rom-from-a-host-file",
     {"devices": "<interface type='network'><source network='default'/>"
                 "<rom file='{host}'/></interface>"},
     "<rom>"),
    ("evdev-passthrough",
     {"devices": "<input type='evdev'><source dev='/dev/input/event0'/></input>"},
     "<input>"),
]  # fmt: skip


def _xml(parts: dict[str, str], host_file: Path) -> str:
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    return domain_xml(name, **{k: v.format(host=host_file) for k, v in parts.items()})


@pytest.mark.parametrize(("case", "parts", "element"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_operator_import_over_host_resources_is_refused(
    operator: TestClient, host_file: Path, case: str, parts: dict[str, str], element: str
) -> None:
    r = operator.post("/api/hosts/local/imports", json={"xml": _xml(parts, host_file)})
    assert r.status_code == 422, f"{case}: {r.status_code} {r.text}"
    err = r.json()["error"]
    assert err["field"] == "xml" and element in err["message"], err
    assert _domains() == set()


def test_admin_may_import_host_resources(connected: TestClient, host_file: Path) -> None:
    parts = ESCAPES[0][1]
    r = connected.post("/api/hosts/local/imports", json={"xml": _xml(parts, host_file)})
    assert r.status_code == 201, r.text
    assert r.json()["vm"]["owner"] == "admin"


def test_a_vm_the_manager_built_imports_for_an_operator_who_then_owns_it(
    connected: TestClient, operator: TestClient, pool: DirPool
) -> None:
    """The positive side of the allow-list: everything the builders make (a volume disk,
    the agent channels, VNC, NIC, ...) passes, exported and imported again."""
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    spec = {
        "name": name,
        "memory_mib": 64,
        "disks": [{"pool": pool.name, "size_gib": 0.01}],
        "nics": [{"network": "default"}],
    }
    # The operator's own VM: its disk is theirs to import over (another user's is not:
    # tests/security/test_ownership_volumes.py).
    r = operator.post("/api/hosts/local/vms", json=spec)
    assert r.status_code == 201, r.text
    xml = operator.get(f"/api/hosts/local/vms/{name}/export").json()["xml"]
    assert "org.kvmmanager.agent.0" in xml
    # A file disk that IS a volume of a pool is accepted too.
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        vol = conn.storagePoolLookupByName(pool.name).listAllVolumes(0)[0]
        as_file = xml.replace("type='volume'", "type='file'", 1)
        as_file = as_file.replace(
            f"<source pool='{pool.name}' volume='{vol.name()}'/>", f"<source file='{vol.path()}'/>"
        )
    # Its disk may back one VM at a time (an import refuses to share a writable disk): the
    # source goes, its volume stays, and each imported VM goes before the next import.
    assert operator.delete(f"/api/hosts/local/vms/{name}").status_code == 200
    for text in (xml, as_file):
        r = operator.post("/api/hosts/local/imports", json={"xml": text, "new_identity": True})
        assert r.status_code == 201, r.text
        assert r.json()["vm"]["owner"] == operator.kvmm_username  # type: ignore[attr-defined]
        imported = r.json()["vm"]["name"]
        assert operator.delete(f"/api/hosts/local/vms/{imported}").status_code == 200


def _bundle(path: Path, xml: str) -> None:
    manifest = {
        "format": "kvmm-bundle",
        "version": 1,
        "vm": "x",
        "disks": [],
        "domain_sha256": hashlib.sha256(xml.encode()).hexdigest(),
    }
    with tarfile.open(path, "w:gz") as tar:
        for member, data in (
            ("domain.xml", xml.encode()),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bundle_import_applies_the_same_policy(
    operator: TestClient, pool: DirPool, host_file: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar.gz"
    _bundle(bundle, _xml(ESCAPES[2][1], host_file))  # <filesystem> of /
    r = operator.post(
        "/api/hosts/local/imports/bundle", params={"pool": pool.name}, content=bundle.read_bytes()
    )
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while (job := operator.get(f"/api/jobs/{r.json()['job_id']}").json())["state"] in (
        "pending",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job["state"] == "failed" and "<filesystem>" in job["error"]["message"], job
    assert _domains() == set()


def test_agent_channel_socket_paths_are_left_to_libvirt(operator: TestClient) -> None:
    """An exported VM may carry the socket path libvirt once chose for an agent channel;
    the import drops it (libvirt names a fresh one) instead of binding where it says."""
    planted = "/var/lib/libvirt/qemu/channel/target/kvmm-t-elsewhere/org.qemu.guest_agent.0"
    ch = etree.Element("channel", type="unix")
    etree.SubElement(ch, "source", mode="bind", path=planted)
    etree.SubElement(ch, "target", type="virtio", name="org.qemu.guest_agent.0")
    channel = etree.tostring(ch, encoding="unicode")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = operator.post("/api/hosts/local/imports", json={"xml": domain_xml(name, channel)})
    assert r.status_code == 201, r.text
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "org.qemu.guest_agent.0" in xml and planted not in xml


def test_scsi_lun_passthrough_of_a_pool_volume_is_refused(
    operator: TestClient, pool: DirPool
) -> None:
    """A volume of a pool, but as a `lun` with rawio: SCSI commands reach the host's
    device below it."""
    r = operator.post(
        f"/api/hosts/local/pools/{pool.name}/volumes",
        json={"name": "lun", "capacity": 1 << 20, "format": "raw"},
    )
    assert r.status_code == 201, r.text
    disk = (
        f"<disk type='volume' device='lun' rawio='yes'><source pool='{pool.name}' volume='lun'/>"
        "<target dev='sda' bus='scsi'/></disk>"
    )
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = operator.post("/api/hosts/local/imports", json={"xml": domain_xml(name, disk)})
    assert r.status_code == 422, r.text
    assert "<disk>" in r.json()["error"]["message"]
    assert _domains() == set()
