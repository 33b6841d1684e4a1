"""The create form's OS detection asks only about volumes the user may use (ownership,
issue 14): another operator's volume is refused by name, before libvirt reads a byte."""

from __future__ import annotations

from typing import Any

PREFIX = "kvmm-t-isoown-"


def test_another_operators_volume_is_not_probed(web_as: Any) -> None:
    bob, alice = web_as("operator"), web_as("operator")
    vol = f"{PREFIX}bob.iso"
    r = bob.post(
        "/api/hosts/local/pools/default-pool/volumes",
        json={"name": vol, "capacity": "1M", "format": "raw"},
        headers={"X-CSRF-Token": bob.csrf},
    )
    assert r.status_code == 201, r.text
    try:
        r = alice.get("/vms/new/iso-os", params={"host": "local", "iso": f"default-pool/{vol}"})
        assert r.status_code == 200, r.text
        assert f"No OS detected from {vol}" in r.text
        assert f"belongs to &#39;{bob.username}&#39;" in r.text, r.text
        # Its owner gets past the ownership check to libvirt (whose test driver has no
        # download: said as what the host cannot do).
        r = bob.get("/vms/new/iso-os", params={"host": "local", "iso": f"default-pool/{vol}"})
        assert f"No OS detected from {vol}" in r.text, r.text
        assert "host &#39;local&#39; cannot download volumes" in r.text, r.text
    finally:
        bob.delete(
            f"/api/hosts/local/pools/default-pool/volumes/{vol}", headers={"X-CSRF-Token": bob.csrf}
        )
