"""The agent's JSON codec (built on `_json`) answers exactly as `json` does."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.kvmmanager_agent.agentproc import Interpreter, interpreters

from kvmmanager_agent import jsonwire

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@given(values)
@settings(max_examples=500)
def test_dumps_is_compact_ascii_json_and_round_trips(value: Any) -> None:
    try:
        expected = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # Infinity is not JSON (RFC 8259): refused, never written.
        with pytest.raises(ValueError):
            jsonwire.dumps(value)
        return
    text = jsonwire.dumps(value)
    assert text == expected
    assert _same(jsonwire.loads(text), value)


@pytest.mark.parametrize("value", [math.nan, math.inf, [1, {"a": -math.inf}]])
def test_dumps_refuses_non_finite_numbers(value: Any) -> None:
    with pytest.raises(ValueError):
        jsonwire.dumps(value)


BAD_LINES = ['{"a":"x', '"\\ud800', "{'a':1}", '{"a":"\x01"}', "[" * 100_000]
PROBE_SCRIPT = f"""
BAD_LINES = {BAD_LINES!r}
import sys
sys.path.insert(0, sys.argv[1])
from kvmmanager_agent import jsonwire
for text in BAD_LINES:
    try:
        jsonwire.loads(text)
    except (ValueError, RecursionError) as exc:
        print("RecursionError" if isinstance(exc, RecursionError) else "ValueError")
assert "json" not in sys.modules or "json.decoder" in sys.modules
"""


@pytest.mark.parametrize("python", interpreters(), ids=[p.label for p in interpreters()])
def test_loads_raises_only_value_errors_without_json_imported(python: Interpreter) -> None:
    # -S: no site, so nothing imported `json` before the agent did (3.10/3.11's scanner
    # then failed with a SystemError that killed the agent).
    src = str(Path(jsonwire.__file__).resolve().parents[1])
    out = subprocess.run(
        [python.path, "-I", "-S", "-c", PROBE_SCRIPT, src],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ValueError"] * 4 + ["RecursionError"], out.stdout


@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
@settings(max_examples=1000)
def test_loads_accepts_and_refuses_what_json_does(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsonwire.loads(text)
        return
    assert _same(jsonwire.loads(text), expected)


def test_loads_edges() -> None:
    assert jsonwire.loads(' \n{"a": [1, 2.5, "x"]}\r\n') == {"a": [1, 2.5, "x"]}
    assert math.isnan(jsonwire.loads("NaN"))
    assert jsonwire.loads("-Infinity") == -math.inf


@pytest.mark.parametrize("text", ["", "   ", "{} {}", '{"a":1', "[1,]", '"\x01"', "01"])
def test_loads_refuses_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        jsonwire.loads(text)


def test_deep_nesting_is_a_recursion_error_as_with_json() -> None:
    with pytest.raises(RecursionError):
        jsonwire.loads("[" * 200_000 + "]" * 200_000)


def test_the_fallback_is_the_same_codec() -> None:
    loads, dumps = jsonwire._fallback()
    value = {"k": ["é", 1, None, {"n": -2.5}]}
    assert dumps(value) == jsonwire.dumps(value)
    assert loads(jsonwire.dumps(value)) == value


def test_unserializable_values_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="set"):
        jsonwire.dumps({"a": {1, 2}})
