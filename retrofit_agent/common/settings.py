"""Settings files: TOML, then environment variables, then dotted overrides, into a strict model.

The one TOML reader and the one mapping of validation errors to a message: every problem as
`source: dotted.key: what is wrong` on one line, where the source is the file, the environment
variable or the command-line option that set the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from retrofit_agent.common.files import read_limited
from retrofit_agent.errors import ConfigError, printable, shorten

ENV_PREFIX = "RETROFIT_AGENT_"
MAX_TOML_BYTES = 1 << 20  # a config or a label set is a few KiB
ENV_NESTING = "__"
M = TypeVar("M", bound=BaseModel)


def load_validated(
    model: type[M],
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    what: str = "config file",
) -> M:
    """`model` from `path` (TOML), RETROFIT_AGENT_* variables and dotted overrides, in that
    order; ConfigError naming the source and key of every problem."""
    data: dict[str, Any] = read_toml(path, what) if path is not None else {}
    origins: dict[tuple[str, ...], str] = {}
    environ = os.environ if environ is None else environ
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            keys = tuple(k.lower() for k in name[len(ENV_PREFIX) :].split(ENV_NESTING))
            _set_path(data, keys, _parse_env_value(raw))
            origins[keys] = f"environment variable {name}"
    for dotted, value in (overrides or {}).items():
        if value is not None:
            keys = tuple(dotted.split("."))
            _set_path(data, keys, value)
            origins[keys] = f"option {dotted}"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = str(path) if path is not None else "configuration"
        raise ConfigError(describe_errors(exc, where, origins)) from None


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    raw = read_limited(path, MAX_TOML_BYTES, ConfigError, what)
    try:
        return tomllib.loads(raw.decode())
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None


def _parse_env_value(raw: str) -> Any:
    """Environment values are TOML literals (`3`, `true`, `"x"`); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw


def _set_path(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        child = data.setdefault(key, {})
        if not isinstance(child, dict):
            child = data[key] = {}
        data = child
    data[keys[-1]] = value


def describe_errors(
    exc: ValidationError, where: str, origins: Mapping[tuple[str, ...], str] | None = None
) -> str:
    """Every validation error as `source: dotted.key: what is wrong`, joined on one line."""
    origins = origins or {}
    problems = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        source = next(
            (origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), where
        )
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] not in ("extra_forbidden", "missing"):
            what += f" (got {shorten(repr(err['input']), 80)})"
        problems.append(f"{source}: {'.'.join(map(printable, loc))}: {what}")
    return "; ".join(problems)
