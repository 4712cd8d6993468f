"""Observations made by hand, and rows added to a store, for the store, publish and upload tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from retrofit_agent.observation import LabelScore, ModelRef, Observation, encode_embedding
from retrofit_agent.store.queue import Store


def observation(seq: int, dim: int = 32) -> Observation:
    rng = np.random.default_rng(seq)
    top = LabelScore(group="weather", label="rain", score=0.75)
    return Observation(
        device_id="cam-1",
        seq=seq,
        captured_utc=datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        source="test",
        frame_index=seq,
        model=ModelRef(name="tiny", manifest_sha256="ab" * 32),
        labels=[top],
        top={"weather": top},
        latency_ms={"inference": 1.5},
        embedding=encode_embedding(rng.normal(size=dim).astype(np.float32)),
    )


def add(store: Store, count: int, dim: int = 32) -> list[Observation]:
    added = [observation(store.allocate_seq(), dim) for _ in range(count)]
    for obs in added:
        store.add(obs, obs.header_json())
    return added


def with_labels(seq: int, *labels: tuple[str, str]) -> Observation:
    scores = [LabelScore(group=g, label=label, score=0.9) for g, label in labels]
    return observation(seq).model_copy(update={"labels": scores})


def frame(
    seq: int,
    *labels: tuple[str, str] | tuple[str, str, float],
    embedding: np.ndarray | None = None,
    at_s: float = 0.0,
) -> Observation:
    """A hand-made frame for the keep policy: these labels (score 0.9 unless given), this
    embedding (unit length; default a fixed one), captured `at_s` seconds after a fixed time."""
    scores = [
        LabelScore(group=g, label=lab, score=rest[0] if rest else 0.9) for g, lab, *rest in labels
    ]
    vector = embedding if embedding is not None else np.eye(1, 32)[0]
    return observation(seq).model_copy(
        update={
            "labels": scores,
            "captured_utc": datetime(2026, 11, 29, 12, 0, tzinfo=UTC) + timedelta(seconds=at_s),
            "embedding": encode_embedding(np.asarray(vector, np.float32)),
        }
    )
