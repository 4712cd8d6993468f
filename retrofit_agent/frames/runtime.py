"""The frame path, assembled in one place: bundle -> frames -> database -> socket, and its loop.

The dry run, the service and `retrofit-agent bench` all build a `Runtime` and call its `run`,
so what the benchmark measures is what the service does: the reader thread decodes and makes
the model input (the pipeline's `prepare`), the inference thread infers, scores, asks the keep
policy (retrofit_agent.keep) what to store, queues and publishes. Every frame is published;
the frames the policy keeps are stored (and so uploaded), with the label events it makes.
Resources open in the order bundle, frames, database, socket, so a bad bundle or video fails
before anything is written; a failure part-way closes what was opened. At start the events a
crash left open are closed as interrupted; when the run ends (SIGTERM, the end of a video,
Ctrl-C), the open events are closed as stopped and their best frames stored.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import numpy as np

from retrofit_agent.common.logs import kv
from retrofit_agent.config import AgentConfig, CaptureConfig
from retrofit_agent.errors import StoreFull
from retrofit_agent.frames.capture import Frame, FrameSource, Prepare, open_source
from retrofit_agent.frames.pipeline import Pipeline
from retrofit_agent.frames.stats import RunStats
from retrofit_agent.keep.policy import Decision, KeepPolicy
from retrofit_agent.store.queue import Store, open_store
from retrofit_agent.transport.publish import Publisher

log = logging.getLogger(__name__)

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
            if interrupted := self.store.events.recover():
                log.warning(
                    "closed events a crash left open",
                    extra=kv(events=len(interrupted), last_seq=interrupted[-1].seq),
                )
        except BaseException:
            self.close()
            raise
        self.stats = RunStats()
        self.policy = KeepPolicy(config.keep, self._event_seq)
        self.store.events.open_events = self.policy.events.open_events

    def _event_seq(self) -> int | None:
        """A new event's number, from the frames' sequence; None while the disk is full."""
        try:
            return self.store.allocate_seq()
        except StoreFull:
            return None

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
                    self._observe(frame, embedding, timings)
                if on_frame is not None:
                    on_frame(stats)
        except KeyboardInterrupt:
            stats.interrupted = True  # Ctrl-C: keep what was done and report it
        finally:
            closed = self.policy.close("stopped")
            self._store_events(closed)
            self._publish_events(closed)
            self.store.flush()
            stats.wall_s = time.perf_counter() - started
            stats.dropped = source.dropped
        return stats

    def _observe(self, frame: Frame, embedding: np.ndarray, timings: dict[str, float]) -> None:
        """The observation of `frame` under a newly reserved seq: published, and stored if the
        keep policy keeps it, with the events it changed."""
        try:
            seq = self.store.allocate_seq()
        except StoreFull:
            self.stats.skipped += 1  # no seq reserved on disk: it can be neither kept nor sent
            return
        observation = self.pipeline.observe(frame, embedding, self.source.name, seq, timings)
        t1 = time.perf_counter()
        decision = self.policy.decide(observation, self.source.clock_s(frame))
        if decision.reasons:
            observation = observation.model_copy(update={"reasons": list(decision.reasons)})
        t2 = time.perf_counter()
        header = observation.header_json()
        t3 = time.perf_counter()
        if decision.reasons:
            self.store.add(observation, header)
            self.stats.record_kept(observation)
        self._store_events(decision)
        self.store.tick()
        t4 = time.perf_counter()
        if self.publisher is not None:
            self.publisher.publish(observation, header)
            self._publish_events(decision)
        t5 = time.perf_counter()
        timings["keep"] = (t2 - t1) * 1e3
        timings["store"] = (t4 - t3) * 1e3
        timings["publish"] = (t5 - t4) * 1e3
        self.stats.record(observation, timings)

    def _store_events(self, decision: Decision) -> None:
        """Queue the events `decision` changed, and the best frames of those it ended."""
        if not (decision.started or decision.ended):
            return
        for event in (*decision.started, *decision.ended):
            self.store.put_event(event)
        for best in decision.best_frames:
            self.store.add(best, best.header_json())
            self.stats.record_kept(best)
        self.stats.record_events(decision.started, decision.ended)

    def _publish_events(self, decision: Decision) -> None:
        if self.publisher is None:
            return
        for event in decision.started:
            self.publisher.publish_event("start", event)
        for event in decision.ended:
            self.publisher.publish_event("end", event)

    def close(self) -> None:
        self._closing.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
