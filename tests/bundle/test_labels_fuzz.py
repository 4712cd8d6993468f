"""Fuzz: any labels.npz is a LabelBank whose scores are finite for every frame, or one
BundleError."""

import io
import zipfile

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the fuzz suite needs the [dev] extra")
from helpers.fuzz import mutated
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from retrofit_agent.bundle.labels import load_label_bank
from retrofit_agent.errors import BundleError

KEYS = ("names", "groups", "embeddings", "thresholds", "group_names", "group_kinds")
DTYPES = [
    np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int64", "bool", "complex64")
] + [np.dtype("U6"), np.dtype("S3")]


def valid_arrays() -> dict[str, np.ndarray]:
    rows = np.eye(4, 8, dtype=np.float32)
    return {
        "names": np.array(["day", "night", "car", "bus"]),
        "groups": np.array(["time", "time", "users", "users"]),
        "embeddings": rows,
        "thresholds": np.array([0.5, 0.5, 0.2, 0.2], np.float32),
        "group_names": np.array(["time", "users"]),
        "group_kinds": np.array(["exclusive", "multi"]),
    }


any_array = st.one_of(
    st.sampled_from(DTYPES).flatmap(
        lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0))
    ),
    st.builds(lambda: np.array([None, 1], dtype=object)),
)
strings = hnp.arrays(
    np.dtype("U12"),
    st.integers(0, 6),
    elements=st.sampled_from(["", "time", "users", "day", "car", "exclusive", "multi", "x"]),
)
floats = st.integers(0, 6).flatmap(
    lambda n: (
        hnp.arrays(
            np.float32,
            (n, 8),
            elements=st.floats(-2, 2, width=32) | st.sampled_from([np.nan, np.inf]),
        )
        | st.just(np.eye(n, 8, dtype=np.float32))
    )
)


@st.composite
def banks(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """The valid bank with some arrays missing, of another shape or dtype, or plausible but
    inconsistent (strings from the bank's own vocabulary, rows of any values)."""
    arrays = valid_arrays()
    for key in draw(st.sets(st.sampled_from(KEYS), min_size=1, max_size=3)):
        plausible = floats if key == "embeddings" else strings
        choice = draw(st.sampled_from(["remove", "any", "plausible"]))
        if choice == "remove":
            del arrays[key]
        else:
            arrays[key] = draw(any_array if choice == "any" else plausible)
    return arrays


def npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def loads_and_scores_or_refuses(tmp_path, data: bytes) -> None:
    path = tmp_path / "labels.npz"
    path.write_bytes(data)
    try:
        bank = load_label_bank(path)
    except BundleError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    frame = np.random.default_rng(0).normal(size=bank.dim).astype(np.float32)
    for scale in (1e-3, 100.0, 1000.0):
        scored = bank.score(frame / np.linalg.norm(frame), logit_scale=scale)
        assert set(scored.top) == {g.name for g in bank.groups}
        assert all(np.isfinite(s.score) for s in [*scored.labels, *scored.top.values()])


def test_the_unfuzzed_bank_loads(tmp_path):
    assert len(load_label_bank_from(tmp_path, npz(valid_arrays()))) == 4


def load_label_bank_from(tmp_path, data):
    path = tmp_path / "labels.npz"
    path.write_bytes(data)
    return load_label_bank(path)


@given(banks())
def test_banks_of_any_arrays(tmp_path_factory, arrays):
    loads_and_scores_or_refuses(tmp_path_factory.mktemp("bank"), npz(arrays))


@given(mutated(npz(valid_arrays())))
def test_damaged_archives(tmp_path_factory, data):
    loads_and_scores_or_refuses(tmp_path_factory.mktemp("bank"), data)


@given(st.dictionaries(st.sampled_from([f"{k}.npy" for k in KEYS]), st.binary(max_size=64)))
def test_archives_of_any_members(tmp_path_factory, members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    loads_and_scores_or_refuses(tmp_path_factory.mktemp("bank"), buffer.getvalue())
