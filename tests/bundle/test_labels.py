import io
import os
import zipfile

import numpy as np
import pytest

from retrofit_agent.bundle.labels import load_label_bank, save_label_bank
from retrofit_agent.errors import BundleError

pytestmark = pytest.mark.device

KINDS = {"weather": "exclusive", "users": "multi"}


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def bank_file(tmp_path, **change):
    fields = {
        "names": ["clear", "rain", "car", "pedestrian"],
        "groups": ["weather", "weather", "users", "users"],
        "embeddings": np.stack(
            [unit([1, 0, 0, 0]), unit([0, 1, 0, 0]), unit([0, 0, 1, 0]), unit([0, 0, 0, 1])]
        ),
        "thresholds": [0.6, 0.6, 0.3, 0.3],
        "group_kinds": KINDS,
    }
    fields.update(change)
    path = tmp_path / "labels.npz"
    save_label_bank(path, **fields)
    return path


def test_exclusive_softmax_and_multi_thresholds(tmp_path):
    bank = load_label_bank(bank_file(tmp_path))
    embedding = unit([0.9, 0.1, 0.5, 0.1]).astype(np.float32)
    scored = bank.score(embedding, logit_scale=10.0)

    sims = bank.embeddings @ embedding
    probs = np.exp(10 * sims[:2]) / np.exp(10 * sims[:2]).sum()
    assert scored.top["weather"].label == "clear"
    assert scored.top["weather"].score == pytest.approx(probs[0], rel=1e-5)
    assert scored.top["users"].label == "car"
    assert scored.top["users"].score == pytest.approx(sims[2], rel=1e-5)
    passed = {(s.group, s.label) for s in scored.labels}
    # clear wins the exclusive group above 0.6; car's cosine 0.48 passes 0.3, pedestrian's 0.096 not
    assert passed == {("weather", "clear"), ("users", "car")}


def test_exclusive_winner_below_threshold_is_not_a_label(tmp_path):
    bank = load_label_bank(bank_file(tmp_path))
    scored = bank.score(unit([1, 1, 0, 0]).astype(np.float32), logit_scale=10.0)  # a 50/50 tie
    assert scored.top["weather"].score == pytest.approx(0.5, rel=1e-5)
    assert not [s for s in scored.labels if s.group == "weather"]


def test_several_multi_labels_can_pass(tmp_path):
    bank = load_label_bank(bank_file(tmp_path))
    scored = bank.score(unit([0, 0, 1, 1]).astype(np.float32), logit_scale=10.0)
    assert {s.label for s in scored.labels if s.group == "users"} == {"car", "pedestrian"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embeddings": np.ones((4, 4))}, "norm"),
        ({"thresholds": [0.1, 0.2, 0.3]}, r"thresholds has shape \(3,\), expected \(4,\)"),
        ({"thresholds": [0.1, np.nan, 0.3, 0.3]}, "finite"),
        ({"group_kinds": {"weather": "exclusive", "users": "several"}}, "kind 'several'"),
        ({"group_kinds": {"weather": "exclusive"}}, "undeclared groups users"),
    ],
)
def test_inconsistent_banks_are_refused(tmp_path, change, message):
    with pytest.raises(BundleError, match=message):
        load_label_bank(bank_file(tmp_path, **change))


def test_missing_array_and_garbage_file(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, names=np.array(["a"]))
    with pytest.raises(BundleError, match="missing arrays groups"):
        load_label_bank(path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(BundleError, match="garbage.npz: not a readable label bank"):
        load_label_bank(garbage)


def raw_bank(tmp_path, **arrays):
    """labels.npz with the valid bank's arrays, some replaced (or removed: None) as given."""
    fields = dict(np.load(bank_file(tmp_path)))
    fields.update(arrays)
    path = tmp_path / "raw.npz"
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})
    return path


NAN_ROW = np.stack([unit([1, 0, 0, 0]), [np.nan] * 4, unit([0, 0, 1, 0]), unit([0, 0, 0, 1])])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        # NaN never compares greater than the norm tolerance: it passed the norm check
        ({"embeddings": NAN_ROW}, "embedding of rain is not finite"),
        ({"embeddings": np.eye(4, dtype=np.int64)}, "embeddings must hold floating-point"),
        ({"embeddings": np.eye(4).astype(str)}, "embeddings must hold floating-point"),
        ({"embeddings": np.eye(4, dtype=complex)}, "embeddings must hold floating-point"),
        ({"thresholds": np.array(["0.6"] * 4)}, "thresholds must hold floating-point"),
        ({"names": np.arange(4)}, "names must hold strings, not int64"),
        ({"group_names": np.array("weather")}, r"group_names must be a list, got shape \(\)"),
        ({"group_kinds": np.array("multi")}, r"group_kinds must be a list, got shape \(\)"),
        ({"thresholds": np.float32(0.5)}, r"thresholds has shape \(\), expected \(4,\)"),
        ({"embeddings": np.zeros((0, 4), np.float32)}, r"embeddings must be \[labels, dim\]"),
        (
            {
                "group_names": np.array(["weather", "users", "empty"]),
                "group_kinds": np.array(["exclusive", "multi", "multi"]),
            },
            "group empty has no labels",  # passed, then `argmax of an empty sequence`
        ),
        (
            {
                "group_names": np.array(["weather", "users", "users"]),
                "group_kinds": np.array(["exclusive", "multi", "multi"]),
            },
            "group_names has duplicates",
        ),
        ({"groups": None}, "missing arrays groups"),
    ],
)
def test_banks_with_impossible_values_are_refused(tmp_path, arrays, message):
    with pytest.raises(BundleError, match=r"raw\.npz: " + message):
        load_label_bank(raw_bank(tmp_path, **arrays))


def test_python_objects_are_never_loaded_and_numpy_advice_never_shown(tmp_path):
    path = raw_bank(tmp_path, names=np.array(["clear", "rain", "car", "pedestrian"], object))
    with pytest.raises(BundleError) as refused:
        load_label_bank(path)
    assert str(refused.value) == f"{path}: names: holds Python objects, which are never loaded"
    pickled = tmp_path / "bank.npz"  # not an archive at all: NumPy would try to unpickle it
    pickled.write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(BundleError) as refused:
        load_label_bank(pickled)
    assert str(refused.value) == f"{pickled}: not a readable label bank (not an .npz archive)"


def test_a_header_that_promises_more_data_than_the_archive_holds(tmp_path):
    """Read as declared, the array would be allocated before its data turned out missing."""
    path = raw_bank(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4, np.float32))
    header["shape"] = (10**12,)
    promising = io.BytesIO()
    np.lib.format.write_array_header_1_0(promising, header)
    members["thresholds.npy"] = promising.getvalue() + b"\0" * 16
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(BundleError, match="thresholds: its header promises more data"):
        load_label_bank(path)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", r"not a readable label bank \(not an \.npz archive\)"),  # was EOFError
        ("npy", r"not a readable label bank \(not an \.npz"),  # a bare array: was a TypeError
        ("directory", "label bank is a directory, not a file"),
        ("fifo", r"label bank is a named pipe \(FIFO\), not a file"),  # would block
        ("link to /dev/zero", "label bank is a character device, not a file"),
    ],
)
def test_a_bank_file_that_is_no_archive_is_refused(tmp_path, kind, message):
    path = tmp_path / "labels.npz"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        np.save(tmp_path / "labels.npy", np.eye(4))
        (tmp_path / "labels.npy").rename(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(BundleError, match=r"labels\.npz: " + message):
        load_label_bank(path)
