"""deploy/'s fleet units: their command lines are ones retrofit-fleet takes, and systemd agrees."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from helpers.paths import REPO

from retrofit_agent.fleet.cli import build_parser

DEPLOY = REPO / "deploy"
UNITS = ["retrofit-fleet.service", "retrofit-fleet-retention.service"]
INSTALLED = "/opt/retrofit-fleet/venv/bin/retrofit-fleet"
ENV = {"RETROFIT_FLEET_DATABASE": "postgresql://fleet@db/fleet",
       "RETROFIT_FLEET_EMBEDDING_DIM": "128", "RETROFIT_FLEET_KEEP_DAYS": "90"}  # fmt: skip


def exec_start(unit: str) -> list[str]:
    (line,) = re.findall(r"^ExecStart=(.*)$", (DEPLOY / unit).read_text(), re.MULTILINE)
    return re.sub(r"\$\{(\w+)\}", lambda m: ENV[m[1]], line).split()


@pytest.mark.parametrize("unit", UNITS)
def test_the_command_line_parses(unit):
    program, *args = exec_start(unit)
    assert program == INSTALLED
    parsed = build_parser().parse_args(args)
    assert parsed.database == ENV["RETROFIT_FLEET_DATABASE"]


@pytest.mark.parametrize("unit", [*UNITS, "retrofit-fleet-retention.timer"])
def test_systemd_analyze_verify_accepts_it(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (.ci/run installs the systemd package)")
    for name in {unit, unit.replace(".timer", ".service")}:  # a timer needs its service beside
        # verify wants an executable there; the arguments are test_the_command_line_parses'
        text = (DEPLOY / name).read_text().replace(INSTALLED, sys.executable)
        (tmp_path / name).write_text(text)
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
