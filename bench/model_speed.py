"""Model speed: the bundle's student against a CLIP ViT-B/32 image tower, in one interleaved run.

The command line: it builds the models, times them with retrofit_agent.distill.speed (one
worker process per model, taking turns in random order; FLOPs against a matmul peak; ratios
over the CLIP tower) and writes the report with retrofit_agent.distill.speed_report.

Models (random weights: speed does not depend on them):
- the bundle's student: student.fp32.onnx when present, the shipped student.int8.onnx, and
  every INT8 mode rebuilt from the FP32 graph by retrofit_agent.distill.quantize;
- efficientnet_b3, mobilenetv3_large_100 and resnet10t students (retrofit_agent.distill.student
  at 224 px, exported and quantized by the same code as a trained student), so the seed's is
  compared;
- the CLIP ViT-B/32 image tower (open_clip, pretrained=None), FP32 and every INT8 mode.
Built models are kept in --work and reused; the students are also written there as bundles
(with the given bundle's label bank) for `retrofit-agent bench --model`.

    python bench/model_speed.py --model models/default --out bench/results
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from retrofit_agent.bundle.manifest import STUDENT_FP32, STUDENT_INT8, load_bundle
from retrofit_agent.distill.speed import (
    CLIP,
    CLIP_MEAN,
    CLIP_STD,
    PEAK_SIZES,
    Model,
    graph_flops,
    make_report,
    matmul_peak,
    measure,
    write_student_bundle,
)
from retrofit_agent.distill.speed_report import markdown, write_report

REPO = Path(__file__).resolve().parent.parent
STUDENT_SIZE = 224  # the timm students and the CLIP tower: CLIP's input size


def calibration_frames(video: Path, count: int, bundle: Path | None = None) -> np.ndarray:
    """`count` real frames spread over the video, preprocessed as the bundle (or CLIP) wants."""
    import cv2

    from retrofit_agent.frames.preprocess import Preprocessor

    if bundle is not None:
        m = load_bundle(bundle).manifest
        pre = Preprocessor(m.size, m.resize.shortest_side, m.resize.interpolation, m.mean, m.std)
    else:
        pre = Preprocessor(STUDENT_SIZE, STUDENT_SIZE, "bicubic", CLIP_MEAN, CLIP_STD)
    capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, total - 1, count).round().astype(int))
    frames = []
    for index in range(total):
        ok, image = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(pre(image).copy())
    capture.release()
    return np.concatenate(frames)


def quantized(fp32: Path, work: Path, modes: list[str], calibration: np.ndarray) -> dict:
    """Every INT8 mode of `fp32` the distillation's quantizer can build, built once into
    `work`; a mode that fails is left out (and said so)."""
    from retrofit_agent.distill.config import QuantizeConfig
    from retrofit_agent.distill.quantize import build_variants

    missing = [m for m in modes if not (work / f"{m}.onnx").is_file()]
    if missing:
        config = QuantizeConfig(modes=missing, calibration_frames=len(calibration))
        _, failed = build_variants(fp32, work, calibration, config)
        (work / "prepared.onnx").unlink()
        for failure in failed:
            print(f"{fp32}: {failure.mode} left out: {failure.error}", file=sys.stderr)
    return {mode: work / f"{mode}.onnx" for mode in modes if (work / f"{mode}.onnx").is_file()}


def exported(work: Path, build) -> Path:
    """`work/fp32.onnx`, exported from the torch module `build()` returns unless already there."""
    from retrofit_agent.distill.export import export_onnx

    path = work / "fp32.onnx"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        export_onnx(build(), STUDENT_SIZE, path)
    return path


def student_module(backbone: str, dim: int):
    from retrofit_agent.distill.student import Student

    return Student(backbone, dim, hidden=(1024,), dropout=0.0)


def clip_module():
    """The ViT-B/32 image tower, L2-normalised like a student (the contract's `embedding`)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = open_clip.create_model("ViT-B-32", pretrained=None).visual

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.visual(images), dim=-1)

    return Tower()


def family_models(family: str, fp32: Path, variants: dict[str, Path]) -> list[Model]:
    flops = graph_flops(fp32)
    models = [Model(family, "fp32", fp32, flops, "fp32")]
    return models + [Model(family, mode, path, flops, "int8") for mode, path in variants.items()]


def build_models(args: argparse.Namespace) -> list[Model]:
    """The bundle's student, the timm students, CLIP and the matmul peaks; cached in --work."""
    bundle = load_bundle(args.model)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    models = [
        matmul_peak(work / f"peak_{precision}_{n}.onnx", precision == "int8", n)
        for precision in ("fp32", "int8")
        for n in PEAK_SIZES
    ]
    family = bundle.manifest.name
    frames = calibration_frames(args.video, args.calibration_frames, bundle.path)
    shipped = bundle.path / STUDENT_INT8
    if (bundle.path / STUDENT_FP32).is_file():
        fp32 = bundle.path / STUDENT_FP32
        cache = work / f"bundle-{family}-{bundle.manifest_sha256[:12]}"
        cache.mkdir(exist_ok=True)
        models += family_models(family, fp32, quantized(fp32, cache, args.modes, frames))
        flops = models[-1].flops
    else:
        flops = graph_flops(shipped)
    models.append(Model(family, "shipped_int8", shipped, flops, "int8"))

    dim = bundle.manifest.embedding_dim
    frames = calibration_frames(args.video, args.calibration_frames)
    for backbone in args.students:
        cache = work / f"{backbone}-{dim}d"  # the head's width follows the bundle's labels
        fp32 = exported(cache, lambda b=backbone: student_module(b, dim))
        variants = quantized(fp32, cache, args.modes, frames)
        models += family_models(backbone, fp32, variants)
        calibration = f"{len(frames)} frames of {args.video.name}"
        out = work / "bundles" / cache.name
        write_student_bundle(out, backbone, STUDENT_SIZE, fp32, variants, calibration, bundle)
    fp32 = exported(work / CLIP, clip_module)
    return models + family_models(CLIP, fp32, quantized(fp32, work / CLIP, args.modes, frames))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument(
        "--video", type=Path, default=REPO.parent / "shared/data/video/solidWhiteRight.mp4"
    )
    parser.add_argument(
        "--students", nargs="*", default=["efficientnet_b3", "mobilenetv3_large_100", "resnet10t"]
    )
    parser.add_argument(
        "--modes", nargs="+", default=["qdq_u8s8", "qdq_s8s8", "qoperator_u8s8", "dynamic_u8"]
    )
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per turn")
    parser.add_argument("--calibration-frames", type=int, default=16)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--name", default="model_speed", help="file name of the results")
    args = parser.parse_args()

    logging.disable(logging.WARNING)  # the quantizer warns per tensor about LayerNorm axes
    models = build_models(args)
    measured = measure(models, args.threads, args.rounds, args.runs)
    command = " ".join(["python", "bench/model_speed.py", *sys.argv[1:]])
    bundle = load_bundle(args.model).manifest.name
    report = make_report(models, measured, args.threads, bundle, command)
    write_report(report, args.out, args.name)
    print(markdown(report))


if __name__ == "__main__":
    main()
