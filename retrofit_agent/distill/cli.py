"""The `retrofit-distill` command line (contract 4, docs/contracts/command-line.md): the offline
half, torch only here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from retrofit_agent.distill.reports import QuantizeReport
from retrofit_agent.errors import RetrofitError

COMMANDS = {
    "train": "distil the teacher into the student (checkpoint.pt)",
    "export": "student checkpoint to ONNX, checked against torch (student.fp32.onnx)",
    "labels": "label-set TOML to labels.npz through the teacher's text tower",
    "quantize": "INT8 variants timed and compared with FP32; ships the best (student.int8.onnx)",
    "eval": "zero-shot top-1 of teacher and students on a labelled folder (eval.json, eval.png)",
    "all": "every step not done yet, then the model bundle",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrofit-distill", description="Distil a CLIP teacher into a small student."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    teacher = commands.add_parser("teacher", help="train a small CLIP teacher (--synthetic)")
    teacher.add_argument(
        "--synthetic",
        action="store_true",
        required=True,
        help="on generated colour-shape scenes (the only kind so far)",
    )
    teacher.add_argument("--out", type=Path, required=True, help="folder for config + checkpoint")
    teacher.add_argument("--steps", type=int, default=1500)
    teacher.add_argument("--batch-size", type=int, default=128)
    teacher.add_argument("--lr", type=float, default=1e-3)
    teacher.add_argument("--seed", type=int, default=0)
    synthetic = commands.add_parser(
        "synthetic", help="write synthetic images, eval sets, demo clip"
    )
    synthetic.add_argument("--out", type=Path, required=True)
    synthetic.add_argument("--images", type=int, default=4000, help="unlabelled training images")
    synthetic.add_argument("--per-class", type=int, default=30, help="eval images per class")
    synthetic.add_argument("--seed", type=int, default=0)
    for name, help_text in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--config", type=Path, required=True, help="run config (TOML)")
        command.add_argument("--out-dir", type=Path, help="override out_dir")
        if name in ("train", "all"):
            command.add_argument("--steps", type=int, help="override train.steps")
            command.add_argument("--batch-size", type=int, help="override train.batch_size")
            command.add_argument("--lr", type=float, help="override train.lr")
            command.add_argument("--device", help="override train.device (auto, cpu, cuda:N)")
        if name == "train":
            command.add_argument("--resume", action="store_true", help="continue the checkpoint")
        if name == "all":
            command.add_argument("--force", action="store_true", help="replace the bundle dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("teacher", "synthetic"):
        return synthetic_command(args)
    try:
        from retrofit_agent.distill.config import load_run_config

        overrides = {
            "out_dir": args.out_dir,
            "train.steps": getattr(args, "steps", None),
            "train.batch_size": getattr(args, "batch_size", None),
            "train.lr": getattr(args, "lr", None),
            "train.device": getattr(args, "device", None),
        }
        config = load_run_config(args.config, overrides)
        try:
            from retrofit_agent.distill import pipeline
        except ImportError as exc:
            raise RetrofitError(
                f"retrofit-distill needs the [distill] extra ({exc.name} is missing): "
                'pip install -e ".[distill]"'
            ) from None
        run(args, config, pipeline)
    except RetrofitError as exc:
        print(f"retrofit-distill: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def synthetic_command(args: argparse.Namespace) -> int:
    """`teacher --synthetic`: train the synthetic CLIP; `synthetic`: write its data sets."""
    from retrofit_agent.distill import synthetic

    generator = synthetic.SceneGenerator(seed=args.seed)
    if args.command == "synthetic":
        synthetic.write_images(generator, args.out / "train", args.images)
        synthetic.write_eval_folder(
            generator, args.out / "eval-held-out", args.per_class, "held_out"
        )
        synthetic.write_eval_folder(
            generator, args.out / "eval-seen", args.per_class // 5 or 1, "seen"
        )
        captions = synthetic.write_demo_clip(args.out / "demo.mp4", generator)
        print(
            f"{args.out}: train/ ({args.images}), eval-held-out/, eval-seen/, demo.mp4 "
            f"({', '.join(captions)})"
        )
        return 0
    from retrofit_agent.distill.synthetic_teacher import train_synthetic_teacher

    config, report = train_synthetic_teacher(
        args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    print(json.dumps(report, indent=2))
    print(
        f"teacher: checkpoint = {config.checkpoint}, config_json = {config.config_json}, "
        f"architecture = {config.architecture}"
    )
    return 0


def run(args: argparse.Namespace, config, pipeline) -> None:
    out = config.out_dir
    if args.command == "train":
        pipeline.train(config, resume=args.resume)
        print(f"checkpoint: {out / pipeline.CHECKPOINT}")
    elif args.command == "export":
        report = pipeline.run_export(config)
        print(f"{out / 'student.fp32.onnx'}: max abs diff to torch {report.max_abs_diff:.2e}")
    elif args.command == "labels":
        print(pipeline.run_labels(config, pipeline.Teacher(config.teacher)))
    elif args.command == "quantize":
        print(format_quantize(pipeline.run_quantize(config)))
    elif args.command == "eval":
        report = pipeline.run_eval(config, pipeline.Teacher(config.teacher))
        print(report.model_dump_json(include={"top1", "retention"}, indent=2))
    else:
        pipeline.run_all(config, force=args.force)


def format_quantize(report: QuantizeReport) -> str:
    lines = [
        f"{'mode':<16}{'ms':>8}{'x fp32':>8}{'cosine':>9}{'min':>8}{'top1 agree':>12}",
        f"{'fp32':<16}{report.fp32_latency_ms:>8.2f}{1:>8.2f}",
    ]
    for v in report.variants:
        agree = "-" if v.top1_agreement is None else f"{v.top1_agreement:.3f}"
        lines.append(
            f"{v.mode:<16}{v.latency_ms:>8.2f}{v.speedup_vs_fp32:>8.2f}"
            f"{v.cosine_mean:>9.4f}{v.cosine_min:>8.4f}{agree:>12}"
        )
    lines += [f"{f.mode:<16}failed: {f.error}" for f in report.failed]
    lines.append(f"selected {report.selected}: {report.reason}")
    return "\n".join(lines)
