"""deploy/: the example config documents every key with its default; install.sh is sound."""

import re
import shutil
import subprocess

import pytest
from helpers.paths import REPO
from pydantic import BaseModel

from retrofit_agent.config import AgentConfig, load_config

DEPLOY = REPO / "deploy"
EXAMPLE = DEPLOY / "agent.example.toml"
# keys whose example value is deliberately not the default
DEPLOYED_VALUES = {"model", "capture.source"}


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the configuration, sections included."""
    keys = []
    for name, field in model.model_fields.items():
        section = next(
            (t for t in getattr(field.annotation, "__args__", (field.annotation,))
             if isinstance(t, type) and issubclass(t, BaseModel)),
            None,
        )  # fmt: skip
        keys += config_keys(section, f"{prefix}{name}.") if section else [prefix + name]
    return keys


def documented_keys(text: str) -> set[str]:
    """`key = ...` lines, commented out or not, under their [section]."""
    keys, section = set(), ""
    for line in text.splitlines():
        if match := re.fullmatch(r"\[([\w.]+)\]", line.strip()):
            section = match[1] + "."
        elif match := re.match(r"#? ?(\w+) = ", line):
            keys.add(section + match[1])
    return keys


def test_example_documents_every_key():
    missing = set(config_keys(AgentConfig)) - documented_keys(EXAMPLE.read_text())
    assert not missing, f"add these to {EXAMPLE.name}: {sorted(missing)}"


def test_example_loads_and_shows_the_defaults():
    example = load_config(EXAMPLE, environ={})
    assert str(example.model) == "/opt/retrofit-agent/models/default"  # where install.sh puts it
    assert example.capture is not None and example.capture.source == "/dev/video0"
    defaults = AgentConfig(capture={"source": "/dev/video0"}).model_dump()
    shown = example.model_dump()
    for key in config_keys(AgentConfig):
        if key in DEPLOYED_VALUES or key == "device_id":
            continue
        *sections, name = key.split(".")
        want, got = defaults, shown
        for section in sections:  # [keep.novelty] is a section within a section
            want, got = want[section], got[section]
        assert got[name] == want[name], f"{key}: example {got[name]!r}, default {want[name]!r}"


def test_install_script_parses():
    subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], check=True)


def test_install_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run(["shellcheck", str(DEPLOY / "install.sh")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout
