"""Bundles edited as a builder would (re-hashed), for the loader tests; no onnx, so these run on
the camera (the emulated aarch64 run) too."""

from __future__ import annotations

import json

from retrofit_agent.bundle.manifest import write_manifest


def rewrite_manifest(bundle, **change):
    """Re-hash the bundle's files (as a builder would) with some manifest fields changed."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    fields = {k: v for k, v in manifest.items() if k not in ("schema_version", "files")}
    fields.update(change)
    write_manifest(bundle, **fields)
