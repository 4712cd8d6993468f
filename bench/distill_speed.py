"""Training throughput and the INT8 quantization report for a student, on this machine.

Random weights throughout (speed does not depend on them): a tiny OpenCLIP-format teacher with a
512-d embedding (as ViT-B/32's) is built, the student is trained for a few steps on real frames
(throughput from the run's log), exported, and every INT8 mode is timed and compared with FP32.

    python bench/distill_speed.py --backbone efficientnet_b3 --size 224 --out bench/results/effb3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retrofit_agent.distill.cli import format_quantize
from retrofit_agent.distill.config import RunConfig
from retrofit_agent.distill.pipeline import run_export, run_quantize
from retrofit_agent.distill.teacher import model_config, random_teacher
from retrofit_agent.distill.train import LOG, train

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_b3")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--video", type=Path, default=REPO.parent / "shared/data/video/solidWhiteRight.mp4"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    clip = {**model_config("tiny-clip"), "embed_dim": 512}
    teacher = random_teacher(args.out, "bench-clip", clip)
    config = RunConfig.model_validate(
        {
            "out_dir": args.out / "run",
            "teacher": teacher.model_dump(),
            "student": {"backbone": args.backbone, "image_size": args.size},
            "data": {"videos": [args.video], "video_stride": 3},
            "train": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "warmup_steps": 1,
                "log_every": 1,
                "checkpoint_every": args.steps,
            },
            "quantize": {
                "modes": ["qdq_u8s8", "qdq_s8s8", "qoperator_u8s8"],
                "calibration_frames": 32,
                "fidelity_frames": 32,
                "latency_runs": 30,
                "fallback": "best",
            },
        }
    )
    train(config)
    records = [json.loads(line) for line in (config.out_dir / LOG).read_text().splitlines()]
    steady = [r["images_per_s"] for r in records[1:]] or [records[0]["images_per_s"]]
    export = run_export(config)
    report = run_quantize(config)
    summary = {
        "backbone": args.backbone,
        "size": args.size,
        "batch_size": args.batch_size,
        "train_images_per_s": sum(steady) / len(steady),
        "export_max_abs_diff": export.max_abs_diff,
        "quantize": report.model_dump(mode="json"),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.backbone} @ {args.size}px: training {summary['train_images_per_s']:.1f} img/s "
        f"(batch {args.batch_size}, CPU), export max abs diff {export.max_abs_diff:.2e}"
    )
    print(format_quantize(report))


if __name__ == "__main__":
    main()
