"""What a run did, in memory that stays flat for months: frame counts, label counts, what the
keep policy kept and the events it made, latencies.

`Window` keeps the last LATENCY_WINDOW samples per stage in a preallocated array; `quantiles`
is np.quantile's default (linear) method without np.quantile, which imports numpy.ma (through
np.unique): 1.1 MiB of RSS for nothing else the agent uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrofit_agent.event import Event
from retrofit_agent.observation import REASONS, Observation

STAGES = ("capture", "preprocess", "inference", "scoring", "keep", "store", "publish")
LATENCY_WINDOW = 10_000  # per-stage samples kept for percentiles


def quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """np.quantile(values, qs) with its default (linear) method."""
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
    """What a run did: frames, label counts and a window of per-stage latencies (ms).

    `label_counts` counts the frames that carried each label; `no_label` the frames in which
    a group reported none (its best was below every threshold), so that each exclusive
    group's counts add up to the frames. The `total` latency is every stage but `capture`,
    the wait for the next frame.
    """

    frames: int = 0
    dropped: int = 0
    skipped: int = 0  # frames that got no sequence number: the disk was full
    degenerate: int = 0  # frames whose embedding was zero or not finite: nothing to score
    interrupted: bool = False
    wall_s: float = 0.0
    label_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    no_label: Counter[str] = field(default_factory=Counter)
    kept: int = 0  # observations stored (a best frame is stored after its own frame)
    kept_by_reason: Counter[str] = field(default_factory=Counter)
    events_started: Counter[tuple[str, str]] = field(default_factory=Counter)
    events_ended: Counter[str] = field(default_factory=Counter)  # by end reason
    latency_ms: dict[str, Window] = field(
        default_factory=lambda: {s: Window() for s in (*STAGES, "total")}
    )
    latency_sum_ms: Counter[str] = field(default_factory=Counter)  # since the start (metrics)

    def record(self, observation: Observation, timings: dict[str, float]) -> None:
        self.frames += 1
        self.label_counts.update((s.group, s.label) for s in observation.labels)
        labelled = {s.group for s in observation.labels}
        self.no_label.update(group for group in observation.top if group not in labelled)
        total = sum(v for k, v in timings.items() if k != "capture")
        for stage, ms in (*timings.items(), ("total", total)):
            self.latency_ms[stage].append(ms)
            self.latency_sum_ms[stage] += ms

    def record_kept(self, observation: Observation) -> None:
        self.kept += 1
        self.kept_by_reason.update(observation.reasons)

    def record_events(self, started: list[Event], ended: list[Event]) -> None:
        self.events_started.update((e.group, e.label) for e in started)
        self.events_ended.update(e.end_reason for e in ended if e.end_reason)

    def summary(self) -> dict[str, Any]:
        percentiles = {}
        for stage, window in self.latency_ms.items():
            if len(window):
                p50, p90 = quantiles(window.values(), (0.5, 0.9))
                percentiles[stage] = {"p50": float(p50), "p90": float(p90)}
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "degenerate": self.degenerate,
            "wall_s": self.wall_s,
            "interrupted": self.interrupted,
            "fps": self.frames / self.wall_s if self.wall_s else 0.0,
            "latency_ms": percentiles,
            "labels": {f"{g}/{label}": n for (g, label), n in sorted(self.label_counts.items())},
            "no_label": dict(sorted(self.no_label.items())),
            "kept": {
                "observations": self.kept,
                "by_reason": {r: n for r in REASONS if (n := self.kept_by_reason[r])},
            },
            "events": {
                "started": self.events_started.total(),
                "ended": dict(sorted(self.events_ended.items())),
                "by_label": {
                    f"{g}/{label}": n for (g, label), n in sorted(self.events_started.items())
                },
            },
        }
