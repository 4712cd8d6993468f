"""Nearest neighbours of an embedding among the stored ones: an exact scan of a time window.

At this scale (a day of 10,000 cameras at one row every 2 s is 432 million rows; a query
window is typically hours of a few devices) an exact scan in chunks is simple and correct:
each chunk of float16 vectors is normalised and scored by cosine similarity, and only the best
`k` so far are kept, so memory is one chunk whatever the window. An approximate index
(pgvector) is the step after this, when queries over whole days become common.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from retrofit_agent.errors import ConfigError
from retrofit_agent.fleet.store import FleetStore

CHUNK = 8192


@dataclass(frozen=True)
class Neighbour:
    similarity: float
    device_id: str
    seq: int
    captured_utc: datetime


def nearest(
    store: FleetStore,
    vector: np.ndarray,
    since: datetime,
    until: datetime,
    k: int,
    device_id: str | None = None,
) -> list[Neighbour]:
    """The `k` stored embeddings most similar (cosine) to `vector`, best first."""
    query = vector.astype(np.float32).ravel()
    query /= max(float(np.linalg.norm(query)), 1e-12)
    best: list[Neighbour] = []
    for chunk in store.embeddings(since, until, device_id, CHUNK):
        if chunk.vectors.shape[1] != query.size:
            stored = chunk.vectors.shape[1]
            raise ConfigError(f"embedding: {query.size} values, the stored ones have {stored}")
        vectors = chunk.vectors.astype(np.float32)
        scores = vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        top = np.argsort(-scores)[:k]
        best += [Neighbour(float(scores[i]), *chunk.keys[i]) for i in top]
        best = sorted(best, key=lambda n: -n.similarity)[:k]
    return best
