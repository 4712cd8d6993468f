"""systemd/retrofit-agent.service: what it promises, and `systemd-analyze verify` accepts it."""

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from helpers.paths import REPO

from retrofit_agent.config import CaptureConfig
from retrofit_agent.errors import BundleError, ConfigError

UNIT = REPO / "systemd" / "retrofit-agent.service"
INSTALLED_AGENT = "/opt/retrofit-agent/venv/bin/retrofit-agent"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}}; systemd allows a key more than once."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key, _, value = line.partition("=")
            sections[section][key].append(value)
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit, section: str, key: str) -> str:
    (value,) = unit[section][key]
    return value


def seconds(value: str) -> float:
    return float(value.rstrip("s"))


def test_notify_watchdog_and_restart_policy(unit):
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecStart") == (
        f"{INSTALLED_AGENT} run --config /etc/retrofit-agent/agent.toml"
    )
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert seconds(one(unit, "Service", "RestartSec")) >= 10  # no fast crash loop
    assert int(one(unit, "Unit", "StartLimitBurst")) <= 10
    assert seconds(one(unit, "Unit", "StartLimitIntervalSec")) >= 300
    # errors a restart cannot fix are not retried: the codes come from errors.py
    prevent = set(map(int, one(unit, "Service", "RestartPreventExitStatus").split()))
    assert prevent == {ConfigError.exit_code, BundleError.exit_code}
    # a stalled camera is detected and reopened well inside the watchdog, and stopping waits
    # for at most a stall timeout plus a frame and a commit
    stall = CaptureConfig.model_fields["stall_timeout_s"].default
    assert seconds(one(unit, "Service", "WatchdogSec")) > 4 * stall
    assert seconds(one(unit, "Service", "TimeoutStopSec")) > 2 * stall


def test_unprivileged_and_hardened(unit):
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["User"] == service["Group"] == "retrofit-agent"
    assert service["SupplementaryGroups"] == "video"
    assert service["StateDirectory"] == service["ConfigurationDirectory"] == "retrofit-agent"
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-video4linux rw",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "@system-service" in unit["Service"]["SystemCallFilter"]


def test_memory_bounds(unit):
    def mib(value: str) -> float:
        return float(value[:-1]) * {"K": 1 / 1024, "M": 1, "G": 1024}[value[-1]]

    high, limit = mib(one(unit, "Service", "MemoryHigh")), mib(one(unit, "Service", "MemoryMax"))
    assert 133 * 2 <= high < limit <= 1024  # headroom over the measured footprint, on 2 GB


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (.ci/run installs the systemd package)")
    return path


def installable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's agent (verify checks it exists)."""
    agent = Path(sys.executable).parent / "retrofit-agent"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED_AGENT, str(agent)))
    return copy


def test_systemd_analyze_verify_accepts_it(tmp_path):
    result = subprocess.run(
        [systemd_analyze(), "verify", str(installable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path):
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", str(installable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if "--offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no offline security check: {result.stderr}")
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert level, result.stdout + result.stderr
    assert float(level[1]) <= 2.0  # systemd rates below 2 "OK" (10 is unprotected)
