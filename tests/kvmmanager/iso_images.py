"""Small ISO 9660 images made with pycdlib for tests of OS detection: the ids that
osinfo-db's install media match on are chosen by the test."""

from __future__ import annotations

import io

import pycdlib

# osinfo-db's Debian 11 netinst medium: <volume-id>Debian 11.\d+.\d+ amd64 n</volume-id>
DEBIAN_NETINST = "Debian 11.5.0 amd64 n"


def make_iso(volume_id: str, publisher: str = "KVMM", application: str = "KVMM TEST") -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=3,
        vol_ident=volume_id,
        sys_ident="LINUX",
        pub_ident_str=publisher,
        app_ident_str=application,
    )
    iso.add_fp(io.BytesIO(b"kvmm\n"), 5, "/README.;1")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
