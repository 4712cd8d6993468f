import pytest

torch = pytest.importorskip("torch", reason="needs the [distill] extra")

import torch.nn.functional as F  # noqa: E402

from retrofit_agent.distill.config import LossConfig, RunConfig  # noqa: E402
from retrofit_agent.distill.losses import (  # noqa: E402
    DistillLoss,
    contrastive_loss,
    crossmodal_loss,
    feature_loss,
)


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_feature_loss_is_zero_for_equal_and_positive_otherwise(kind):
    t = unit(16, 32)
    assert feature_loss(t, t, kind).item() == pytest.approx(0, abs=1e-6)
    assert feature_loss(unit(16, 32, seed=1), t, kind).item() > 0.5


def test_contrastive_loss_is_lowest_when_student_matches_teacher():
    t = unit(16, 32)
    matched = contrastive_loss(t, t, temperature=0.07).item()
    shuffled = contrastive_loss(t[torch.randperm(16)], t, temperature=0.07).item()
    assert matched < 0.1 < shuffled


def test_crossmodal_loss_is_zero_for_equal_and_positive_otherwise():
    t, text = unit(16, 32), unit(10, 32, seed=2)
    assert crossmodal_loss(t, t, text, temperature=0.01).item() == pytest.approx(0, abs=1e-6)
    assert crossmodal_loss(unit(16, 32, seed=3), t, text, temperature=0.01).item() > 0.1


@pytest.mark.parametrize("weights", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0.5, 1)])
def test_weighted_sum_and_gradients_flow(weights):
    feature, contrastive, crossmodal = weights
    config = LossConfig(
        feature=feature, contrastive=contrastive, crossmodal=crossmodal, prompts=["a", "b"]
    )
    loss = DistillLoss(config, unit(10, 32, seed=2), teacher_logit_scale=100.0)
    raw = torch.randn(8, 32, requires_grad=True)
    total, parts = loss(F.normalize(raw, dim=-1), unit(8, 32))
    weight_of = dict(zip(("feature", "contrastive", "crossmodal"), weights, strict=True))
    assert set(parts) == {name for name, w in weight_of.items() if w}
    expected = sum(weight_of[name] * value for name, value in parts.items())
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_config_refuses_nothing_to_learn_and_crossmodal_without_prompts():
    with pytest.raises(ValueError, match="all loss weights are 0"):
        LossConfig(feature=0, contrastive=0, crossmodal=0)
    with pytest.raises(ValueError, match="needs losses.prompts or labels.label_set"):
        RunConfig(losses={"crossmodal": 1.0})
