import json

import numpy as np
import pytest
from helpers.manifests import rewrite_manifest

from retrofit_agent.bundle.labels import save_label_bank
from retrofit_agent.bundle.manifest import Resize, load_bundle
from retrofit_agent.common.files import sha256_file
from retrofit_agent.config import load_config
from retrofit_agent.errors import BundleError
from retrofit_agent.frames.embedder import Embedder
from retrofit_agent.frames.pipeline import Pipeline

pytestmark = pytest.mark.device


def pipeline_for(bundle, labels=None):
    return Pipeline(load_config(None, environ={}, overrides={"model": bundle, "labels": labels}))


def test_verified_bundle_loads(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert bundle.manifest.embedding_dim == 32 and bundle.manifest.size == 64
    assert set(bundle.manifest.files) == {"student.int8.onnx", "student.fp32.onnx", "labels.npz"}
    assert bundle.manifest_sha256 == sha256_file(tiny_bundle / "manifest.json")
    pipeline = pipeline_for(tiny_bundle)
    assert pipeline.bank.dim == 32


def test_wrong_hash_names_the_file(bundle_copy):
    model = bundle_copy / "student.int8.onnx"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match=r"student\.int8\.onnx: sha256 .* does not match"):
        load_bundle(bundle_copy)


def test_missing_listed_file_and_missing_manifest(bundle_copy):
    (bundle_copy / "labels.npz").unlink()
    with pytest.raises(BundleError, match=r"labels\.npz: listed in manifest\.json but missing"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: no such bundle manifest"):
        load_bundle(bundle_copy)


def test_manifest_missing_field_or_not_json(bundle_copy):
    manifest = bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["embedding_dim"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="manifest.json: embedding_dim: Field required"):
        load_bundle(bundle_copy)
    manifest.write_text("{ not json")
    with pytest.raises(BundleError, match="manifest.json"):
        load_bundle(bundle_copy)


def test_label_bank_of_wrong_dimension_is_refused(bundle_copy):
    text = np.eye(3, 16, dtype=np.float32)
    save_label_bank(
        bundle_copy / "labels.npz", ["a", "b", "c"], ["g"] * 3, text, [0.0] * 3, {"g": "exclusive"}
    )
    rewrite_manifest(bundle_copy)  # hashes right, dimensions wrong
    with pytest.raises(
        BundleError,
        match=r"labels\.npz: label embeddings have dimension 16, "
        r"but student\.int8\.onnx outputs 32",
    ):
        pipeline_for(bundle_copy)


def test_labels_override_of_wrong_dimension_is_refused(tiny_bundle, tmp_path):
    other = tmp_path / "other.npz"
    save_label_bank(other, ["a"], ["g"], np.eye(1, 8), [0.0], {"g": "exclusive"})
    with pytest.raises(BundleError, match=r"other\.npz: label embeddings have dimension 8"):
        pipeline_for(tiny_bundle, labels=other)


def test_manifest_dimension_disagreeing_with_model(bundle_copy):
    rewrite_manifest(bundle_copy, embedding_dim=64)
    with pytest.raises(
        BundleError,
        match=r"output 'embedding' has shape \['N', 32\], "
        "manifest says embedding_dim 64",
    ):
        pipeline_for(bundle_copy)
    resize = Resize(shortest_side=96, interpolation="bicubic")
    rewrite_manifest(bundle_copy, embedding_dim=32, size=96, resize=resize)
    with pytest.raises(BundleError, match=r"manifest says \[N, 3, 96, 96\]"):
        pipeline_for(bundle_copy)


def test_corrupt_model_with_matching_hash(bundle_copy):
    (bundle_copy / "student.int8.onnx").write_bytes(b"\x08\x07garbage" * 100)
    rewrite_manifest(bundle_copy)
    with pytest.raises(BundleError, match=r"student\.int8\.onnx: onnxruntime cannot load"):
        pipeline_for(bundle_copy)


def test_int8_embeddings_are_unit_vectors_close_to_fp32(tiny_bundle):
    rng = np.random.default_rng(1)
    batch = rng.normal(0, 1, (4, 3, 64, 64)).astype(np.float32)
    int8 = Embedder(tiny_bundle / "student.int8.onnx", 64, 32)(batch)
    fp32 = Embedder(tiny_bundle / "student.fp32.onnx", 64, 32)(batch)
    assert int8.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert (int8 * fp32).sum(axis=1).min() > 0.95
