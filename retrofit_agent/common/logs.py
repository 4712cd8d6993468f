"""Log lines for journald: a level, a message, then `key=value` context, one event per line.

Under systemd, stderr is a journal stream (JOURNAL_STREAM names its device and inode); each line
then starts with a `<N>` syslog priority that journald turns into the entry's level, and
journald adds the time itself. On a terminal a line starts with the time and the level name;
a one-shot command's lines start like its errors (`retrofit-agent: warning: ...`).
Context is only what a call passes explicitly (`log.info("camera lost", extra=kv(...))`), so
configuration values and anything secret never reach the log by accident.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

# logging level -> syslog priority (sd-daemon(3) prefixes)
PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
CONTEXT = "context"


def kv(**context: Any) -> dict[str, Any]:
    """`extra=` for a log call: context rendered as `key=value` after the message."""
    return {CONTEXT: context}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """`journal`: syslog priority prefixes; `command`: that name and the level instead of the
    time (a command's stderr); else the time and the level."""

    def __init__(self, journal: bool, command: str | None = None) -> None:
        super().__init__()
        self.journal = journal
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage()
        context: Mapping[str, Any] = getattr(record, CONTEXT, {})
        if context:
            line += " " + " ".join(f"{k}={format_value(v)}" for k, v in context.items())
        lines = [line]
        if record.exc_info:
            lines += self.formatException(record.exc_info).splitlines()
        if self.journal:
            prefix = f"<{PRIORITIES.get(record.levelno, 6)}>"
        elif self.command:
            prefix = f"{self.command}: {record.levelname.lower()}: "
        else:
            prefix = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname} "
        return "\n".join(prefix + part for part in lines)


def is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether `stream` is the journal stream systemd connected (JOURNAL_STREAM=dev:inode)."""
    try:
        device, inode = (int(part) for part in environ.get("JOURNAL_STREAM", "").split(":"))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def setup(
    level: str = "INFO",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    command: str | None = None,
) -> None:
    """Send the package's logs to `stream` (stderr) in the format that suits it; `command`
    names the one-shot command whose lines these are (outside the journal)."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    journal = is_journal(stream, os.environ if environ is None else environ)
    handler.setFormatter(KeyValueFormatter(journal, command))
    logger = logging.getLogger("retrofit_agent")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
