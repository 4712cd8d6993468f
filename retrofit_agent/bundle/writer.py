"""The one bundle writer: the distillation, the speed benchmark and the test factory use it.

It copies the files into the bundle directory, hashes them, writes manifest.json atomically
(last, so a directory without a manifest is an unfinished bundle, never a wrong one), then
reads the bundle back with the agent's own loader. What needs the student itself (input and
output shapes, the label bank's width against the student's) is checked by the frame path
(retrofit_agent.frames.pipeline.Pipeline), which a writer that can import it runs as well.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from retrofit_agent.bundle.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    Bundle,
    Description,
    Manifest,
    load_bundle,
)
from retrofit_agent.common.files import atomic_write, sha256_file


def write_bundle(
    directory: Path,
    description: Description,
    files: Mapping[str, Path],
    created_utc: datetime | None = None,
) -> Bundle:
    """Copy `files` (name in the bundle -> where it is now; a file already in place stays)
    into `directory`, created if needed, and write their manifest; returns the loaded bundle.

    A Manifest is a Description too: give one with changes to re-hash an existing bundle.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, source in sorted(files.items()):
        target = directory / name
        if not (target.exists() and target.samefile(source)):
            shutil.copyfile(source, target)
        hashes[name] = sha256_file(target)
    manifest = Manifest.model_validate(
        {
            "schema_version": SCHEMA_VERSION,
            **{key: getattr(description, key) for key in Description.model_fields},
            "created_utc": created_utc or datetime.now(UTC),
            "files": hashes,
        }
    )
    # the version first, for a person reading the file
    ordered = {"schema_version": SCHEMA_VERSION, **manifest.model_dump(mode="json")}
    atomic_write(directory / MANIFEST, json.dumps(ordered, indent=2) + "\n")
    return load_bundle(directory)
