"""One frame into one observation: preprocess, student, label scores, with what the bundle holds.

`Pipeline` is loaded from the configured bundle and reloaded in place on SIGHUP. Frames arrive
with their model input already made on the reader thread (`prepare`), so the inference thread
only infers and scores. A prepared input records the preprocessing that made it (its `spec`):
after a reload to a bundle with another input size or normalisation, the few frames prepared
for the old bundle are made again here instead of reaching the new student.

A student can output a degenerate embedding: all zeros (a dead ReLU on a bright frame) or
non-finite values. Normalised, it would make every score NaN, stored as null, which
`queue export` and the ingest server refuse; `embed` returns None for it instead, and the
frame is counted and skipped (`RunStats.degenerate`).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import time

import numpy as np

from retrofit_agent.bundle.labels import load_label_bank
from retrofit_agent.bundle.manifest import load_bundle
from retrofit_agent.config import AgentConfig
from retrofit_agent.errors import BundleError
from retrofit_agent.frames.capture import Frame, Prepared
from retrofit_agent.frames.embedder import Embedder
from retrofit_agent.frames.preprocess import Preprocessor
from retrofit_agent.observation import LabelScore, ModelRef, Observation, encode_embedding


class Pipeline:
    """The verified bundle, loaded: preprocessors, student session and label bank."""

    def __init__(self, config: AgentConfig) -> None:
        self.inline_preprocessed = 0  # frames whose input had to be made on this thread
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

        def preprocessor() -> Preprocessor:
            m = manifest
            resize = m.resize
            return Preprocessor(m.size, resize.shortest_side, resize.interpolation, m.mean, m.std)

        self.device_id = config.device_id
        self.bundle = bundle
        self.embedder = embedder
        self.bank = bank
        # One per thread: a Preprocessor's buffers serve one thread at a time.
        self.preprocess = preprocessor()
        self._reader_preprocess = preprocessor()
        self.model_ref = ModelRef(name=manifest.name, manifest_sha256=bundle.manifest_sha256)
        release_free_heap()

    def prepare(self, image: np.ndarray, spare: np.ndarray | None) -> Prepared:
        """The frame's model input, made on the reader thread (capture's `prepare`) into
        `spare` when it still fits this bundle's input."""
        preprocess = self._reader_preprocess  # read once: a reload replaces it whole
        return Prepared(preprocess.prepare(image, spare), preprocess.spec)

    def embed(self, frame: Frame, timings: dict[str, float]) -> np.ndarray | None:
        """The frame's L2-normalised embedding [D], None if the student's is degenerate (zero
        or not finite); stage times (ms) are added to `timings`."""
        t0 = time.perf_counter()
        ready = frame.prepared is not None and frame.prepared.spec == self.preprocess.spec
        if ready:
            batch = frame.prepared.input
        else:
            batch = self.preprocess(frame.image)
            self.inline_preprocessed += 1
        t1 = time.perf_counter()
        embedding = self.embedder(batch)[0]
        norm = float(np.linalg.norm(embedding.astype(np.float64)))  # float32 could overflow
        t2 = time.perf_counter()
        timings["preprocess"] = frame.prepare_ms if ready else (t1 - t0) * 1e3
        timings["inference"] = (t2 - t1) * 1e3
        if not (0.0 < norm < math.inf):  # zero, or some value infinite or NaN
            return None
        embedding /= norm
        return embedding

    def observe(
        self,
        frame: Frame,
        embedding: np.ndarray,
        source: str,
        seq: int,
        timings: dict[str, float],
    ) -> Observation:
        """The observation of `frame`, whose `embed`ding the store gave `seq`."""
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
