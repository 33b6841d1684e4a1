"""VM names (services/vms/spec.py)."""

from __future__ import annotations

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.vms.spec import validate_name


def test_the_probe_guests_prefix_is_reserved_for_the_manager() -> None:
    """A user VM named like the accelerator probe's guest would be hidden from the
    inventory (and could be swept as an abandoned probe): the name is refused, naming the
    field and the prefix."""
    with pytest.raises(InvalidInput) as info:
        validate_name("kvmm-accel-probe-mine-0a1b2c", "new_name")
    assert info.value.field == "new_name"
    assert "'kvmm-accel-probe-'" in info.value.message and "reserved" in info.value.message
    assert validate_name("kvmm-accel-probes-are-fine") == "kvmm-accel-probes-are-fine"
