"""checkpoint.pt holds the student spec as plain data, validated when the checkpoint is read."""

import pytest

torch = pytest.importorskip("torch", reason="needs the [distill] extra")

from retrofit_agent.bundle.sections import OpenClipTeacher  # noqa: E402
from retrofit_agent.distill.spec import StudentSpec  # noqa: E402
from retrofit_agent.distill.train import load_checkpoint  # noqa: E402
from retrofit_agent.errors import ConfigError  # noqa: E402

# the spec as checkpoints stored it before it was a model (train.student_spec's dict)
OLD_SPEC = {
    "backbone": "mobilenetv3_small_050",
    "dim": 32,
    "hidden": [64],
    "dropout": 0.1,
    "image_size": 64,
    "shortest_side": 64,
    "interpolation": "bicubic",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "teacher": {
        "kind": "open_clip",
        "architecture": "tiny-clip-test",
        "checkpoint_sha256": "0" * 64,
        "config_json_sha256": "1" * 64,
    },
    "teacher_logit_scale": 14.3,
}


def save(path, spec):
    state = {
        "step": 3,
        "spec": spec,
        "student": {},
        "optimizer": {},
        "rng": torch.get_rng_state(),
        "cuda_rng": None,
        "config": {},
    }
    torch.save(state, path)
    return path


def test_a_checkpoint_of_the_old_dict_spec_loads_typed(tmp_path):
    checkpoint = load_checkpoint(save(tmp_path / "checkpoint.pt", OLD_SPEC))
    assert checkpoint.step == 3 and isinstance(checkpoint.spec, StudentSpec)
    assert isinstance(checkpoint.spec.teacher, OpenClipTeacher)
    assert checkpoint.spec.model_dump(mode="json", exclude_none=True) == OLD_SPEC
    assert checkpoint.spec.preprocessor().spec[:3] == (64, 64, "bicubic")


def test_a_spec_missing_a_key_names_the_file_and_the_key(tmp_path):
    spec = {k: v for k, v in OLD_SPEC.items() if k != "dim"}
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: spec: dim: Field required"):
        load_checkpoint(save(tmp_path / "checkpoint.pt", spec))
