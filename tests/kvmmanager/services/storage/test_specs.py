"""Sizes a user types for volumes: the limits are said in the units the user typed in."""

from __future__ import annotations

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.storage.specs import MAX_VOLUME_BYTES, check_size


def test_a_size_over_the_limit_names_the_limit_as_a_size_not_raw_bytes() -> None:
    """`--capacity 99999999T` said "must be at most 70368744177664 bytes" although the
    flag takes sizes like 20G (independent try of issue 17)."""
    with pytest.raises(InvalidInput) as caught:
        check_size("99999999T", "capacity")
    assert caught.value.field == "capacity"
    assert "64.0 TiB" in caught.value.message, caught.value.message
    assert str(MAX_VOLUME_BYTES) not in caught.value.message
    assert check_size("64T", "capacity") == MAX_VOLUME_BYTES
