"""The agent loop: frame -> preprocess -> student -> label scores -> observation -> store, publish.

`Pipeline` holds what comes from the model bundle and turns one frame into one observation;
`run` drives it over a frame source and times every stage.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from retrofit_agent.bundle import load_bundle
from retrofit_agent.capture import Frame, FrameSource
from retrofit_agent.config import AgentConfig
from retrofit_agent.embedder import Embedder
from retrofit_agent.errors import BundleError, StoreFull
from retrofit_agent.labels import load_label_bank
from retrofit_agent.observation import LabelScore, ModelRef, Observation, encode_embedding
from retrofit_agent.preprocess import Preprocessor
from retrofit_agent.publish import Publisher
from retrofit_agent.store import Store

STAGES = ("capture", "preprocess", "inference", "scoring", "store", "publish")
LATENCY_WINDOW = 10_000  # per-stage samples kept for percentiles


class Pipeline:
    """The verified bundle, loaded: preprocessor, student session and label bank."""

    def __init__(self, config: AgentConfig) -> None:
        self.load(config)

    def load(self, config: AgentConfig) -> None:
        """Load (or reload, on SIGHUP) everything `config` names; all or nothing on errors."""
        bundle = load_bundle(config.model)
        manifest = bundle.manifest
        embedder = Embedder(
            bundle.student_path,
            manifest.size,
            manifest.embedding_dim,
            config.embedder.intra_op_threads,
            config.embedder.inter_op_threads,
        )
        labels_path = config.labels or bundle.labels_path
        bank = load_label_bank(labels_path)
        if bank.dim != manifest.embedding_dim:
            raise BundleError(
                f"{labels_path}: label embeddings have dimension {bank.dim}, but "
                f"{bundle.student_path.name} outputs {manifest.embedding_dim}"
            )
        preprocess = Preprocessor(
            manifest.size,
            manifest.resize.shortest_side,
            manifest.resize.interpolation,
            manifest.mean,
            manifest.std,
        )
        self.device_id = config.device_id
        self.bundle = bundle
        self.embedder = embedder
        self.bank = bank
        self.preprocess = preprocess
        self.model_ref = ModelRef(name=manifest.name, manifest_sha256=bundle.manifest_sha256)
        release_free_heap()

    def embed(self, frame: Frame, timings: dict[str, float]) -> np.ndarray:
        """The frame's L2-normalised embedding [D]; stage times (ms) are added to `timings`.

        A frame whose input was prepared on the reader thread (open_source's `prepare`, given
        `self.preprocess.prepare`) is not preprocessed again.
        """
        t0 = time.perf_counter()
        batch = self.preprocess(frame.image) if frame.input is None else frame.input
        t1 = time.perf_counter()
        embedding = self.embedder(batch)[0]
        embedding /= np.linalg.norm(embedding)
        t2 = time.perf_counter()
        timings["preprocess"] = (t1 - t0) * 1e3 if frame.input is None else frame.prepare_ms
        timings["inference"] = (t2 - t1) * 1e3
        return embedding

    def observe(
        self, frame: Frame, source: str, seq: int, timings: dict[str, float]
    ) -> Observation:
        embedding = self.embed(frame, timings)
        t0 = time.perf_counter()
        scored = self.bank.score(embedding, self.bundle.manifest.logit_scale)
        observation = Observation(
            device_id=self.device_id,
            seq=seq,
            captured_utc=frame.captured_utc,
            source=source,
            frame_index=frame.index,
            model=self.model_ref,
            labels=[LabelScore(group=s.group, label=s.label, score=s.score) for s in scored.labels],
            top={
                g: LabelScore(group=s.group, label=s.label, score=s.score)
                for g, s in scored.top.items()
            },
            latency_ms=timings,
            embedding=encode_embedding(embedding),
        )
        timings["scoring"] = (time.perf_counter() - t0) * 1e3
        return observation


def release_free_heap() -> None:
    """Return malloc's free pages to the OS (glibc's malloc_trim; elsewhere nothing happens).

    Creating the onnxruntime session frees ~6 MiB of loading buffers (the parsed model, graph
    rewrites) in the middle of the heap, where malloc keeps them resident: trimmed, the
    agent's steady state is ~2 MiB smaller.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: no malloc_trim
        ctypes.CDLL(None).malloc_trim(0)


def quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """np.quantile's default (linear) method; np.quantile itself imports numpy.ma (through
    np.unique), 1.1 MiB of RSS for nothing else the agent uses."""
    ordered = np.sort(values)
    return np.interp(np.asarray(qs) * (len(ordered) - 1), np.arange(len(ordered)), ordered)


class Window:
    """The last `size` values in a preallocated array: a months-long run's memory stays flat."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self._values = np.zeros(size)
        self._count = 0

    def append(self, value: float) -> None:
        self._values[self._count % len(self._values)] = value
        self._count += 1

    def values(self) -> np.ndarray:
        return self._values[: min(self._count, len(self._values))]

    def __len__(self) -> int:
        return min(self._count, len(self._values))


@dataclass
class RunStats:
    """What a run did: frames, label counts and a window of per-stage latencies (ms)."""

    frames: int = 0
    dropped: int = 0
    skipped: int = 0  # frames that got no sequence number: the disk was full
    interrupted: bool = False
    wall_s: float = 0.0
    label_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency_ms: dict[str, Window] = field(
        default_factory=lambda: {s: Window() for s in (*STAGES, "total")}
    )
    latency_sum_ms: Counter[str] = field(default_factory=Counter)  # since the start (metrics)

    def record(self, observation: Observation, timings: dict[str, float]) -> None:
        self.frames += 1
        self.label_counts.update((s.group, s.label) for s in observation.labels)
        total = sum(v for k, v in timings.items() if k != "capture")
        for stage, ms in (*timings.items(), ("total", total)):
            self.latency_ms[stage].append(ms)
            self.latency_sum_ms[stage] += ms

    def summary(self) -> dict:
        percentiles = {}
        for stage, window in self.latency_ms.items():
            if len(window):
                p50, p90 = quantiles(window.values(), (0.5, 0.9))
                percentiles[stage] = {"p50": float(p50), "p90": float(p90)}
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "wall_s": self.wall_s,
            "interrupted": self.interrupted,
            "fps": self.frames / self.wall_s if self.wall_s else 0.0,
            "latency_ms": percentiles,
            "labels": {f"{g}/{label}": n for (g, label), n in sorted(self.label_counts.items())},
        }


def run(
    pipeline: Pipeline,
    source: FrameSource,
    store: Store,
    publisher: Publisher | None = None,
    max_frames: int | None = None,
    on_frame: Callable[[RunStats], None] | None = None,
    stats: RunStats | None = None,
) -> RunStats:
    """Process frames until the source ends, `max_frames` or Ctrl-C; always flushes the store.

    `stats` (default: new) is updated in place, so a caller can read it while the run goes on.
    """
    stats = RunStats() if stats is None else stats
    started = time.perf_counter()
    frames = iter(source)
    try:
        while max_frames is None or stats.frames < max_frames:
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            timings = {"capture": (time.perf_counter() - t0) * 1e3}
            try:
                seq = store.allocate_seq()
            except StoreFull:
                stats.skipped += 1  # without a seq reserved on disk it can be neither kept nor sent
            else:
                observation = pipeline.observe(frame, source.name, seq, timings)
                header = observation.header_json()
                t1 = time.perf_counter()
                store.add(observation, header)
                t2 = time.perf_counter()
                if publisher is not None:
                    publisher.publish(observation, header)
                t3 = time.perf_counter()
                timings["store"] = (t2 - t1) * 1e3
                timings["publish"] = (t3 - t2) * 1e3
                stats.record(observation, timings)
            if on_frame is not None:
                on_frame(stats)
    except KeyboardInterrupt:
        stats.interrupted = True  # Ctrl-C: keep what was done and report it
    finally:
        store.flush()
        stats.wall_s = time.perf_counter() - started
        stats.dropped = source.dropped
    return stats
