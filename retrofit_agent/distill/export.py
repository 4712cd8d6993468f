"""Student checkpoint to ONNX (contract 1: input `image`, output `embedding`, dynamic batch).

The exported graph keeps the student's L2 normalisation, and is checked against torch on real
cached frames: the largest absolute difference is reported and must stay under a bound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from retrofit_agent.distill.reports import ExportReport
from retrofit_agent.distill.student import Student
from retrofit_agent.errors import BundleError
from retrofit_agent.frames.embedder import INPUT_NAME, OUTPUT_NAME, session_options


def export_onnx(student: torch.nn.Module, size: int, path: Path, opset: int = 17) -> None:
    """Any image tower [N,3,size,size] -> [N,D] (a Student; the benchmark's CLIP tower too)."""
    student = student.eval()
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        student,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
        opset_version=opset,
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, stable graphs for ORT
    )


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A session set up as the agent's, so timings and outputs are the camera's."""
    options = session_options(threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_embeddings(path: Path, inputs: np.ndarray, threads: int = 1) -> np.ndarray:
    """Embeddings [N, D] of normalised inputs [N, 3, S, S], one frame at a time (as deployed)."""
    session = ort_session(path, threads)
    return np.concatenate(
        [session.run([OUTPUT_NAME], {INPUT_NAME: inputs[i : i + 1]})[0] for i in range(len(inputs))]
    )


def check_parity(student: Student, path: Path, inputs: np.ndarray, bound: float) -> ExportReport:
    """Torch and onnxruntime embeddings of the same inputs; raises if they differ by > bound."""
    with torch.no_grad():
        expected = student.eval()(torch.from_numpy(inputs)).numpy()
    actual = onnx_embeddings(path, inputs)
    diff = float(np.abs(expected - actual).max())
    if diff > bound:
        raise BundleError(f"{path}: ONNX differs from torch by {diff:.2e} (bound {bound:.0e})")
    return ExportReport(frames=len(inputs), max_abs_diff=diff, bound=bound)
