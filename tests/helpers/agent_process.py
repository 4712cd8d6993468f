"""`retrofit-agent run` as a real child process, as systemd would hold it, for the service tests.

It gets a config, a notify socket (abstract, like systemd's), optionally WATCHDOG_USEC, and the
fake camera of tests/fake_camera.py (or any other source). Its log lines (stderr) are collected
on a thread; metrics are read from the node-exporter textfile it writes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from helpers.metrics import parse_metrics

FAKE_CAMERA = Path(__file__).with_name("fake_camera.py")

CONFIG = """
device_id = "cam-test"
model = "{bundle}"

[capture]
source = "/dev/video-fake0"
stall_timeout_s = {stall_timeout_s}

[service]
reconnect_initial_s = 0.2
reconnect_max_s = 0.8
max_corrupt_frames = 5

[store]
path = "{db}"
commit_every = 5
commit_interval_s = 0.2

[keep]
{keep}

[publish]
enabled = false

[metrics]
listen = ""
textfile = "{metrics}"
interval_s = 0.2

[logging]
level = "DEBUG"
"""


def config_text(
    tmp_path: Path,
    bundle: Path,
    stall_timeout_s: float = 1.0,
    extra: str = "",
    keep: str = "every_frame = true",
) -> str:
    """The test config: the fake camera, the tiny bundle, fast batches, DEBUG logs; `keep` is
    the body of the [keep] section (by default every frame is stored)."""
    text = CONFIG.format(
        bundle=bundle,
        stall_timeout_s=stall_timeout_s,
        db=tmp_path / "obs.db",
        metrics=tmp_path / "agent.prom",
        keep=keep,
    )
    return text + extra


class AgentProcess:
    def __init__(
        self,
        tmp_path: Path,
        config: str,
        watchdog_usec: int | None = None,
        fps: float = 25,
        fake_camera: bool = True,
    ) -> None:
        self.tmp_path = tmp_path
        self.cues = tmp_path / "cues"
        self.cues.mkdir(exist_ok=True)
        self.db = tmp_path / "obs.db"
        self.config = tmp_path / "agent.toml"
        self.config.write_text(config)
        self.lines: list[str] = []
        address = f"@retrofit-test-{uuid.uuid4().hex}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind("\0" + address[1:])
        env = {**os.environ, "NOTIFY_SOCKET": address, "FAKE_CAMERA_FPS": str(fps)}
        env.pop("JOURNAL_STREAM", None)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        prefix = [str(FAKE_CAMERA), str(self.cues)] if fake_camera else ["-m", "retrofit_agent"]
        self.proc = subprocess.Popen(
            [sys.executable, *prefix, "run", "--config", str(self.config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_log(self, pattern: str, timeout: float = 30, start: int = 0) -> re.Match:
        """The first log line from index `start` on that matches `pattern` (re.search)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines[-30:]))

    def notifications(self, seconds: float) -> list[str]:
        """Every notify field received during the next `seconds`."""
        fields: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.notify.settimeout(left)
            try:
                fields += self.notify.recv(4096).decode().split("\n")
            except TimeoutError:
                break
        return fields

    def wait_notify(self, field: str, timeout: float = 30) -> list[str]:
        """Fields received up to and including the message that carries `field`."""
        fields: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.notify.recv(4096).decode().split("\n")
            except TimeoutError:
                break
            fields += message
            if field in message:
                return fields
        raise AssertionError(f"no {field} notification; got {fields}\n" + "\n".join(self.lines))

    def metrics(self) -> dict[str, float]:
        path = self.tmp_path / "agent.prom"
        return parse_metrics(path.read_text()) if path.exists() else {}

    def wait_metric(self, name: str, at_least: float, timeout: float = 30) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (metrics := self.metrics()).get(name, 0) >= at_least:
                return metrics
            time.sleep(0.1)
        raise AssertionError(f"{name} never reached {at_least}: {self.metrics().get(name)}")

    def cue(self, name: str, on: bool = True) -> None:
        path = self.cues / name
        path.touch() if on else path.unlink(missing_ok=True)

    def opens(self) -> int:
        path = self.cues / "opens"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
