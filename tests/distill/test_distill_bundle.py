"""export, labels, quantize, eval and `all` on a tiny teacher and student, end to end."""

import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="needs the [distill] extra")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from helpers.distill import tiny_run  # noqa: E402
from helpers.labelsets import MINI  # noqa: E402

from retrofit_agent.bundle.labels import load_label_bank  # noqa: E402
from retrofit_agent.bundle.manifest import load_bundle  # noqa: E402
from retrofit_agent.bundle.sections import OpenClipTeacher  # noqa: E402
from retrofit_agent.distill.config import RunConfig  # noqa: E402
from retrofit_agent.distill.export import onnx_embeddings  # noqa: E402
from retrofit_agent.distill.labelset import ensemble  # noqa: E402
from retrofit_agent.distill.pipeline import run_all, run_eval  # noqa: E402
from retrofit_agent.distill.reports import (  # noqa: E402
    EvalReport,
    ExportReport,
    QuantizeReport,
    read_report,
)
from retrofit_agent.distill.teacher import Teacher  # noqa: E402
from retrofit_agent.errors import ConfigError  # noqa: E402
from retrofit_agent.frames.preprocess import Preprocessor  # noqa: E402


def labelled_folder(root, road_images):
    """Two classes of real road photos: straight roads and curves."""
    for image in sorted(road_images.glob("*.jpg")):
        cls = "curve" if "Curve" in image.name else "straight"
        (root / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / cls / image.name)
    return root


@pytest.fixture(scope="module")
def built(tiny_teacher, real_video, road_images, tmp_path_factory):
    """A run directory taken through `all`, and the messages it printed."""
    root = tmp_path_factory.mktemp("all")
    (root / "labels.toml").write_text(MINI)
    config = tiny_run(
        root / "run",
        tiny_teacher,
        real_video,
        labels={"label_set": root / "labels.toml"},
        eval={
            "folder": labelled_folder(root / "eval", road_images),
            "templates": ["a photo of a {} road."],
        },
        quantize={"latency_runs": 5, "calibration_frames": 16, "fidelity_frames": 16},
        bundle={"name": "tiny-distilled"},
    )
    said = []
    run_all(config, say=said.append)
    return config, said


def test_all_runs_every_step_and_writes_a_verified_bundle(built):
    config, said = built
    assert said[:-1] == ["train", "export", "labels", "quantize", "eval"]
    bundle = load_bundle(config.bundle_dir)
    manifest = bundle.manifest
    assert manifest.name == "tiny-distilled" and manifest.embedding_dim == 32
    assert manifest.schema_version == 2 and isinstance(manifest.teacher, OpenClipTeacher)
    assert manifest.teacher.architecture == "tiny-clip-test"
    assert manifest.student.backbone == "mobilenetv3_small_050"
    assert manifest.quantization.mode in ("qdq_u8s8", "qdq_s8s8", "qoperator_u8s8")
    assert 0.99 <= manifest.metrics.int8_vs_fp32_cosine <= 1
    assert set(manifest.metrics.eval.top1.model_dump()) == {
        "teacher",
        "student_fp32",
        "student_int8",
    }
    evaluation = read_report(config.out_dir / "eval.json", EvalReport)
    assert manifest.metrics.eval == evaluation.summary()  # the report, summarised


def test_export_parity_and_quantize_report(built):
    config, _ = built
    export = read_report(config.out_dir / "export.json", ExportReport)
    assert export.max_abs_diff < 1e-4 and export.frames > 0
    report = read_report(config.out_dir / "quantize.json", QuantizeReport)
    assert report.fp32_latency_ms > 0
    for variant in report.variants:
        assert variant.latency_ms > 0 and variant.speedup_vs_fp32 > 0
        assert -1 <= variant.cosine_min <= variant.cosine_mean <= 1.0001
        assert 0 <= variant.top1_agreement <= 1
    assert report.selected in report.reason or "fastest" in report.reason


def test_eval_teacher_accuracy_equals_a_direct_computation(built, tiny_teacher):
    config, _ = built
    report = read_report(config.out_dir / "eval.json", EvalReport)
    teacher = Teacher(tiny_teacher)
    classes = report.classes
    text = np.stack([ensemble([f"a photo of a {c} road."], teacher.embed_texts) for c in classes])
    correct = []
    for i, cls in enumerate(classes):
        for path in sorted((config.eval.folder / cls).iterdir()):
            embedding = teacher.embed_images([cv2.imread(str(path))])[0].numpy()
            correct.append(int((text @ embedding).argmax() == i))
    assert report.top1.teacher == pytest.approx(np.mean(correct))
    assert report.images == len(correct) == 6
    assert (config.out_dir / "eval.png").stat().st_size > 10_000


def test_agent_labels_equal_distill_side_scoring(built, real_video, tmp_path):
    config, _ = built
    db = tmp_path / "obs.db"
    args = [
        "--dry-run",
        real_video,
        "--model",
        config.bundle_dir,
        "--db",
        db,
        "--max-frames",
        12,
        "--no-publish",
    ]
    every_frame = {**os.environ, "RETROFIT_AGENT_KEEP__EVERY_FRAME": "true"}  # all 12 stored
    result = subprocess.run(
        [sys.executable, "-m", "retrofit_agent", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=every_frame,
    )
    assert result.returncode == 0, result.stderr
    from retrofit_agent.store.queue import Store

    stored = list(Store(db).observations())
    manifest = load_bundle(config.bundle_dir).manifest
    bank = load_label_bank(config.bundle_dir / "labels.npz")
    pre = Preprocessor(
        manifest.size,
        manifest.resize.shortest_side,
        manifest.resize.interpolation,
        manifest.mean,
        manifest.std,
    )
    capture = cv2.VideoCapture(str(real_video))
    frames = [capture.read()[1] for _ in range(12)]
    inputs = np.concatenate([pre(f).copy() for f in frames])
    student = onnx_embeddings(config.bundle_dir / "student.int8.onnx", inputs)
    logits = torch.from_numpy(student @ bank.embeddings.T) * manifest.logit_scale
    for obs, row in zip(stored, logits, strict=True):
        for group in bank.groups:
            expected = bank.names[group.index[int(row[group.index].argmax())]]
            assert obs.top[group.name].label == expected
            if group.kind == "exclusive":
                prob = torch.softmax(row[group.index], 0).max().item()
                assert obs.top[group.name].score == pytest.approx(prob, abs=1e-4)


def test_all_resumes_and_refuses_an_existing_bundle(built):
    config, _ = built
    with pytest.raises(ConfigError, match="bundle directory exists"):
        run_all(config)
    (config.out_dir / "quantize.json").unlink()  # as if interrupted during quantize
    said = []
    run_all(config, force=True, say=said.append)
    assert said[:-1] == [
        "train",
        "export: done before, kept",
        "labels: done before, kept",
        "quantize",
        "eval",
    ]
    assert load_bundle(config.bundle_dir).manifest.name == "tiny-distilled"


def test_eval_folder_without_images(built, tmp_path):
    config, _ = built
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "notes.txt").write_text("no images here")
    bad = RunConfig.model_validate(
        {**config.model_dump(), "eval": {"folder": tmp_path, "templates": ["{}"]}}
    )
    with pytest.raises(ConfigError, match="no images in class sub-folders"):
        run_eval(bad, Teacher(config.teacher))
