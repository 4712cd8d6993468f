"""Fuzz: any config file and any RETROFIT_AGENT_* value is an AgentConfig or one ConfigError."""

import pytest

pytest.importorskip("hypothesis", reason="the fuzz suite needs the [dev] extra")
from helpers.fuzz import edited, json_values, mutated, nested, toml_document
from hypothesis import given
from hypothesis import strategies as st

from retrofit_agent.config import AgentConfig, load_config
from retrofit_agent.errors import ConfigError

VALID = {
    "device_id": "cam-0042",
    "capture": {"source": "/dev/video0", "width": 1280, "height": 720, "fps": 15.0},
    "store": {"max_rows": 1000, "max_bytes": 1 << 20, "synchronous": "FULL"},
    "publish": {"enabled": True, "endpoint": "tcp://127.0.0.1:5557", "send_hwm": 100},
    "upload": {"endpoint": "https://ingest.example.com/v1", "windows": ["22:00-06:00"]},
    "service": {"reconnect_initial_s": 0.5, "reconnect_max_s": 30.0},
    "metrics": {"listen": "127.0.0.1:9464", "interval_s": 5.0},
}
SECTIONS = sorted(AgentConfig.model_fields)


def loads_or_refuses(path, environ=None) -> None:
    try:
        load_config(path, environ={} if environ is None else environ)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_the_unfuzzed_config_loads(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(toml_document(VALID))
    assert load_config(path, environ={}).capture.width == 1280


@given(edited(VALID))
def test_edited_configs(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("config") / "agent.toml"
    path.write_text(toml_document(document))
    loads_or_refuses(path)


@given(mutated(toml_document(VALID).encode()))
def test_damaged_files(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("config") / "agent.toml"
    path.write_bytes(raw)
    loads_or_refuses(path)


@given(st.integers(1, 200_000), st.booleans())
def test_nesting_of_any_depth(tmp_path_factory, depth, in_environment):
    path = tmp_path_factory.mktemp("config") / "agent.toml"
    path.write_text(f"device_id = {nested(depth)}\n")
    if in_environment:
        loads_or_refuses(None, {"RETROFIT_AGENT_DEVICE_ID": nested(depth)})
    else:
        loads_or_refuses(path)


@given(
    st.sampled_from(SECTIONS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20),
    st.one_of(st.text(max_size=30), json_values.map(str)),
)
def test_environment_overrides(section, key, value):
    name = f"RETROFIT_AGENT_{section.upper()}__{key.upper()}"
    loads_or_refuses(None, {name: value, "RETROFIT_AGENT_" + section.upper(): value})
