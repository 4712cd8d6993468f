"""What native libraries write to stderr, kept apart from the agent's own lines.

libpng (inside OpenCV's wheel) writes `libpng error: IDAT: CRC error` and `libpng warning:
...` straight to file descriptor 2, so a bad PNG printed a line of its own before the agent's
one-line error. `separate()`, called first by the command line, gives Python's sys.stderr a
descriptor of its own (a duplicate of fd 2), leaving fd 2 to native code; `captured()` points
fd 2 at a memory file while a decoder runs and hands back what it wrote, which the caller
puts into its own message. Outside those moments native code still reaches the terminal or
the journal (a crash's last words are not lost).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

STDERR = 2
MAX_CAPTURED = 4096  # bytes of a decoder's text kept for a message

_lock = threading.Lock()
_sink: int | None = None


def separate() -> None:
    """Give sys.stderr its own descriptor, once; left alone if something (a test runner)
    already replaced it."""
    if sys.stderr is None or sys.stderr is not sys.__stderr__:
        return
    sys.stderr.flush()
    own = os.dup(STDERR)
    sys.stderr = os.fdopen(own, "w", buffering=1, errors="backslashreplace")


@dataclass
class Captured:
    text: str = ""


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """While the block runs, what is written to fd 2 lands in `.text` (one line, at most
    MAX_CAPTURED bytes) instead of on stderr. One block at a time, process-wide."""
    global _sink
    result = Captured()
    with _lock:
        if _sink is None:
            _sink = os.memfd_create("retrofit-agent-stderr", os.MFD_CLOEXEC)
        saved = os.dup(STDERR)
        os.dup2(_sink, STDERR)
        try:
            yield result
        finally:
            os.dup2(saved, STDERR)
            os.close(saved)
            os.lseek(_sink, 0, os.SEEK_SET)
            written = os.read(_sink, MAX_CAPTURED)
            os.ftruncate(_sink, 0)
            os.lseek(_sink, 0, os.SEEK_SET)  # the next capture writes from the start again
            result.text = " ".join(written.decode(errors="replace").split())
