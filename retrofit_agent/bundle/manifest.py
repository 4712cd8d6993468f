"""The model bundle (DESIGN.md contract 1): a directory with a manifest, the student and its labels.

The agent verifies every file's sha256 and every dimension before it opens a camera or a
database, so a bundle damaged on the SD card or mixed from two builds is refused with an error
that names the file and what differs, never run with silently wrong labels.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrofit_agent.common.files import atomic_write, sha256_file
from retrofit_agent.common.strict import first_error
from retrofit_agent.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
STUDENT_INT8 = "student.int8.onnx"
STUDENT_FP32 = "student.fp32.onnx"
LABELS = "labels.npz"


class Resize(BaseModel):
    """Shortest side resized to `shortest_side`, then a centre crop of the manifest's `size`."""

    model_config = ConfigDict(extra="forbid")
    shortest_side: int = Field(gt=0)
    interpolation: Literal["bilinear", "bicubic", "area", "nearest"]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int
    name: str = Field(min_length=1)
    created_utc: datetime
    teacher: dict[str, Any] = Field(description="open_clip architecture + pretrained, or sha256")
    student: dict[str, Any] = Field(description="architecture and parameter count")
    size: int = Field(gt=0, description="square input side in pixels")
    resize: Resize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int = Field(gt=0)
    logit_scale: float = Field(gt=0)
    quantization: dict[str, Any]
    files: dict[str, str] = Field(description="file name -> sha256 hex")
    metrics: dict[str, Any] = {}


class Bundle(BaseModel):
    """A verified bundle: its directory, manifest and the sha256 of the manifest itself."""

    model_config = ConfigDict(frozen=True)

    path: Path
    manifest: Manifest
    manifest_sha256: str

    @property
    def student_path(self) -> Path:
        return self.path / STUDENT_INT8

    @property
    def labels_path(self) -> Path:
        return self.path / LABELS


def load_bundle(path: Path) -> Bundle:
    """Read and verify a bundle's manifest and file hashes (dimensions are checked on load)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: model bundle directory not found")
    try:
        raw = manifest_path.read_bytes()
        manifest = Manifest.model_validate_json(raw)
    except FileNotFoundError:
        raise BundleError(f"{manifest_path}: missing") from None
    except ValidationError as exc:
        raise BundleError(f"{manifest_path}: {first_error(exc)}") from None
    if manifest.schema_version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema_version {manifest.schema_version} is not supported "
            f"(this agent reads {SCHEMA_VERSION})"
        )
    for required in (STUDENT_INT8, LABELS):
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


def write_manifest(path: Path, **fields: Any) -> Manifest:
    """Hash every file in the bundle directory and write manifest.json atomically."""
    path = Path(path)
    files = {
        f.name: sha256_file(f) for f in sorted(path.iterdir()) if f.is_file() and f.name != MANIFEST
    }
    fields.setdefault("created_utc", datetime.now(UTC))
    manifest = Manifest(schema_version=SCHEMA_VERSION, files=files, **fields)
    atomic_write(path / MANIFEST, json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return manifest
