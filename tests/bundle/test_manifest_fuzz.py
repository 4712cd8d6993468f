"""Fuzz: any manifest.json is a valid Manifest or one BundleError, and a valid one holds only
numbers the frame path can compute with."""

import json
import math

import pytest

pytest.importorskip("hypothesis", reason="the fuzz suite needs the [dev] extra")
from helpers.fuzz import edited, hostile_numbers, json_values, mutated, nested
from hypothesis import given
from hypothesis import strategies as st

from retrofit_agent.bundle.manifest import MANIFEST, load_bundle, parse_manifest
from retrofit_agent.errors import BundleError

VALID = {
    "schema_version": 2,
    "name": "fuzzed",
    "teacher": {"kind": "none", "note": "random"},
    "student": {"architecture": "x", "params": None, "backbone": None, "head_hidden": None},
    "size": 64,
    "resize": {"shortest_side": 64, "interpolation": "bicubic"},
    "mean": [0.48, 0.46, 0.41],
    "std": [0.27, 0.26, 0.28],
    "embedding_dim": 32,
    "logit_scale": 100.0,
    "quantization": {"mode": "qdq_u8s8", "per_channel": True, "calibration": "8 tensors"},
    "metrics": None,
    "created_utc": "2026-01-01T00:00:00Z",
    "files": {"student.int8.onnx": "0" * 64, "labels.npz": "1" * 64},
}
WHERE = "fuzz/manifest.json"


def parses_or_refuses(raw: bytes) -> None:
    try:
        manifest = parse_manifest(raw, WHERE)
    except BundleError as exc:
        message = str(exc)
        assert message.startswith(f"{WHERE}: ") and "\n" not in message
        return
    numbers = [*manifest.mean, *manifest.std, manifest.logit_scale]
    assert all(math.isfinite(x) for x in numbers)
    assert all(0 <= m <= 1 for m in manifest.mean) and min(manifest.std) > 0
    assert manifest.size <= manifest.resize.shortest_side <= 4 * manifest.size


def test_the_unfuzzed_manifest_parses():
    parse_manifest(json.dumps(VALID).encode(), WHERE)


@given(edited(VALID))
def test_edited_manifests(document):
    parses_or_refuses(json.dumps(document).encode())


NUMBERS = [("mean", 0), ("mean", 2), ("std", 1), ("logit_scale",), ("size",), ("embedding_dim",),
           ("resize", "shortest_side")]  # fmt: skip


@given(st.lists(st.tuples(st.sampled_from(NUMBERS), hostile_numbers), min_size=1, max_size=3))
def test_hostile_numbers(changes):
    document = json.loads(json.dumps(VALID))
    for path, value in changes:
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    parses_or_refuses(json.dumps(document).encode())


@given(st.integers(1, 200_000))
def test_nesting_of_any_depth(depth):
    parses_or_refuses(nested(depth).encode())


@given(st.one_of(json_values, st.dictionaries(st.sampled_from(sorted(VALID)), json_values)))
def test_any_json_document(document):
    parses_or_refuses(json.dumps(document).encode())


@given(mutated(json.dumps(VALID).encode()))
def test_damaged_bytes(raw):
    parses_or_refuses(raw)


@given(st.binary(max_size=200))
def test_any_bytes_as_the_manifest_of_a_bundle(tmp_path_factory, raw):
    bundle = tmp_path_factory.mktemp("bundle")
    (bundle / MANIFEST).write_bytes(raw)
    with pytest.raises(BundleError):  # never a bundle: its files are not there
        load_bundle(bundle)
