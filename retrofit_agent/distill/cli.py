"""The `retrofit-distill` command line (DESIGN.md contract 4): the offline half, torch only here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrofit_agent.errors import RetrofitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrofit-distill", description="Distil a CLIP teacher into a small student."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="distil the teacher into the student")
    train.add_argument("--config", type=Path, required=True, help="run config (TOML)")
    train.add_argument("--out-dir", type=Path, help="override out_dir")
    train.add_argument("--steps", type=int, help="override train.steps")
    train.add_argument("--batch-size", type=int, help="override train.batch_size (per process)")
    train.add_argument("--lr", type=float, help="override train.lr")
    train.add_argument("--device", help="override train.device (auto, cpu, cuda, cuda:N)")
    train.add_argument("--resume", action="store_true", help="continue from out_dir's checkpoint")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from retrofit_agent.distill.config import load_run_config

        overrides = {
            "out_dir": args.out_dir,
            "train.steps": args.steps,
            "train.batch_size": args.batch_size,
            "train.lr": args.lr,
            "train.device": args.device,
        }
        config = load_run_config(args.config, overrides)
        try:
            from retrofit_agent.distill.train import CHECKPOINT, train
        except ImportError as exc:
            raise RetrofitError(
                f"retrofit-distill needs the [distill] extra ({exc.name} is missing): "
                'pip install -e ".[distill]"'
            ) from None
        train(config, resume=args.resume)
        print(f"checkpoint: {config.out_dir / CHECKPOINT}")
    except RetrofitError as exc:
        print(f"retrofit-distill: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
