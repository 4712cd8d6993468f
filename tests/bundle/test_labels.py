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
