"""The frame path, assembled in one place: bundle -> frames -> database -> socket, and its loop.

The dry run, the service and `retrofit-agent bench` all build a `Runtime` and call its `run`,
so what the benchmark measures is what the service does: the reader thread decodes and makes
the model input (the pipeline's `prepare`), the inference thread infers, scores, queues and
publishes. Resources open in the order bundle, frames, database, socket, so a bad bundle or
video fails before anything is written; a failure part-way closes what was opened.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np

from retrofit_agent.config import AgentConfig, CaptureConfig
from retrofit_agent.errors import StoreFull
from retrofit_agent.frames.capture import Frame, FrameSource, Prepare, open_source
from retrofit_agent.frames.pipeline import Pipeline
from retrofit_agent.frames.stats import RunStats
from retrofit_agent.store.queue import Store, open_store
from retrofit_agent.transport.publish import Publisher

# Wraps the opener of the frames into a source of its own (the service's camera watchdog).
Supervise = Callable[[Callable[[], FrameSource]], FrameSource]


def open_frames(capture: CaptureConfig, prepare: Prepare | None = None) -> FrameSource:
    """The frames `capture` describes; `prepare` makes each one's model input on the reader."""
    c = capture
    return open_source(
        c.source,
        c.realtime,
        c.width,
        c.height,
        c.fps,
        c.stall_timeout_s,
        c.loop,
        prepare,
        c.max_pixels,
    )


class Runtime:
    """Everything the frame path holds; `run` processes frames, `close` releases it all.

    `pipeline` reuses one already loaded (the benchmark times it between runs); `supervise`
    wraps the frames (the service reopens a faulty camera through it).
    """

    def __init__(
        self,
        config: AgentConfig,
        capture: CaptureConfig,
        pipeline: Pipeline | None = None,
        supervise: Supervise | None = None,
    ) -> None:
        self._closing = contextlib.ExitStack()
        try:
            self.pipeline = pipeline or Pipeline(config)

            def reopen() -> FrameSource:
                return open_frames(capture, self.pipeline.prepare)

            self.source = supervise(reopen) if supervise else reopen()
            self._closing.callback(self.source.close)
            self.store: Store = open_store(config.store)
            self._closing.callback(self.store.close)
            self.publisher: Publisher | None = None
            if config.publish.enabled:
                self.publisher = Publisher(config.publish.endpoint, config.publish.send_hwm)
                self._closing.callback(self.publisher.close)
        except BaseException:
            self.close()
            raise
        self.stats = RunStats()

    def run(
        self,
        max_frames: int | None = None,
        on_frame: Callable[[RunStats], None] | None = None,
    ) -> RunStats:
        """Process frames until the source ends, `max_frames` or Ctrl-C; always flushes the store.

        `self.stats` is updated in place, so a caller can read it while the run goes on.
        """
        stats, pipeline, source = self.stats, self.pipeline, self.source
        started = time.perf_counter()
        frames = iter(source)
        try:
            while max_frames is None or stats.frames < max_frames:
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                timings = {"capture": (time.perf_counter() - t0) * 1e3}
                embedding = pipeline.embed(frame, timings)
                if embedding is None:
                    stats.degenerate += 1  # its scores would be NaN: nothing to keep or send
                else:
                    self._keep(frame, embedding, timings)
                if on_frame is not None:
                    on_frame(stats)
        except KeyboardInterrupt:
            stats.interrupted = True  # Ctrl-C: keep what was done and report it
        finally:
            self.store.flush()
            stats.wall_s = time.perf_counter() - started
            stats.dropped = source.dropped
        return stats

    def _keep(self, frame: Frame, embedding: np.ndarray, timings: dict[str, float]) -> None:
        """Store and publish the observation of `frame` under a newly reserved seq."""
        try:
            seq = self.store.allocate_seq()
        except StoreFull:
            self.stats.skipped += 1  # no seq reserved on disk: it can be neither kept nor sent
            return
        observation = self.pipeline.observe(frame, embedding, self.source.name, seq, timings)
        header = observation.header_json()
        t1 = time.perf_counter()
        self.store.add(observation, header)
        t2 = time.perf_counter()
        if self.publisher is not None:
            self.publisher.publish(observation, header)
        t3 = time.perf_counter()
        timings["store"] = (t2 - t1) * 1e3
        timings["publish"] = (t3 - t2) * 1e3
        self.stats.record(observation, timings)

    def close(self) -> None:
        self._closing.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
