"""Why the Snapshots tab refreshes when it is opened (web/static/app.js, wireTabs) and on
the VM's own events, but cannot follow every snapshot another tool takes: libvirt offers
no snapshot event to subscribe to (docs/operations.md, "Snapshots taken elsewhere")."""

from __future__ import annotations

import libvirt


def test_libvirt_has_no_snapshot_event() -> None:
    ids = [n for n in dir(libvirt) if n.startswith("VIR_DOMAIN_EVENT_ID_")]
    assert "VIR_DOMAIN_EVENT_ID_LIFECYCLE" in ids and "VIR_DOMAIN_EVENT_ID_METADATA_CHANGE" in ids
    assert not [n for n in ids if "SNAPSHOT" in n], ids
    # What libvirt does say about snapshots are lifecycle details of a revert (and of a
    # running VM paused for an internal snapshot), nothing for a create or delete.
    details = [n for n in dir(libvirt) if n.startswith("VIR_DOMAIN_EVENT_") and "SNAPSHOT" in n]
    assert details and all("FROM_SNAPSHOT" in n for n in details), details
