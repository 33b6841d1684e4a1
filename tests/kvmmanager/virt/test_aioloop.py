"""libvirt's event loop outlives the application loops that use it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid

import libvirt
from lxml import etree

from kvmmanager.virt.aioloop import ensure_event_loop

URI = "test:///default"


def _domain_xml(name: str) -> str:
    dom = etree.Element("domain", type="test")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory").text = "65536"
    etree.SubElement(etree.SubElement(dom, "os"), "type").text = "hvm"
    return etree.tostring(dom, encoding="unicode")


def test_events_keep_coming_after_the_loop_that_subscribed_has_closed() -> None:
    # The test driver arms its flush timer only when its queue goes from empty to one
    # event. With libvirt's loop bound to an application loop, the "fire now" of an
    # event raised after that loop closed was dropped, and every later event of the
    # driver stayed queued for the life of the process.
    name = f"kvmm-t-aioloop-{uuid.uuid4().hex[:8]}"
    seen: list[int] = []
    arrived = threading.Condition()

    def on_lifecycle(_c: object, dom: libvirt.virDomain, event: int, *_: object) -> None:
        if dom.name() == name:
            with arrived:
                seen.append(event)
                arrived.notify_all()

    async def subscribe() -> tuple[libvirt.virConnect, int]:
        ensure_event_loop()
        conn = libvirt.open(URI)
        return conn, conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None
        )

    watcher, cb_id = asyncio.run(subscribe())  # that loop is closed from here on
    actor = libvirt.open(URI)
    try:
        dom = actor.defineXML(_domain_xml(name))
        dom.create()
        with arrived:
            assert arrived.wait_for(lambda: libvirt.VIR_DOMAIN_EVENT_STARTED in seen, timeout=30), (
                f"events seen: {seen}"
            )
        assert seen[0] == libvirt.VIR_DOMAIN_EVENT_DEFINED
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            actor.lookupByName(name).destroy()
        with contextlib.suppress(libvirt.libvirtError):
            actor.lookupByName(name).undefine()
        watcher.domainEventDeregisterAny(cb_id)
        watcher.close()
        actor.close()
