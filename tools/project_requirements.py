"""The agent's requirements as pyproject.toml declares them: no aarch64 check keeps a list."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _project() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def package_name(requirement: str) -> str:
    """The normalised distribution name of a requirement: "Foo_Bar>=2" -> "foo-bar"."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match[1]).lower()


def runtime() -> list[str]:
    """[project].dependencies: everything the camera installs besides the agent itself."""
    return list(_project()["dependencies"])


def extra(name: str, *packages: str) -> list[str]:
    """The requirements for `packages` in the optional extra `name`, as pinned there."""
    wanted = {package_name(p) for p in packages}
    found = [r for r in _project()["optional-dependencies"][name] if package_name(r) in wanted]
    if len(found) != len(wanted):
        raise ValueError(f"pyproject.toml: extra {name!r} lacks one of {sorted(wanted)}")
    return found
