"""The one bundle writer, through the three tools that use it: the loader and the frame path
accept what each writes (the distillation's bundle: tests/distill/test_distill_bundle.py)."""

import json

import pytest
from helpers.manifests import rewrite_manifest

from retrofit_agent.bundle.manifest import MANIFEST, load_bundle
from retrofit_agent.bundle.sections import NoTeacher
from retrofit_agent.config import load_config
from retrofit_agent.frames.pipeline import Pipeline


def accepted(path):
    """The bundle at `path` as the agent opens it: hashes, schema, shapes, label bank."""
    bundle = load_bundle(path)
    Pipeline(load_config(None, environ={}, overrides={"model": path}))
    return bundle


def test_the_test_factory_writes_a_bundle_the_agent_accepts(tiny_bundle):
    manifest = accepted(tiny_bundle).manifest
    assert isinstance(manifest.teacher, NoTeacher)
    assert manifest.student.built_by == "tests/helpers/bundle_factory.py"
    assert manifest.student.params > 0 and manifest.metrics is None


def test_the_speed_benchmark_writes_student_bundles_the_agent_accepts(tiny_bundle, tmp_path):
    pytest.importorskip("onnx", reason="needs the [dev] extra")
    from retrofit_agent.distill.speed import write_student_bundle

    variants = {"qdq_s8s8": tiny_bundle / "student.int8.onnx"}  # the only mode built
    out = tmp_path / "bench-tiny"
    out.mkdir()
    (out / "stale.onnx").write_text("from an earlier run")  # replaced, not listed
    args = ("tiny", 64, tiny_bundle / "student.fp32.onnx", variants, "8 random tensors")
    written = write_student_bundle(out, *args, load_bundle(tiny_bundle))
    manifest = accepted(out).manifest
    assert written.manifest == manifest and not (out / "stale.onnx").exists()
    assert manifest.name == "bench-tiny" and isinstance(manifest.teacher, NoTeacher)
    assert manifest.quantization.mode == "qdq_s8s8" and manifest.student.backbone == "tiny"
    assert set(manifest.files) == {"student.fp32.onnx", "student.int8.onnx", "labels.npz"}


def test_rewriting_keeps_the_files_and_the_creation_time(bundle_copy):
    before = json.loads((bundle_copy / MANIFEST).read_text())
    rewrite_manifest(bundle_copy, name="renamed")
    after = json.loads((bundle_copy / MANIFEST).read_text())
    assert after == {**before, "name": "renamed"}
