"""Tiny OpenCLIP-format teachers and run configs for the distillation tests (random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip

from retrofit_agent.distill.config import RunConfig
from retrofit_agent.distill.teacher import save_teacher

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_teacher(directory: Path, name: str = "tiny-clip-test", embed_dim: int = 32):
    """A random-weight tiny CLIP saved as OpenCLIP config JSON + checkpoint."""
    config = {**TINY_CLIP, "embed_dim": embed_dim}
    json_path = directory / f"{name}.json"
    directory.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(config))
    open_clip.add_model_config(json_path)
    return save_teacher(open_clip.create_model(name), config, directory, name)


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
