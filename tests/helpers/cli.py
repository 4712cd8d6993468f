"""`retrofit-agent` as a subprocess, and its one-line errors."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

AGENT = [sys.executable, "-m", "retrofit_agent"]


def agent(
    *args,
    check_ok=False,
    timeout: float = 120,
    memory_limit: int | None = None,
    every_frame: bool = False,
) -> subprocess.CompletedProcess:
    """Run the command line; `memory_limit` (bytes of address space) makes a run that would
    allocate without bound fail in the child instead of exhausting the machine; `every_frame`
    stores every frame, not the keep policy's (keep.every_frame)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    result = subprocess.run(
        [*AGENT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit if memory_limit else None,
        env={**os.environ, "RETROFIT_AGENT_KEEP__EVERY_FRAME": "true"} if every_frame else None,
    )
    if check_ok:
        assert result.returncode == 0, result.stderr
    return result


def error_line(result: subprocess.CompletedProcess) -> str:
    """The single error line; other stderr lines may only be warnings."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("retrofit-agent: error: ")]
    assert len(errors) == 1, result.stderr
    assert all("warning" in line for line in lines if line not in errors), result.stderr
    return errors[0]
