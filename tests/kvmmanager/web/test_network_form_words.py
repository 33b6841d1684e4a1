"""The network form's refusals in the form's words (independent try of issue 15): "dhcp_start
... is after dhcp_end" named the API's fields under fields labelled "DHCP from"/"DHCP to"."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    ("form", "words", "internal"),
    [
        ({"dhcp_start": "10.213.92.100", "dhcp_end": "10.213.92.50"}, "DHCP from", "dhcp_start"),
        ({"dhcp_start": "10.213.92.10"}, "DHCP to", "dhcp_end"),
        ({"address": "192.168.300.1"}, "Host address on the network must be", "address must"),
    ],
)
def test_a_refused_network_form_names_the_fields_by_their_labels(
    web_as: Callable[[str], TestClient], form: dict[str, str], words: str, internal: str
) -> None:
    admin = web_as("admin")
    name = f"kvmm-t-nwords-{uuid.uuid4().hex[:6]}"
    data = {"name": name, "forward": "isolated", "address": "10.213.92.1", "prefix": "24"}
    r = admin.post("/networks/local", data={**data, **form}, headers={"X-CSRF-Token": admin.csrf})
    assert r.status_code == 200, r.text
    shown = " ".join(re.findall(r'role="alert">([^<]*)<', r.text))
    assert words in shown, shown
    assert internal not in shown, shown
    assert shown.count("Host address on the network") <= 1, shown
    assert name not in admin.get("/networks").text  # nothing was made
