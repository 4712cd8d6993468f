"""The manifest's versions: version 1 (the shipped bundle) upgraded, unknown versions refused,
the typed sections validated with the file and the key in every error."""

import json
import os
import re
import resource
import subprocess
import sys

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


def edit_manifest_text(bundle, old, new):
    """Replace text in manifest.json: JSON's NaN and Infinity are not json.dumps' to write."""
    path = bundle / MANIFEST
    text = json.dumps(json.loads(path.read_text()))
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"mean": [0.48145466', '"mean": [NaN', r"mean\.0: Input should be a finite number"),
        ('"mean": [0.48145466', '"mean": [Infinity', r"mean\.0: Input should be a finite"),
        ('"mean": [0.48145466', '"mean": [-0.5', r"mean\.0: Input should be greater than"),
        ('"std": [0.26862954', '"std": [NaN', r"std\.0: Input should be a finite number"),
        ('"std": [0.26862954', '"std": [0', r"std\.0: Input should be greater than or equal"),
        ('"std": [0.26862954', '"std": [-1', r"std\.0: Input should be greater than or equal"),
        ('"logit_scale": 100.0', '"logit_scale": Infinity', r"logit_scale: .* finite number"),
        ('"logit_scale": 100.0', '"logit_scale": NaN', r"logit_scale: .* finite number"),
        ('"logit_scale": 100.0', '"logit_scale": 1e300', r"logit_scale: .* less than or equal"),
        ('"shortest_side": 64', '"shortest_side": 32', r"resize: .*shortest_side 32 must lie"),
        ('"shortest_side": 64', '"shortest_side": 100000', r"resize: .*shortest_side 100000"),
        ('"size": 64', '"size": 100000', r"size: Input should be less than or equal to 1024"),
    ],
)
def test_values_that_would_poison_every_score_are_refused(bundle_copy, old, new, message):
    """NaN and Infinity are valid JSON to Python; a NaN mean or an infinite logit scale made
    every score NaN, a shortest_side below size crashed the first frame, 100000 asked for
    27.9 GiB."""
    edit_manifest_text(bundle_copy, old, new)
    with pytest.raises(BundleError, match=r"manifest\.json: " + message):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("kind", ["directory", "link to /dev/zero", "fifo", "too large"])
def test_a_manifest_that_is_not_a_small_regular_file_is_refused_at_once(bundle_copy, kind):
    """A directory raised IsADirectoryError; /dev/zero was read until memory ran out (this
    test runs the loader in a child with 2 GiB of address space and a timeout: it must not
    take the machine with it when it fails); a FIFO blocked forever."""
    path = bundle_copy / MANIFEST
    path.unlink()
    expected = {
        "directory": "bundle manifest is a directory, not a file",
        "link to /dev/zero": "bundle manifest is a character device, not a file",
        "fifo": r"bundle manifest is a named pipe \(FIFO\), not a file",
        "too large": "bundle manifest larger than 1048576 bytes",
    }[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b" " * (2 << 20))
    code = (
        f"from retrofit_agent.bundle.manifest import load_bundle; load_bundle({str(bundle_copy)!r})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)),
    )
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"retrofit_agent\.errors\.BundleError: .*manifest\.json: {expected}", last)


def test_deeply_nested_json_is_an_error_not_a_recursion_crash(bundle_copy):
    (bundle_copy / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON \(nested too deeply\)"):
        load_bundle(bundle_copy)
