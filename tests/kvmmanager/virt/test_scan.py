"""virt.scan on libvirt's test driver: domains vanishing mid-walk are skipped."""

from __future__ import annotations

import libvirt

from kvmmanager.virt import scan
from kvmmanager.virt.xml.domain import Domain

NAMES = ("kvmm-t-scan-a", "kvmm-t-scan-b")


def _domain_xml(name: str) -> str:
    dom = Domain(type="test", name=name, memory=16 * 1024)
    dom.os.os_type = "hvm"
    return dom.to_xml()


def test_definitions_skip_a_domain_that_vanishes_mid_walk() -> None:
    conn = libvirt.open("test:///default")
    try:
        transient = {n: conn.createXML(_domain_xml(n), 0) for n in NAMES}
        walk = scan.definitions(conn)
        first, _ = next(walk)
        gone = {n for n in NAMES if n != first.name()}
        for n in gone:
            transient.pop(n).destroy()  # a transient domain disappears when destroyed
        rest = [dom.name() for dom, _ in walk]
        assert not gone & set(rest)
        assert "test" in [*rest, first.name()]
    finally:
        for dom in transient.values():
            dom.destroy()
        conn.close()


def test_definitions_give_live_and_persistent_xml() -> None:
    conn = libvirt.open("test:///default")
    try:
        by_name: dict[str, list[str]] = {}
        for dom, xml in scan.definitions(conn):
            by_name.setdefault(dom.name(), []).append(xml)
        # The test driver's stock domain runs and is defined: both definitions.
        assert len(by_name["test"]) == 2
        assert all("<name>test</name>" in x for x in by_name["test"])
    finally:
        conn.close()
