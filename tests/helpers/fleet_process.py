"""`retrofit-fleet` as a subprocess: commands, and `serve` until the test is done with it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

FLEET = [sys.executable, "-m", "retrofit_agent.fleet"]


def fleet(*args: object, check_ok: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([*FLEET, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check_ok:
        assert result.returncode == 0, result.stderr
    return result


def add_device(database: str, device_id: str) -> str:
    """A new device's token, as `device add` prints it."""
    return fleet("device", "add", device_id, "--database", database, check_ok=True).stdout.strip()


class FleetServer:
    """`retrofit-fleet serve` (or another program printing `listening on URL` first)."""

    def __init__(self, *args: object, command: list[str] | None = None) -> None:
        argv = [*(command or [*FLEET, "serve"]), *map(str, args)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"no 'listening on': {line!r} {self.proc.stderr.read()}")
        self.url = line.split()[-1]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()

    def __enter__(self) -> FleetServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
