"""The student on onnxruntime's CPU provider: preprocessed frames in, image embeddings out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from retrofit_agent.errors import BundleError, one_line

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


def session_options(intra_op_threads: int = 1, inter_op_threads: int = 1) -> ort.SessionOptions:
    """The agent's session settings; the offline benchmarks time models with these too."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings would flood journald
    return options


class Embedder:
    """An onnxruntime session whose input and output shapes are checked against the manifest."""

    def __init__(
        self,
        model_path: Path,
        size: int,
        embedding_dim: int,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        options = session_options(intra_op_threads, inter_op_threads)
        try:
            self.session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise BundleError(
                f"{model_path}: onnxruntime cannot load the model: {one_line(exc)}"
            ) from None
        self._check_signature(model_path, size, embedding_dim)

    def _check_signature(self, model_path: Path, size: int, embedding_dim: int) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise BundleError(
                f"{model_path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"found inputs {sorted(inputs)} and outputs {sorted(outputs)}"
            )
        in_shape = inputs[INPUT_NAME].shape
        if len(in_shape) != 4 or list(in_shape[1:]) != [3, size, size]:
            raise BundleError(
                f"{model_path}: input {INPUT_NAME!r} has shape {in_shape}, "
                f"manifest says [N, 3, {size}, {size}]"
            )
        out_shape = outputs[OUTPUT_NAME].shape
        if len(out_shape) != 2 or out_shape[1] != embedding_dim:
            raise BundleError(
                f"{model_path}: output {OUTPUT_NAME!r} has shape {out_shape}, "
                f"manifest says embedding_dim {embedding_dim}"
            )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings [N, D] float32 for a preprocessed batch [N, 3, size, size]."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
