"""An observation (contract 3, docs/contracts/observation.md): what is published for every
frame, and stored and uploaded for the frames the keep policy keeps (retrofit_agent.keep).

`(device_id, seq)` is the idempotency key end to end. The embedding travels as float16 bytes:
in SQLite as a BLOB, over ZeroMQ as its own message part, never inside the JSON.

Schema 2 added `reasons`, why a frame was kept (empty for a frame that was only published).
Schema 1 rows (written before the keep policy, when every frame was kept) are read as they
are, with `reasons` empty: a queue of schema 1 rows stays readable and uploadable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field

from retrofit_agent.common.strict import StrictModel

SCHEMA_VERSION = 2
EMBEDDING_DTYPE = np.float16
# Why a frame was kept, in this order when there are several (retrofit_agent.keep.policy).
REASONS = ("change", "heartbeat", "novel", "best", "every_frame")
Reason = Literal["change", "heartbeat", "novel", "best", "every_frame"]


class LabelScore(StrictModel):
    group: str
    label: str
    score: float = Field(allow_inf_nan=False)  # JSON has no NaN: it would be stored as null


class ModelRef(StrictModel):
    name: str
    manifest_sha256: str


class Observation(StrictModel):
    # In full JSON (queue export, upload) the embedding bytes are base64.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    schema_version: int = SCHEMA_VERSION
    device_id: str
    seq: int
    captured_utc: datetime
    source: str
    frame_index: int
    model: ModelRef
    labels: list[LabelScore]
    top: dict[str, LabelScore]
    latency_ms: dict[str, float]
    reasons: list[Reason] = Field(default_factory=list)  # schema 2; empty: published only
    embedding: bytes

    def header_json(self) -> bytes:
        """The observation as JSON without the embedding (it travels as its own part)."""
        return self.model_dump_json(exclude={"embedding"}).encode()

    def embedding_array(self) -> np.ndarray:
        return np.frombuffer(self.embedding, dtype=EMBEDDING_DTYPE)


def encode_embedding(embedding: np.ndarray) -> bytes:
    return embedding.astype(EMBEDDING_DTYPE).tobytes()
