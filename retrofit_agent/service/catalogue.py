"""The service's metrics catalogue: every family's name, type and help, and how each is read
from what the running service holds.

Dashboards and alerts are written against these names, so they are declared once: a
single-valued metric is a field of `Values` (its type and help in the field), which the
snapshot, the status log line and systemd's STATUS= all read; the labelled families (info,
camera faults, reloads, labels, stage latency) are built in `families`. Rendering and serving
the text are service.metrics'.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from retrofit_agent import __version__
from retrofit_agent.frames.stats import RunStats, quantiles
from retrofit_agent.observation import ModelRef
from retrofit_agent.service.metrics import Metric

if TYPE_CHECKING:
    from retrofit_agent.frames.runtime import Runtime
    from retrofit_agent.service.supervisor import SupervisedSource

PREFIX = "retrofit_agent_"
QUANTILES = (0.5, 0.9, 0.99)
Sample = tuple[str, Mapping[str, str], float]


def _single(kind: str, help: str) -> Any:
    return dataclasses.field(metadata={"kind": kind, "help": help})


def counter(help: str) -> Any:
    return _single("counter", help)


def gauge(help: str) -> Any:
    return _single("gauge", help)


@dataclasses.dataclass(frozen=True)
class Values:
    """The single-valued metrics, by name without PREFIX."""

    frames_total: int = counter("Frames processed end to end.")
    frames_dropped_total: int = counter("Frames the camera delivered faster than processed.")
    frames_corrupt_total: int = counter("Frames skipped as corrupt.")
    frames_skipped_total: int = counter("Frames skipped: no seq could be reserved (disk full).")
    frames_degenerate_total: int = counter(
        "Frames skipped: the student's embedding was zero or not finite (nothing to score)."
    )
    frames_preprocessed_inline_total: int = counter(
        "Frames whose model input was made on the inference thread, not the reader thread "
        "(prepared for a bundle that a reload replaced)."
    )
    camera_up: int = gauge("1 while the camera is open, 0 while it is being reopened.")
    camera_reconnects_total: int = counter("Times the camera was reopened after a fault.")
    last_frame_timestamp_seconds: float = gauge("When the last frame was processed (Unix time).")
    queue_rows: int = gauge("Observations in the database.")
    queue_bytes: int = gauge("Bytes held by the database's used pages.")
    queue_max_bytes: int = gauge("The byte bound that eviction keeps to.")
    queue_evicted_total: int = counter("Rows evicted for the bound or a full disk.")
    queue_disk_full_total: int = counter("Times the disk was full (SQLITE_FULL).")
    queue_dropped_total: int = counter("Observations not stored: no room even after eviction.")
    published_messages_total: int = counter("ZeroMQ messages sent.")
    observations_kept_total: int = counter("Observations stored by the keep policy.")
    events_open: int = gauge("Label events going on now.")
    resident_memory_bytes: int = gauge("Resident set size of the agent process.")


def collect(runtime: Runtime, camera: SupervisedSource, last_frame_time: float) -> Values:
    """The single-valued metrics now (cheap: no table scan, for every snapshot and status)."""
    store, publisher = runtime.store, runtime.publisher
    rows, used = store.size()
    return Values(
        frames_total=runtime.stats.frames,
        frames_dropped_total=camera.dropped,
        frames_corrupt_total=camera.corrupt_frames,
        frames_skipped_total=runtime.stats.skipped,
        frames_degenerate_total=runtime.stats.degenerate,
        frames_preprocessed_inline_total=runtime.pipeline.inline_preprocessed,
        camera_up=int(camera.up),
        camera_reconnects_total=camera.reconnects,
        last_frame_timestamp_seconds=last_frame_time,
        queue_rows=rows,
        queue_bytes=used,
        queue_max_bytes=store.max_bytes,
        queue_evicted_total=store.evicted,
        queue_disk_full_total=store.disk.full_events,
        queue_dropped_total=store.dropped,
        published_messages_total=publisher.sent if publisher else 0,
        observations_kept_total=runtime.stats.kept,
        events_open=runtime.policy.events.open_count,
        resident_memory_bytes=resident_bytes(),
    )


def families(
    values: Values,
    device_id: str,
    model: ModelRef,
    camera_faults: Mapping[str, int],
    reloads: Mapping[str, int],
    stats: RunStats,
) -> list[Metric]:
    """Every metric family of a snapshot, in the order they are exposed."""
    info = {
        "version": __version__,
        "device_id": device_id,
        "model": model.name,
        "model_sha256": model.manifest_sha256[:12],
    }
    by_kind: list[Sample] = [("", {"kind": k}, n) for k, n in sorted(camera_faults.items())]
    by_result: list[Sample] = [("", {"result": k}, n) for k, n in sorted(reloads.items())]
    by_label: list[Sample] = [
        ("", {"group": g, "label": label}, n)
        for (g, label), n in sorted(stats.label_counts.items())
    ]
    by_reason: list[Sample] = [
        ("", {"reason": r}, n) for r, n in sorted(stats.kept_by_reason.items())
    ]
    started: list[Sample] = [
        ("", {"group": g, "label": label}, n)
        for (g, label), n in sorted(stats.events_started.items())
    ]
    ended: list[Sample] = [("", {"reason": r}, n) for r, n in sorted(stats.events_ended.items())]
    return [
        Metric(PREFIX + "info", "gauge", "Agent and model.", [("", info, 1)]),
        *(
            Metric.single(
                PREFIX + f.name, f.metadata["kind"], f.metadata["help"], getattr(values, f.name)
            )
            for f in dataclasses.fields(values)
        ),
        Metric(PREFIX + "camera_faults_total", "counter", "Camera faults by kind.", by_kind),
        Metric(PREFIX + "reloads_total", "counter", "SIGHUP reloads by result.", by_result),
        Metric(PREFIX + "labels_total", "counter", "Frames carrying each label.", by_label),
        Metric(
            PREFIX + "observations_kept_by_reason_total",
            "counter",
            "Observations stored, by why they were kept (one may have several reasons).",
            by_reason,
        ),
        Metric(PREFIX + "events_started_total", "counter", "Label events opened.", started),
        Metric(PREFIX + "events_ended_total", "counter", "Label events closed, by why.", ended),
        Metric(
            PREFIX + "stage_latency_seconds",
            "summary",
            "Per-stage latency; quantiles over the last frames.",
            latency_samples(stats),
        ),
    ]


def latency_samples(stats: RunStats) -> list[Sample]:
    """Per stage: QUANTILES over the latency window, and the sum and count since the start."""
    samples: list[Sample] = []
    for stage, window in stats.latency_ms.items():
        if not window:
            continue
        values = quantiles(window.values(), QUANTILES) / 1e3
        labels = {"stage": stage}
        samples += [
            ("", {**labels, "quantile": str(q)}, v) for q, v in zip(QUANTILES, values, strict=True)
        ]
        samples += [
            ("_sum", labels, stats.latency_sum_ms[stage] / 1e3),
            ("_count", labels, stats.frames),
        ]
    return samples


def resident_bytes() -> int:
    """This process's resident set size (Linux /proc), 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
