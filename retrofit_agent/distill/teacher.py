"""The CLIP teacher through open_clip: frozen, in eval mode, image and text embeddings.

The same code path serves a real CLIP (`ViT-B-32` + `openai`, downloaded by open_clip on a
machine that can reach the hub), a local checkpoint file, and the small teachers this project
trains itself (an open_clip model-config JSON + checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from retrofit_agent.bundle.sections import OpenClipTeacher
from retrofit_agent.common.files import sha256_file
from retrofit_agent.distill.config import TeacherConfig
from retrofit_agent.errors import ConfigError, one_line

# Architectures as open_clip keeps them: one JSON model config each.
MODEL_CONFIGS = Path(__file__).with_name("model_configs")


class Teacher:
    def __init__(self, config: TeacherConfig, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if config.config_json is not None:
            if not config.config_json.is_file():
                raise ConfigError(f"teacher.config_json: {config.config_json}: no such file")
            open_clip.add_model_config(config.config_json)
        if config.architecture not in open_clip.list_models():
            raise ConfigError(
                f"teacher.architecture: {config.architecture!r} is not an open_clip model "
                "(give teacher.config_json for a custom one)"
            )
        weights = config.pretrained
        if config.checkpoint is not None:
            if not config.checkpoint.is_file():
                raise ConfigError(f"teacher.checkpoint: {config.checkpoint}: no such file")
            weights = str(config.checkpoint)
        self.identity = teacher_identity(config)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                config.architecture, pretrained=weights, device=self.device
            )
        except Exception as exc:  # torch/open_clip raise many types (unpickling, size mismatch)
            raise ConfigError(
                f"teacher: cannot load {config.architecture} weights {weights!r}: {one_line(exc)}"
            ) from None
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(config.architecture)
        self.logit_scale = float(model.logit_scale.exp())
        self.mean = tuple(getattr(model.visual, "image_mean", None) or OPENAI_DATASET_MEAN)
        self.std = tuple(getattr(model.visual, "image_std", None) or OPENAI_DATASET_STD)
        self.dim = int(open_clip.get_model_config(config.architecture)["embed_dim"])

    @torch.no_grad()
    def embed_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """L2-normalised embeddings [N, D] of BGR uint8 frames, with the teacher's preprocessing."""
        batch = torch.stack(
            [self.preprocess(Image.fromarray(np.ascontiguousarray(i[..., ::-1]))) for i in images]
        )
        return self.model.encode_image(batch.to(self.device), normalize=True).float()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings [N, D]."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float()


def teacher_identity(config: TeacherConfig) -> OpenClipTeacher:
    """What the manifest records: the name + tag, or the sha256 of the checkpoint (and of the
    model config) it was loaded from; the files exist (Teacher checks them first)."""
    return OpenClipTeacher(
        architecture=config.architecture,
        pretrained=config.pretrained,  # None with a checkpoint (TeacherConfig sees to it)
        checkpoint_sha256=None if config.checkpoint is None else sha256_file(config.checkpoint),
        config_json_sha256=None if config.config_json is None else sha256_file(config.config_json),
    )


def model_config(name: str) -> dict[str, Any]:
    """An open_clip model config shipped with the package (model_configs/<name>.json)."""
    return json.loads((MODEL_CONFIGS / f"{name}.json").read_text())


def random_teacher(out_dir: Path, name: str, config: dict[str, Any]) -> TeacherConfig:
    """An untrained CLIP of `config`, saved in OpenCLIP format: speed does not depend on the
    weights, and the plumbing tests need a teacher, not a good one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")
    open_clip.add_model_config(out_dir / f"{name}.json")
    return save_teacher(open_clip.create_model(name), config, out_dir, name)


def save_teacher(
    model: torch.nn.Module, config_json: dict[str, Any], out_dir: Path, name: str
) -> TeacherConfig:
    """Write an OpenCLIP-format checkpoint plus its model config; returns how to load them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(config_json, indent=2) + "\n")
    torch.save({"state_dict": model.state_dict()}, out_dir / f"{name}.pt")
    return TeacherConfig(
        architecture=name, checkpoint=out_dir / f"{name}.pt", config_json=out_dir / f"{name}.json"
    )
