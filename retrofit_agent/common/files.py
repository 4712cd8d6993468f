"""Files written whole or not at all, read within a bound, and their sha256.

A reader (the agent loading a bundle, node-exporter reading a textfile, a resumed training
reading its checkpoint) must never see half a file: everything is written to a temporary file
beside the target, flushed to disk, then renamed over it (rename is atomic on POSIX).

What the agent reads whole (a manifest, a config, a label bank, an image) is read by
`read_limited`: only a regular file, and at most as many bytes as such a file can need. A
manifest that is a link to /dev/zero otherwise reads until memory runs out, and a FIFO put
where a config was expected blocks the reader forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from retrofit_agent.errors import RetrofitError, printable

KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


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


def file_kind(mode: int) -> str:
    """What a non-regular file is, for an error message ("a directory", "a named pipe ...")."""
    return KINDS.get(stat.S_IFMT(mode), "an unknown kind of file")


def read_limited(path: Path, limit: int, error: type[RetrofitError], what: str) -> bytes:
    """The whole of regular file `path` (links followed), if it holds at most `limit` bytes;
    otherwise `error`, one line naming the path and what it should have been (`what`).

    Opened without blocking (a FIFO opens at once instead of waiting for a writer) and checked
    on the open descriptor, so what is read is what was checked.
    """
    where = printable(path)  # a name from a folder listing may hold a newline
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{where}: no such {what}") from None
    except OSError as exc:
        raise error(f"{where}: cannot read {what}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{where}: {what} is {file_kind(mode)}, not a file")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise error(f"{where}: {what} larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{where}: cannot read {what}: {exc.strerror}") from None
    finally:
        os.close(fd)
