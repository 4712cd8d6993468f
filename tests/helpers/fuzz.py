"""The fuzz suite's shared parts: its hypothesis profiles and the strategies the loaders share.

Every loader test states one property: whatever the input, the loader returns a valid value or
raises the agent's own one-line error (never a traceback of another kind). Profiles:
- `ci` (the default): derandomized, so `.ci/run` runs the same bounded set of examples in the
  same time on every run (the whole fuzz suite well under 2 minutes on 2 cores);
- `deep` (RETROFIT_FUZZ=deep): 10x the examples, random, for a hunt on a workstation.
Importing this module loads the profile; hypothesis itself is a dev dependency (absent on the
camera, where the fuzz modules skip).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("deep", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("RETROFIT_FUZZ", "ci"))

# JSON and TOML scalars as a hostile writer would choose them: NaN and Infinity, integers
# past 64 bits, empty and odd strings
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
# numbers at the edges: what a NaN-writing or overflowing tool puts where a number belongs
hostile_numbers = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.0, -0.0, 5e-324, 1e300, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**40), max_value=2**40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few bytes flipped, cut short, or with bytes spliced in."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
    return bytes(data)


@st.composite
def edited(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """`document` (nested dicts) with a few values replaced by hostile ones, keys removed or
    unknown keys added, at any depth."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        node = document
        while isinstance(node, dict) and node and draw(st.booleans()):
            child = node[draw(st.sampled_from(sorted(node)))]
            if not isinstance(child, dict):
                break
            node = child
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "add" or not node:
            node[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
        elif action == "remove":
            del node[draw(st.sampled_from(sorted(node)))]
        else:
            node[draw(st.sampled_from(sorted(node)))] = draw(json_values)
    return document


def nested(depth: int) -> str:
    """Arrays inside arrays, `depth` deep: recursive parsers run out of stack."""
    return "[" * depth + "]" * depth


def toml_value(value: Any) -> str:
    """`value` as a TOML literal (strings through JSON's escapes, which TOML shares)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(str(value))


def toml_document(document: dict[str, Any]) -> str:
    """A TOML file: top-level values first, then one [table] per dict (None is left out)."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in document.items()
             if v is not None and not isinstance(v, dict)]  # fmt: skip
    for key, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [
                f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items() if v is not None
            ]
    return "\n".join(lines) + "\n"
