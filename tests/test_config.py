from pathlib import Path

import pytest

from retrofit_agent.config import AgentConfig, load_config
from retrofit_agent.errors import ConfigError

pytestmark = pytest.mark.device

GOOD = """
device_id = "cam-0042"
model = "/opt/retrofit/models/road"

[capture]
source = "/dev/video0"
width = 1280
height = 720

[store]
path = "/var/lib/retrofit-agent/obs.db"
max_rows = 5000

[publish]
endpoint = "tcp://127.0.0.1:6000"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_loads_toml_sections_and_keeps_defaults(tmp_path):
    config = load_config(write(tmp_path, GOOD), environ={})
    assert config.device_id == "cam-0042"
    assert config.model == Path("/opt/retrofit/models/road")
    assert config.capture.source == "/dev/video0" and config.capture.width == 1280
    assert config.store.max_rows == 5000
    assert config.store.synchronous == "FULL"  # default kept
    assert config.embedder.intra_op_threads == 1


def test_environment_overrides_file_with_typed_values(tmp_path):
    env = {
        "RETROFIT_AGENT_STORE__MAX_ROWS": "42",
        "RETROFIT_AGENT_PUBLISH__ENABLED": "false",
        "RETROFIT_AGENT_DEVICE_ID": "cam-7",
        "UNRELATED": "x",
    }
    config = load_config(write(tmp_path, GOOD), environ=env)
    assert config.store.max_rows == 42
    assert config.publish.enabled is False
    assert config.device_id == "cam-7"


def test_overrides_win_and_none_is_ignored(tmp_path):
    config = load_config(
        write(tmp_path, GOOD),
        environ={},
        overrides={"store.path": Path("/tmp/x.db"), "model": None},
    )
    assert config.store.path == Path("/tmp/x.db")
    assert config.model == Path("/opt/retrofit/models/road")


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, GOOD.replace("max_rows", "max_row"))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert str(path) in message and "store.max_row" in message and "unknown key" in message
    assert "\n" not in message


def test_wrong_type_names_file_key_and_value(tmp_path):
    path = write(tmp_path, GOOD.replace("max_rows = 5000", 'max_rows = "lots"'))
    with pytest.raises(ConfigError, match=r"agent\.toml: store\.max_rows: .*integer.*'lots'"):
        load_config(path, environ={})


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="environment variable RETROFIT_AGENT_STORE__MAX_ROWS"):
        load_config(write(tmp_path, GOOD), environ={"RETROFIT_AGENT_STORE__MAX_ROWS": "-3"})


def test_unknown_environment_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="RETROFIT_AGENT_STORE__MAXROWS.*unknown key"):
        load_config(write(tmp_path, GOOD), environ={"RETROFIT_AGENT_STORE__MAXROWS": "3"})


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[store\nmax_rows = 1"), environ={})
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml", environ={})


def test_defaults_without_file():
    config = load_config(None, environ={})
    assert isinstance(config, AgentConfig)
    assert config.publish.endpoint.startswith("tcp://127.0.0.1:")


def test_service_sections(tmp_path):
    config = load_config(
        write(tmp_path, '[service]\nreconnect_max_s = 60\n[metrics]\nlisten = ""\n'), environ={}
    )
    assert config.service.reconnect_max_s == 60 and config.service.reconnect_initial_s == 0.5
    assert config.metrics.listen == "" and config.logging.level == "INFO"
    assert config.store.min_free_bytes == 64 * 1024**2
    with pytest.raises(ConfigError, match="reconnect_initial_s must not exceed reconnect_max_s"):
        load_config(write(tmp_path, "[service]\nreconnect_initial_s = 90\n"), environ={})
    with pytest.raises(ConfigError, match="metrics.listen: String should match pattern"):
        load_config(write(tmp_path, '[metrics]\nlisten = "localhost"\n'), environ={})
    with pytest.raises(ConfigError, match="logging.level: Input should be"):
        load_config(write(tmp_path, '[logging]\nlevel = "LOUD"\n'), environ={})


def test_the_keep_section_is_strict_and_nested(tmp_path):
    text = GOOD + "\n[keep]\nmin_frames = 3\n\n[keep.novelty]\ntarget_per_hour = 0\n"
    env = {"RETROFIT_AGENT_KEEP__NOVELTY__RADIUS": "0.2"}
    config = load_config(write(tmp_path, text), environ=env)
    assert (config.keep.min_frames, config.keep.end_frames) == (3, 20)
    assert (config.keep.novelty.target_per_hour, config.keep.novelty.radius) == (0, 0.2)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[keep]\nmin_frame = 3", r"agent\.toml: keep\.min_frame: unknown key"),
        ("[keep]\nheartbeat_s = 0", r"keep\.heartbeat_s: Input should be greater than 0"),
        ("[keep.novelty]\nradius = 0.001", r"keep\.novelty: Value error, radius must lie within"),
        ("[keep.novelty]\nradius = 3", r"keep\.novelty\.radius: Input should be less than or"),
    ],
)
def test_bad_keep_settings_name_the_key(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, GOOD + "\n" + section + "\n"), environ={})
