"""Files written whole or not at all, and their sha256.

A reader (the agent loading a bundle, node-exporter reading a textfile, a resumed training
reading its checkpoint) must never see half a file: everything is written to a temporary file
beside the target, flushed to disk, then renamed over it (rename is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path, fsync: bool = True) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; renamed over `path` on success and
    removed on failure. With `fsync`, the data is on disk before the rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes | str, fsync: bool = True) -> None:
    """Replace `path` with `data` (str is written as UTF-8), whole or not at all."""
    with replacing(path, fsync) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
