"""read_limited: only a regular file, within a bound, never blocking; and the config reader
through it."""

import os

import pytest

from retrofit_agent.common.files import read_limited
from retrofit_agent.common.settings import load_validated, read_toml
from retrofit_agent.common.strict import StrictModel
from retrofit_agent.errors import BundleError, ConfigError

pytestmark = pytest.mark.device


def test_a_regular_file_within_the_bound_is_read_whole(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_limited(path, 100, BundleError, "thing") == b"x" * 100
    with pytest.raises(BundleError, match=r"f: thing larger than 99 bytes"):
        read_limited(path, 99, BundleError, "thing")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no such thing"),
        ("directory", "thing is a directory, not a file"),
        ("fifo", r"thing is a named pipe \(FIFO\), not a file"),  # opening it would block
        ("/dev/zero", "thing is a character device, not a file"),  # it would never end
    ],
)
def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path, kind, message):
    path = tmp_path / "f"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match=f"^{path}: {message}$"):
        read_limited(path, 1 << 20, ConfigError, "thing")


def test_a_name_that_would_break_the_line_is_quoted(tmp_path):
    with pytest.raises(ConfigError) as refused:
        read_limited(tmp_path / "a\nb", 10, ConfigError, "thing")
    assert "\n" not in str(refused.value) and '\\nb"' in str(refused.value)


def test_a_config_that_is_a_fifo_or_nested_too_deeply(tmp_path):
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"agent\.toml: config file is a named pipe"):
        read_toml(fifo)
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 50_000 + "]" * 50_000)  # was a RecursionError
    with pytest.raises(ConfigError, match=r"deep\.toml: invalid TOML: nested too deeply"):
        read_toml(deep)


class Section(StrictModel):
    size: int = 1


def test_keys_that_would_break_the_line_are_quoted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('"\\n" = 1\n"" = 2\n')
    with pytest.raises(ConfigError) as refused:
        load_validated(Section, path, environ={})
    assert str(refused.value) == f'{path}: "\\n": unknown key; {path}: "": unknown key'
