"""Bundles edited as a builder would (re-hashed), for the loader tests; no onnx, so these run on
the camera (the emulated aarch64 run) too."""

from __future__ import annotations

from pathlib import Path

from retrofit_agent.bundle.manifest import MANIFEST, parse_manifest
from retrofit_agent.bundle.writer import write_bundle


def rewrite_manifest(bundle: Path, **change) -> None:
    """Re-hash the bundle's files (as a builder would) with some manifest fields changed."""
    manifest = parse_manifest((bundle / MANIFEST).read_bytes(), bundle / MANIFEST)
    files = {name: bundle / name for name in manifest.files}
    write_bundle(bundle, manifest.model_copy(update=change), files, manifest.created_utc)
