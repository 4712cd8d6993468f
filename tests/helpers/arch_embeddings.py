"""A bundle's FP32 and INT8 embeddings of given frames, computed the same way on any machine.

The parity test runs this in-process on the host and, as a script, under the emulated aarch64
python, then compares the two:

    python tests/arch_embeddings.py BUNDLE FRAMES.npy OUT.npz
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

from retrofit_agent.bundle.manifest import STUDENT_FP32
from retrofit_agent.config import load_config
from retrofit_agent.frames.embedder import Embedder
from retrofit_agent.frames.pipeline import Pipeline


def embed_frames(bundle: Path, frames: np.ndarray) -> dict[str, np.ndarray]:
    """The preprocessed "inputs" [N,3,S,S] and their embeddings (see `embed_inputs`)."""
    pipeline = Pipeline(load_config(None, environ={}, overrides={"model": bundle}))
    inputs = np.concatenate([pipeline.preprocess(frame).copy() for frame in frames])
    return {"inputs": inputs, **embed_inputs(bundle, inputs)}


def embed_inputs(bundle: Path, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """L2-normalised "fp32" and "int8" embeddings [N,D] of preprocessed inputs, one at a time."""
    pipeline = Pipeline(load_config(None, environ={}, overrides={"model": bundle}))
    manifest = pipeline.bundle.manifest
    fp32 = Embedder(Path(bundle) / STUDENT_FP32, manifest.size, manifest.embedding_dim)
    result = {"machine": np.array(platform.machine())}
    for kind, embedder in (("fp32", fp32), ("int8", pipeline.embedder)):
        embeddings = np.concatenate([embedder(batch[None]) for batch in inputs])
        result[kind] = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return result


if __name__ == "__main__":
    bundle, frames, out = map(Path, sys.argv[1:4])
    np.savez(out, **embed_frames(bundle, np.load(frames)))
