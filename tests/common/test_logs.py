import io
import logging
import os

import pytest

from retrofit_agent.common import logs
from retrofit_agent.common.logs import kv


@pytest.fixture
def capture():
    """The package logger writing to a buffer; restored afterwards."""
    logger = logging.getLogger("retrofit_agent")
    saved = logger.handlers[:], logger.level, logger.propagate
    stream = io.StringIO()
    yield logger, stream
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_terminal_lines_have_time_level_message_and_context(capture):
    logger, stream = capture
    logs.setup("INFO", stream, environ={})
    logger.getChild("service").warning(
        "camera lost", extra=kv(reason="no frame for 5 s", attempt=3, retry_in_s=1.23456)
    )
    logger.debug("not shown at INFO")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(
        ' WARNING camera lost reason="no frame for 5 s" attempt=3 retry_in_s=1.235'
    )
    assert line[:19].count("-") == 2 and line[10] == "T"


def test_a_command_writes_its_name_and_the_level_like_its_errors(capture, tmp_path):
    logger, stream = capture
    logs.setup("WARNING", stream, environ={}, command="retrofit-agent")
    logger.info("not shown at WARNING")
    logger.warning("upload failed", extra=kv(rows=5, error="HTTP 500: busy"))
    assert stream.getvalue().splitlines() == [
        'retrofit-agent: warning: upload failed rows=5 error="HTTP 500: busy"'
    ]
    with open(tmp_path / "journal", "w") as journal:  # run by a unit: the journal's format
        stat = os.fstat(journal.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        logs.setup("WARNING", journal, environ=environ, command="retrofit-agent")
        logger.warning("upload failed", extra=kv(rows=5))
    assert (tmp_path / "journal").read_text() == "<4>upload failed rows=5\n"


def test_journal_stream_gets_syslog_priorities(capture, tmp_path):
    logger, _ = capture
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        stat = os.fstat(stream.fileno())
        logs.setup("DEBUG", stream, environ={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        logger.debug("committed", extra=kv(rows=30))
        logger.info("ready")
        logger.error("cannot start", extra=kv(exit_code=78))
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("crashed")
    lines = path.read_text().splitlines()
    assert lines[:3] == ["<7>committed rows=30", "<6>ready", "<3>cannot start exit_code=78"]
    assert lines[3] == "<3>crashed"
    assert all(line.startswith("<3>") for line in lines[4:]) and "RuntimeError: boom" in lines[-1]


def test_another_stream_is_not_the_journal(capture, tmp_path):
    _, stream = capture
    with open(tmp_path / "other", "w") as other:
        stat = os.fstat(other.fileno())
        assert not logs.is_journal(stream, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        assert not logs.is_journal(other, {"JOURNAL_STREAM": "garbage"})
        assert logs.is_journal(other, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})


@pytest.mark.parametrize(
    ("value", "text"),
    [("plain", "plain"), ("two words", '"two words"'), ("", '""'), ('a"b', '"a\\"b"'),
     ("line\nbreak", '"line\\nbreak"'), ("k=v", '"k=v"'), (0.5, "0.5"), (7, "7")],
)  # fmt: skip
def test_values_are_quoted_when_they_would_break_the_line(value, text):
    assert logs.format_value(value) == text
