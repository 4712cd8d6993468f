"""The manifest's versions: version 1 (the shipped bundle) upgraded, unknown versions refused,
the typed sections validated with the file and the key in every error."""

import json

import pytest
from helpers.paths import REPO

from retrofit_agent.bundle.manifest import MANIFEST, load_bundle, parse_manifest, upgrade_v1
from retrofit_agent.bundle.sections import NoTeacher, OpenClipTeacher
from retrofit_agent.common.files import sha256_file
from retrofit_agent.errors import BundleError

pytestmark = pytest.mark.device

SHIPPED = REPO / "models" / "synthetic-resnet10t"


def edit_manifest(bundle, change):
    """Change manifest.json's JSON in place (its own hash is not in it: the bundle still loads
    as far as the files go)."""
    path = bundle / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_shipped_version_1_manifest_upgrades_without_losing_a_field():
    raw = (SHIPPED / MANIFEST).read_bytes()
    v1 = json.loads(raw)
    assert v1["schema_version"] == 1 and "format" in v1["quantization"]  # what is tested here
    manifest = parse_manifest(raw, SHIPPED / MANIFEST)
    assert manifest.schema_version == 2
    assert manifest.quantization.mode == v1["quantization"]["format"] == "qoperator_u8s8"
    assert isinstance(manifest.teacher, OpenClipTeacher)
    assert manifest.teacher.checkpoint_sha256 == v1["teacher"]["checkpoint_sha256"]
    assert manifest.metrics.eval.top1.student_int8 == v1["metrics"]["eval"]["top1"]["student_int8"]
    # every value of version 1 is in the typed manifest, under its version-2 name
    upgraded = upgrade_v1(v1)
    assert "format" not in upgraded["quantization"]
    assert manifest.model_dump(mode="json", exclude_none=True) == upgraded


def test_an_upgraded_bundle_keeps_its_identity():
    bundle = load_bundle(SHIPPED)
    assert bundle.manifest_sha256 == sha256_file(SHIPPED / MANIFEST)  # the file as it lies


def test_the_writer_writes_version_2(tiny_bundle):
    data = json.loads((tiny_bundle / MANIFEST).read_text())
    assert next(iter(data)) == "schema_version" and data["schema_version"] == 2
    assert data["quantization"]["mode"] == "qdq_u8s8" and "format" not in data["quantization"]
    assert isinstance(load_bundle(tiny_bundle).manifest.teacher, NoTeacher)


@pytest.mark.parametrize("version", [3, 0, "2", None])
def test_an_unknown_version_is_refused(bundle_copy, version):
    edit_manifest(bundle_copy, lambda data: data.update(schema_version=version))
    with pytest.raises(
        BundleError,
        match=rf"manifest\.json: schema_version: {version!r} is not supported "
        r"\(this agent reads 1 and 2\)",
    ):
        load_bundle(bundle_copy)


def test_a_missing_version_is_named(bundle_copy):
    edit_manifest(bundle_copy, lambda data: data.pop("schema_version"))
    with pytest.raises(BundleError, match=r"manifest\.json: schema_version: Field required"):
        load_bundle(bundle_copy)


def test_a_version_1_manifest_that_does_not_upgrade_names_the_key(bundle_copy):
    def as_version_1(data):
        data["schema_version"] = 1
        data["quantization"]["format"] = "QDQ"  # what tests/bundle_factory.py wrote then
        del data["quantization"]["mode"]

    edit_manifest(bundle_copy, as_version_1)
    with pytest.raises(
        BundleError,
        match=r"manifest\.json: quantization\.mode: Input should be .*"
        r"\(upgraded from schema_version 1\)",
    ):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        ({"kind": "clip"}, r"teacher: Input tag 'clip' found using 'kind' does not match"),
        ({"architecture": "ViT-B-32"}, r"teacher: Unable to extract tag using discriminator"),
        (
            {"kind": "open_clip", "architecture": "ViT-B-32"},
            r"teacher\.open_clip: Value error, give exactly one of pretrained and checkpoint",
        ),
        (
            {"kind": "open_clip", "architecture": "ViT-B-32", "checkpoint_sha256": "abc"},
            r"teacher\.open_clip\.checkpoint_sha256: String should match pattern",
        ),
        ({"kind": "none", "weights": "random"}, r"teacher\.none\.weights: Extra inputs"),
    ],
)
def test_teacher_identity_is_one_of_two_kinds(bundle_copy, teacher, message):
    edit_manifest(bundle_copy, lambda data: data.update(teacher=teacher))
    with pytest.raises(BundleError, match=r"manifest\.json: " + message):
        load_bundle(bundle_copy)


def test_sections_are_strict(bundle_copy):
    edit_manifest(bundle_copy, lambda data: data["student"].update(layers=10))
    with pytest.raises(BundleError, match=r"manifest\.json: student\.layers: Extra inputs"):
        load_bundle(bundle_copy)
