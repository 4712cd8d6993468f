"""Errors the agent reports to an operator: one line each, with a sysexits-style exit code.

Distinct exit codes let systemd tell a bad configuration (do not restart) from a transient
fault (restart), see `RestartPreventExitStatus=` in the unit file.
"""

import json


class RetrofitError(Exception):
    """An expected failure with a message fit for one log line."""

    exit_code = 1


class ConfigError(RetrofitError):
    """The configuration file or a command-line value is invalid."""

    exit_code = 78  # EX_CONFIG


class BundleError(RetrofitError):
    """The model bundle is missing, corrupt or inconsistent."""

    exit_code = 65  # EX_DATAERR


class SourceError(RetrofitError):
    """A frame source cannot be opened or failed while reading."""

    exit_code = 66  # EX_NOINPUT


class SourceTruncated(SourceError):
    """A video file ended before the number of frames its container declares."""


class DeviceLost(SourceError):
    """A live camera vanished or stopped delivering frames."""

    exit_code = 69  # EX_UNAVAILABLE


class StoreError(RetrofitError):
    """The observation database cannot be opened or written."""

    exit_code = 74  # EX_IOERR


class StoreFull(StoreError):
    """The disk is full: no sequence number can be reserved, so a frame cannot be handled."""


class UploadError(RetrofitError):
    """The ingest endpoint was unreachable or did not acknowledge; a later try may succeed."""

    exit_code = 75  # EX_TEMPFAIL


class UploadRefused(UploadError):
    """The endpoint refuses this device (credentials, certificate, address): retrying won't help."""

    exit_code = 77  # EX_NOPERM


def one_line(exc: BaseException, limit: int = 240) -> str:
    """A third-party exception's text collapsed onto one line, for our one-line errors."""
    return shorten(" ".join(str(exc).split()) or type(exc).__name__, limit)


def printable(text: object) -> str:
    """`text` as it is if it is a non-empty printable line, else JSON-quoted: a key or a name
    from a hostile file ("\n", "") cannot break an error onto two lines or vanish from it."""
    text = str(text)
    return text if text and text.isprintable() else json.dumps(text)


def shorten(text: str, limit: int = 240) -> str:
    """`text` cut to `limit` characters (an error quotes a value, not all of a long input)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
