"""The label bank from a label set, by the teacher's text tower (prompt ensembling)."""

import pytest

torch = pytest.importorskip("torch", reason="needs the [distill] extra")

import numpy as np  # noqa: E402
from helpers.labelsets import MINI, write  # noqa: E402

from retrofit_agent.bundle.labels import load_label_bank  # noqa: E402
from retrofit_agent.bundle.labelset import load_label_set  # noqa: E402
from retrofit_agent.distill.labelset import build_label_bank  # noqa: E402
from retrofit_agent.distill.teacher import Teacher  # noqa: E402


def test_label_bank_matches_a_direct_teacher_computation(tiny_teacher, tmp_path):
    teacher = Teacher(tiny_teacher)
    label_set = load_label_set(write(tmp_path, MINI))
    build_label_bank(label_set, teacher.embed_texts, tmp_path / "labels.npz")
    bank = load_label_bank(tmp_path / "labels.npz")
    assert bank.names == ["clear", "rain", "car", "truck"] and bank.dim == 32
    assert [(g.name, g.kind) for g in bank.groups] == [("weather", "exclusive"), ("users", "multi")]
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(bank.thresholds, [0, 0, 0.2, 0.3])
    prompts = [
        "a photo of rain.",
        "a photo of a rainy day.",
        "a picture of rain.",
        "a picture of a rainy day.",
    ]
    direct = torch.nn.functional.normalize(teacher.embed_texts(prompts), dim=1).mean(0)
    np.testing.assert_allclose(bank.embeddings[1], (direct / direct.norm()).numpy(), atol=1e-5)
