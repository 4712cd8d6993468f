"""Small but real model bundles (contract 1) built without torch, for tests and measurements.

The student is a random-weight conv net written with onnx.helper (conv/relu stages, global
average pool, linear projection, L2 normalisation), quantized to INT8 (U8S8 QDQ) by
onnxruntime's static quantizer. Its labels (the label set tiny-labels.toml, with random text
embeddings) mean nothing; the plumbing around it is real, and the bundle is written by the
agent's one bundle writer (retrofit_agent.bundle.writer).

    python tests/helpers/bundle_factory.py DIR [--size 224] [--dim 512] [--calibrate IMAGES...]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from retrofit_agent.bundle.labelset import load_label_set
from retrofit_agent.bundle.manifest import (
    LABELS,
    STUDENT_FP32,
    STUDENT_INT8,
    Description,
    Resize,
)
from retrofit_agent.bundle.sections import NoTeacher, Quantization, StudentInfo
from retrofit_agent.bundle.writer import write_bundle
from retrofit_agent.frames.preprocess import Preprocessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LABEL_SET = Path(__file__).with_name("tiny-labels.toml")


def conv_net(size: int, dim: int, channels: Sequence[int], rng: np.random.Generator):
    """A random-weight conv net: input "image" [N,3,size,size] -> "embedding" [N,dim]."""
    nodes, inits = [], []
    previous, name = 3, "image"
    for i, width in enumerate(channels):
        weight = rng.normal(0, np.sqrt(2 / (previous * 9)), (width, previous, 3, 3))
        inits += [
            numpy_helper.from_array(weight.astype(np.float32), f"conv{i}.w"),
            numpy_helper.from_array(np.zeros(width, np.float32), f"conv{i}.b"),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [name, f"conv{i}.w", f"conv{i}.b"],
                [f"conv{i}"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            ),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]),
        ]
        previous, name = width, f"relu{i}"
    projection = rng.normal(0, 1 / np.sqrt(previous), (previous, dim)).astype(np.float32)
    inits.append(numpy_helper.from_array(projection, "proj.w"))
    nodes += [
        helper.make_node("GlobalAveragePool", [name], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj.w"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "student",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def dead_relu_net(size: int, dim: int, rng: np.random.Generator):
    """A student whose embedding is all zeros for bright frames, as a dead ReLU makes it:
    relu(-mean(image)) times a random row, so a frame brighter than the normalised mean
    (about 0.46 on [0, 1] with CLIP's statistics) gets a zero vector."""
    row = rng.normal(0, 1, (1, dim)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Neg", ["mean"], ["darkness"]),
        helper.make_node("Relu", ["darkness"], ["alive"]),
        helper.make_node("Reshape", ["alive", "column"], ["alive2"]),
        helper.make_node("MatMul", ["alive2", "row"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dead_relu",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [
            numpy_helper.from_array(np.array([-1, 1], np.int64), "column"),
            numpy_helper.from_array(row, "row"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Batches(CalibrationDataReader):
    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}


def build_bundle(
    path: Path,
    size: int = 64,
    dim: int = 32,
    channels: Sequence[int] = (8, 16),
    name: str = "tiny-test",
    calibration_images: Sequence[Path] = (),
    seed: int = 0,
    dead_on_bright: bool = False,
) -> Path:
    """Write a complete bundle to `path` and return it; `dead_on_bright`: its student is
    dead_relu_net instead of a conv net."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    fp32 = dead_relu_net(size, dim, rng) if dead_on_bright else conv_net(size, dim, channels, rng)
    with tempfile.TemporaryDirectory(prefix="bundle-factory-") as tmp:
        work = Path(tmp)
        onnx.save(fp32, work / STUDENT_FP32)
        preprocess = Preprocessor(size, size, "bicubic", CLIP_MEAN, CLIP_STD)
        if calibration_images:
            batches = [preprocess(cv2.imread(str(p))).copy() for p in calibration_images]
            calibration = f"{len(batches)} images: {', '.join(p.name for p in calibration_images)}"
        else:
            batches = [rng.normal(0, 1, (1, 3, size, size)).astype(np.float32) for _ in range(8)]
            calibration = "8 random normal tensors"
        quantize_static(
            str(work / STUDENT_FP32),
            str(work / STUDENT_INT8),
            _Batches(batches),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        label_set = load_label_set(LABEL_SET)
        text = rng.normal(0, 1, (len(label_set.entries()), dim))
        label_set.save_bank(text / np.linalg.norm(text, axis=1, keepdims=True), work / LABELS)
        description = Description(
            name=name,
            teacher=NoTeacher(),
            student=StudentInfo(
                architecture=f"random conv net {list(channels)} + linear, onnx.helper",
                params=int(sum(np.prod(t.dims) for t in fp32.graph.initializer)),
                built_by="tests/helpers/bundle_factory.py",
            ),
            size=size,
            resize=Resize(shortest_side=size, interpolation="bicubic"),
            mean=CLIP_MEAN,
            std=CLIP_STD,
            embedding_dim=dim,
            logit_scale=100.0,
            quantization=Quantization(mode="qdq_u8s8", per_channel=True, calibration=calibration),
        )
        files = {name: work / name for name in (STUDENT_FP32, STUDENT_INT8, LABELS)}
        write_bundle(path, description, files)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--name", default="random-test")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--calibrate", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    build_bundle(args.path, args.size, args.dim, args.channels, args.name, args.calibrate)
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
