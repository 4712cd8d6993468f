"""The model bundle (contract 1): a directory with a manifest, the student and its labels.

The agent verifies every file's sha256 and every dimension before it opens a camera or a
database, so a bundle damaged on the SD card or mixed from two builds is refused with an error
that names the file and what differs, never run with silently wrong labels.

The manifest is versioned. This agent writes schema_version 2 and reads 1 and 2: a version-1
manifest is turned into a version-2 one by `upgrade_v1` (the only difference: version 1 named
the quantization mode `format`), then validated like any other; any other version is refused.
The sha256 a bundle is known by (`manifest_sha256`, in every observation) is that of the file
as it lies on disk, upgraded or not.

Every number the frame path computes with is bounded here, where the bundle enters: JSON
allows NaN and Infinity, and a NaN mean or an infinite logit scale passed as floats would
make every score NaN; a `resize.shortest_side` below `size` cannot be cropped, and one of
100000 asked for a 27.9 GiB buffer on the first frame.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, ValidationError, ValidationInfo, field_validator

from retrofit_agent.bundle.sections import (
    Metrics,
    Quantization,
    Sha256,
    StudentInfo,
    TeacherIdentity,
)
from retrofit_agent.common.files import read_limited, sha256_file
from retrofit_agent.common.strict import StrictModel, first_error
from retrofit_agent.errors import BundleError, one_line, shorten

SCHEMA_VERSION = 2
READS = (1, 2)  # the schema versions this agent reads
MANIFEST = "manifest.json"
STUDENT_INT8 = "student.int8.onnx"
STUDENT_FP32 = "student.fp32.onnx"
LABELS = "labels.npz"
REQUIRED = (STUDENT_INT8, LABELS)
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KiB
MAX_SIZE = 1024  # input side: the largest CLIP towers take 336-560 px
MAX_RESIZE_RATIO = 4  # shortest_side / size; torchvision's recipes use 1 to 1.14 (256/224)
MAX_LOGIT_SCALE = 1000.0  # CLIP clamps its learned scale at 100, SigLIP's is ~117

# Pixel statistics on [0, 1]: a mean within it, a std of at least a quarter of one 8-bit level
# and at most 1 (no normalisation); never NaN or infinite.
Mean = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Std = Annotated[float, Field(ge=1e-3, le=1.0, allow_inf_nan=False)]


class Resize(StrictModel):
    """Shortest side resized to `shortest_side`, then a centre crop of the manifest's `size`."""

    shortest_side: PositiveInt
    interpolation: Literal["bilinear", "bicubic", "area", "nearest"]


class Description(StrictModel):
    """What a bundle holds: every manifest field but those its writer fills in (the schema
    version, the creation time and the files with their sha256)."""

    name: str = Field(min_length=1)
    teacher: TeacherIdentity
    student: StudentInfo
    size: int = Field(ge=1, le=MAX_SIZE, description="square input side in pixels")
    resize: Resize
    mean: tuple[Mean, Mean, Mean]
    std: tuple[Std, Std, Std]
    embedding_dim: PositiveInt
    logit_scale: float = Field(gt=0, le=MAX_LOGIT_SCALE, allow_inf_nan=False)
    quantization: Quantization
    metrics: Metrics | None = Field(None, description="None: nothing measured (random weights)")

    @field_validator("resize")
    @classmethod
    def _covers_the_crop(cls, resize: Resize, info: ValidationInfo) -> Resize:
        size = info.data.get("size")  # absent: its own error is reported
        if size is not None and not size <= resize.shortest_side <= MAX_RESIZE_RATIO * size:
            raise ValueError(
                f"shortest_side {resize.shortest_side} must lie between size ({size}) and "
                f"{MAX_RESIZE_RATIO} x size ({MAX_RESIZE_RATIO * size})"
            )
        return resize


class Manifest(Description):
    """manifest.json, schema version 2."""

    schema_version: Literal[2]
    created_utc: datetime
    files: dict[str, Sha256] = Field(description="file name -> sha256 hex")


class Bundle(StrictModel):
    """A verified bundle: its directory, manifest and the sha256 of the manifest itself."""

    path: Path
    manifest: Manifest
    manifest_sha256: str

    @property
    def student_path(self) -> Path:
        return self.path / STUDENT_INT8

    @property
    def labels_path(self) -> Path:
        return self.path / LABELS


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest as version 2: `quantization.format` is now `quantization.mode`.

    Nothing else changed; what version 1 left free-form (teacher, student, quantization,
    metrics) is validated by the version-2 model, so a field it cannot vouch for is an error.
    """
    upgraded = {**data, "schema_version": 2}
    quantization = data.get("quantization")
    if isinstance(quantization, dict):
        upgraded["quantization"] = {
            ("mode" if key == "format" else key): value for key, value in quantization.items()
        }
    return upgraded


def parse_manifest(raw: bytes, where: Path) -> Manifest:
    """A manifest from its bytes, upgraded to the current version; BundleError naming `where`
    and the key otherwise."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BundleError(f"{where}: not valid JSON ({one_line(exc)})") from None
    except RecursionError:
        raise BundleError(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise BundleError(f"{where}: not a JSON object")
    version = data.get("schema_version")
    if "schema_version" in data and not (type(version) is int and version in READS):
        raise BundleError(
            f"{where}: schema_version: {shorten(repr(version), 40)} is not supported "
            f"(this agent reads {' and '.join(map(str, READS))})"
        )
    if version == 1:
        data = upgrade_v1(data)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        upgraded = " (upgraded from schema_version 1)" if version == 1 else ""
        raise BundleError(f"{where}: {first_error(exc)}{upgraded}") from None


def load_bundle(path: Path) -> Bundle:
    """Read and verify a bundle's manifest and file hashes (dimensions are checked on load)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: model bundle directory not found")
    raw = read_limited(manifest_path, MAX_MANIFEST_BYTES, BundleError, "bundle manifest")
    manifest = parse_manifest(raw, manifest_path)
    for required in REQUIRED:
        if required not in manifest.files:
            raise BundleError(f"{manifest_path}: files has no entry for {required}")
    for name, expected in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: listed in {MANIFEST} but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(
                f"{file}: sha256 {actual[:12]}... does not match {MANIFEST} ({expected[:12]}...)"
            )
    return Bundle(path=path, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest())
