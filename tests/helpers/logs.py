"""Log records as the agent writes them, context included (caplog.text has only the message)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from retrofit_agent.common.logs import KeyValueFormatter

FORMATTER = KeyValueFormatter(journal=False, command="retrofit-agent")


def log_text(records: Iterable[logging.LogRecord]) -> str:
    """`retrofit-agent: warning: message key=value ...`, one line per record."""
    return "\n".join(FORMATTER.format(record) for record in records)
