import pytest

torch = pytest.importorskip("torch", reason="needs the [distill] extra")

import numpy as np  # noqa: E402

from retrofit_agent.common.files import sha256_file  # noqa: E402
from retrofit_agent.distill.config import TeacherConfig  # noqa: E402
from retrofit_agent.distill.student import Student  # noqa: E402
from retrofit_agent.distill.teacher import Teacher  # noqa: E402
from retrofit_agent.errors import ConfigError  # noqa: E402


def test_teacher_from_local_config_and_checkpoint(tiny_teacher):
    teacher = Teacher(tiny_teacher)
    assert teacher.dim == 32 and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    images = teacher.embed_images(
        [np.zeros((90, 160, 3), np.uint8), np.full((50, 50, 3), 200, np.uint8)]
    )
    texts = teacher.embed_texts(["a car on a highway", "a road at night", "rain"])
    assert images.shape == (2, 32) and texts.shape == (3, 32)
    assert torch.allclose(images.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(texts.norm(dim=1), torch.ones(3), atol=1e-5)
    assert teacher.identity.checkpoint_sha256 == sha256_file(tiny_teacher.checkpoint)
    # the same checkpoint loaded twice gives the same embeddings: weights really come from it
    again = Teacher(tiny_teacher).embed_texts(["a car on a highway"])
    assert torch.allclose(again, texts[:1], atol=1e-6)


def test_teacher_bad_input(tiny_teacher, tmp_path):
    missing = tiny_teacher.model_copy(update={"checkpoint": tmp_path / "absent.pt"})
    with pytest.raises(ConfigError, match=r"teacher\.checkpoint: .*absent\.pt: no such file"):
        Teacher(missing)
    with pytest.raises(ConfigError, match="not an open_clip model"):
        Teacher(TeacherConfig(architecture="No-Such-CLIP", pretrained="openai"))
    with pytest.raises(ConfigError, match="cannot load ViT-B-32 weights 'no-such-tag'"):
        Teacher(TeacherConfig(architecture="ViT-B-32", pretrained="no-such-tag"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load"):
        Teacher(tiny_teacher.model_copy(update={"checkpoint": corrupt}))


def test_student_shapes_and_unit_embeddings():
    student = Student("mobilenetv3_small_050", dim=32, hidden=[64, 48], dropout=0.1).eval()
    out = student(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    linears = [m for m in student.head if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [64, 48, 32]


def test_student_backbone_weights_and_bad_names(tmp_path):
    source = Student("mobilenetv3_small_050", dim=8, hidden=[])
    weights = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), weights)
    loaded = Student("mobilenetv3_small_050", dim=8, hidden=[], backbone_weights=weights)
    for a, b in zip(source.backbone.parameters(), loaded.backbone.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="not a timm model name"):
        Student("no_such_net", dim=8)
    with pytest.raises(ConfigError, match=r"backbone_weights: .*backbone\.pt: .*size mismatch"):
        Student("resnet18", dim=8, backbone_weights=weights)
    torch.save({"unrelated.weight": torch.zeros(1)}, weights)
    with pytest.raises(ConfigError, match="backbone tensors missing"):
        Student("mobilenetv3_small_050", dim=8, backbone_weights=weights)
