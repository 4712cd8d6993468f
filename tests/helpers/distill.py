"""Tiny OpenCLIP-format teachers and run configs for the distillation tests (random weights)."""

from __future__ import annotations

from pathlib import Path

from retrofit_agent.distill.config import RunConfig
from retrofit_agent.distill.teacher import model_config, random_teacher


def make_teacher(directory: Path, name: str = "tiny-clip-test", embed_dim: int = 32):
    """A random-weight tiny CLIP (model_configs/tiny-clip.json) as OpenCLIP config + checkpoint."""
    return random_teacher(directory, name, {**model_config("tiny-clip"), "embed_dim": embed_dim})


def tiny_run(out_dir: Path, teacher, video: Path, **sections) -> RunConfig:
    """A run config: mobilenetv3_small_050 at 64 px on every 8th frame of `video`."""
    data = {
        "out_dir": out_dir,
        "teacher": teacher.model_dump(),
        "student": {"backbone": "mobilenetv3_small_050", "hidden": [64], "image_size": 64},
        "data": {"videos": [video], "video_stride": 8},
        "losses": {"crossmodal": 1.0, "prompts": ["a road", "a car", "night", "rain"]},
        "train": {
            "steps": 6,
            "batch_size": 8,
            "warmup_steps": 2,
            "checkpoint_every": 3,
            "log_every": 1,
        },
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return RunConfig.model_validate(data)
