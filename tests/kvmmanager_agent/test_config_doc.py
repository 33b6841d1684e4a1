"""docs/operations.md's table of the agent's config keys says what the agent does: every
key, its default, and the range the loader enforces (checked against config.py, and the
range's edges against the loader itself)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmmanager_agent import config

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| `(.*?)` \| (.*) \|$")


def _flat(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _flat(value, prefix + key + ".")
        else:
            yield prefix + key, value


def _table() -> dict[str, tuple[Any, str]]:
    text = DOC.read_text()
    section = text[text.index("### The agent's config file") :]
    section = section[: section.index("\n### ", 1)]
    return {
        m.group(1): (json.loads(m.group(2)), m.group(3))
        for line in section.splitlines()
        if (m := ROW.match(line))
    }


def test_every_key_and_default_is_documented() -> None:
    documented = {key: default for key, (default, _) in _table().items()}
    assert documented == dict(_flat(config.DEFAULTS))


@pytest.mark.parametrize("key", sorted(config.RANGES))
def test_each_documented_range_is_the_loaders(key: str) -> None:
    low, high, whole = config.RANGES[key]
    accepted = _table()[key][1]
    big = "1e9" if high == config.BIG else str(high)
    assert f"{low:g} to {big}" in accepted, accepted
    assert accepted.startswith("whole number") == whole

    def load(value: float) -> None:
        head, _, tail = key.rpartition(".")
        config.Config({head: {tail: value}} if head else {tail: value})

    load(low)
    load(high)
    for outside in (low - 1 if whole else low - 0.05, high + 1):
        with pytest.raises(config.ConfigError, match=re.escape(key)):
            load(outside)
