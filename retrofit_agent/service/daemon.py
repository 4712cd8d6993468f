"""`retrofit-agent run`: the agent as a long-running systemd service on a live camera.

The per-frame work is the Runtime's (frames.runtime), over a SupervisedSource (the camera
watchdog): the reader thread prepares the model input, as in the dry run. Around it:
- Start: config, model bundle, camera, database, ZeroMQ, metrics, in that order; the first
  failure is one log line and the exit code of its kind (errors.py), which the unit uses to
  tell "do not restart" (bad config, bad bundle) from "restart later". Then READY=1.
- SIGTERM/SIGINT: the frame in flight is finished, the queue flushed, everything closed, exit
  0. Waits (backoff) end at once; a frame wait ends within `capture.stall_timeout_s`.
- SIGHUP: config and model/label bank reloaded in place, the camera stays open; whatever
  fails while the new config, bundle or label bank load (a RetrofitError, or anything else:
  a reload must never stop a running camera) is logged and the running ones kept. Sections
  that need a restart say so.
- Progress (a frame done, or a step of the camera watchdog) pings the systemd watchdog,
  refreshes the metrics snapshot (service.catalogue) and STATUS=, and logs a status line now
  and then.
Signal handlers only set flags (and wake the sleep through a pipe); the loop acts on them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from retrofit_agent import __version__
from retrofit_agent.common import logs
from retrofit_agent.common.backoff import Backoff
from retrofit_agent.common.logs import kv
from retrofit_agent.config import AgentConfig, load_config
from retrofit_agent.errors import ConfigError, RetrofitError, one_line
from retrofit_agent.frames.capture import FrameSource
from retrofit_agent.frames.runtime import Runtime
from retrofit_agent.frames.stats import RunStats
from retrofit_agent.service import catalogue
from retrofit_agent.service.catalogue import Values
from retrofit_agent.service.metrics import Exporter, render
from retrofit_agent.service.sdnotify import Notifier, Watchdog
from retrofit_agent.service.supervisor import SupervisedSource
from retrofit_agent.store.queue import open_store
from retrofit_agent.transport.upload import UploadThread

log = logging.getLogger(__name__)

TICK_S = 1.0  # longest sleep slice: the watchdog and metrics stay fresh during a long backoff
# not applied by a reload (keep: the policy's state, its open events, would be lost)
RESTART_SECTIONS = ("capture", "store", "keep", "publish", "metrics")


def main(config_path: Path) -> int:
    """Run until stopped; the exit code tells systemd what happened (see errors.py)."""
    logs.setup()
    try:
        service = Service(config_path)
    except RetrofitError as exc:
        log.error(f"cannot start: {exc}", extra=kv(exit_code=exc.exit_code))
        return exc.exit_code
    try:
        return service.run()
    except RetrofitError as exc:
        log.error(f"stopped: {exc}", extra=kv(exit_code=exc.exit_code))
        return exc.exit_code
    finally:
        service.close()


def load_service_config(path: Path) -> AgentConfig:
    config = load_config(path)
    if config.capture is None:
        raise ConfigError(f"{path}: capture: missing, `run` needs capture.source")
    logging.getLogger("retrofit_agent").setLevel(config.logging.level)
    return config


class Service:
    """Everything the running agent holds; opened in __init__, released by close()."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._stopping = False
        self._reload_requested = False
        self._install_signal_handlers()
        self.notifier = Notifier.from_environ()
        self.watchdog = Watchdog(self.notifier)
        self.reloads: Counter[str] = Counter()
        self._closing = contextlib.ExitStack()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self.config = config = load_service_config(self.config_path)
        capture = config.capture
        assert capture is not None
        self.runtime = Runtime(config, capture, supervise=self._supervise)
        self._closing.callback(self.runtime.close)
        self.pipeline, self.store, self.stats = (
            self.runtime.pipeline,
            self.runtime.store,
            self.runtime.stats,
        )
        if config.upload.endpoint is not None:
            uploader = UploadThread(config.upload, lambda: open_store(config.store))
            self._closing.callback(uploader.close)
        self.exporter = Exporter(config.metrics.listen, config.metrics.textfile)
        self._closing.callback(self.exporter.close)
        timeout = self.watchdog.timeout_s
        if timeout is not None and capture.stall_timeout_s >= timeout / 2:
            log.warning(
                "a stalled camera will trip the systemd watchdog before it is reopened",
                extra=kv(stall_timeout_s=capture.stall_timeout_s, watchdog_s=timeout),
            )
        self._last_frames, self._fps, self._last_frame_time = 0, 0.0, 0.0
        self._last_snapshot = self._last_status = time.monotonic()

    def _supervise(self, reopen: Callable[[], FrameSource]) -> FrameSource:
        """The camera behind its watchdog: faults reopen it, with backoff, without a restart."""
        s = self.config.service
        self.camera = SupervisedSource(
            reopen(),
            reopen,
            Backoff(s.reconnect_initial_s, s.reconnect_max_s),
            s.max_corrupt_frames,
            self.wait,
        )
        return self.camera

    def _install_signal_handlers(self) -> None:
        self._wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_write = wake_write
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        elif not self._stopping:
            self._stopping = True
            self.notifier.stopping()

    def run(self) -> int:
        c = self.config
        self.notifier.ready(self._status_text(self._values()))
        log.info(
            "running",
            extra=kv(
                version=__version__,
                device_id=c.device_id,
                model=self.pipeline.model_ref.name,
                source=self.camera.name,
                database=c.store.path,
                publish=c.publish.endpoint if c.publish.enabled else "off",
                metrics=self._metrics_where(),
                watchdog_s=self.watchdog.timeout_s or "off",
            ),
        )
        self.runtime.run(on_frame=self._on_frame)
        why = "signal" if self._stopping else "source ended"
        log.info("stopped", extra=kv(reason=why, frames=self.stats.frames))
        return 0

    def _metrics_where(self) -> str:
        """Where the metrics go, for the start line (the real port when 0 was asked for)."""
        where = []
        if self.exporter.address:
            where.append("http://{}:{}/metrics".format(*self.exporter.address))
        if self.config.metrics.textfile:
            where.append(str(self.config.metrics.textfile))
        return " ".join(where) or "off"

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` (0: only check), waking on a signal; False once stopping."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            self._tick()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if select.select([self._wake_read], [], [], min(remaining, TICK_S))[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 512)
        return not self._stopping

    def _on_frame(self, _stats: RunStats) -> None:
        self._last_frame_time = time.time()
        self._tick()

    def _tick(self) -> None:
        """The loop made progress: act on a reload, ping the watchdog, refresh what is due."""
        if self._reload_requested:
            self._reload()
        self.watchdog.progress()
        now = time.monotonic()
        if now - self._last_snapshot >= self.config.metrics.interval_s:
            self._snapshot(now)
        if now - self._last_status >= self.config.service.status_interval_s:
            self._last_status = now
            v = self._values()
            log.info(
                "status",
                extra=kv(
                    camera="up" if v.camera_up else "reopening",
                    frames=v.frames_total,
                    fps=self._fps,
                    dropped=v.frames_dropped_total,
                    corrupt=v.frames_corrupt_total,
                    skipped=v.frames_skipped_total,
                    degenerate=v.frames_degenerate_total,
                    reconnects=v.camera_reconnects_total,
                    queue_rows=v.queue_rows,
                    queue_bytes=v.queue_bytes,
                    evicted=v.queue_evicted_total,
                    disk_full=v.queue_disk_full_total,
                    rss_bytes=v.resident_memory_bytes,
                ),
            )

    def _reload(self) -> None:
        self._reload_requested = False
        self.notifier.reloading()
        try:
            config = load_service_config(self.config_path)
            self.pipeline.load(config)
        except Exception as exc:  # whatever it was, the running bundle stays
            self.reloads["failed"] += 1
            expected = isinstance(exc, RetrofitError)
            log.error(
                "reload failed, keeping the running configuration",
                extra=kv(error=exc if expected else f"{type(exc).__name__}: {one_line(exc)}"),
            )
            if not expected:  # a bug in a loader: its traceback for the report
                log.debug("reload failure", exc_info=True)
        else:
            self.reloads["ok"] += 1
            for section in RESTART_SECTIONS:
                if getattr(config, section) != getattr(self.config, section):
                    log.warning(
                        "changed section takes effect at restart", extra=kv(section=section)
                    )
            running = {s: getattr(self.config, s) for s in RESTART_SECTIONS}
            self.config = config.model_copy(update=running)
            s = config.service
            self.camera.backoff = Backoff(s.reconnect_initial_s, s.reconnect_max_s)
            self.camera.max_corrupt_frames = s.max_corrupt_frames
            log.info(
                "reloaded",
                extra=kv(model=self.pipeline.model_ref.name, labels=len(self.pipeline.bank)),
            )
        self.notifier.ready(self._status_text(self._values()))

    def _snapshot(self, now: float) -> None:
        self._fps = (self.stats.frames - self._last_frames) / (now - self._last_snapshot)
        self._last_frames, self._last_snapshot = self.stats.frames, now
        values = self._values()
        metrics = catalogue.families(
            values,
            self.pipeline.device_id,
            self.pipeline.model_ref,
            self.camera.faults,
            self.reloads,
            self.stats,
        )
        self.exporter.publish(render(metrics))
        self.notifier.status(self._status_text(values))

    def _values(self) -> Values:
        return catalogue.collect(self.runtime, self.camera, self._last_frame_time)

    def _status_text(self, values: Values) -> str:
        camera = "up" if values.camera_up else "reopening"
        return (
            f"camera {camera}, {values.frames_total:.0f} frames ({self._fps:.1f} fps), "
            f"queue {values.queue_rows:.0f} rows"
        )

    def close(self) -> None:
        self._closing.close()
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        os.close(self._wake_read)
        os.close(self._wake_write)
