"""Train a small CLIP on synthetic scenes, saved in OpenCLIP format (config JSON + checkpoint).

Every later step loads it through exactly the same teacher path as a real CLIP
(retrofit_agent.distill.teacher.Teacher with `checkpoint` + `config_json`), so the whole
distillation pipeline is exercised on a teacher whose zero-shot ability is real and measurable:
top-1 over all colour-shape classes on combinations it never saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from tqdm import tqdm

from retrofit_agent.distill.config import TeacherConfig
from retrofit_agent.distill.synthetic import (
    SceneGenerator,
    all_combinations,
    class_name,
    single_objects,
)
from retrofit_agent.distill.teacher import Teacher, model_config, save_teacher
from retrofit_agent.distill.train import cosine_lr

NAME = "synthetic-clip"
# model_configs/synthetic-clip.json: a timm ResNet-10 image tower (random init) and a 3-layer
# text transformer. A small ViT (4 layers, width 128, 8 px patches) was tried first: after 1000
# steps it named every colour but guessed shapes at chance (held-out top-1 18%); this tower
# reached 31% after 150 steps on the same data, so the CPU budget goes further with it.
ARCHITECTURE = model_config(NAME)
PROMPT = "a photo of a {}."


def _images(scenes, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """BGR uint8 scenes to normalised RGB tensors (the teacher's own preprocessing at 64 px)."""
    batch = np.stack([s.image[..., ::-1] for s in scenes]).astype(np.float32) / 255.0
    return (torch.from_numpy(batch).permute(0, 3, 1, 2) - mean) / std


def zero_shot_top1(
    embed_images: Callable[[list[np.ndarray]], torch.Tensor],
    embed_texts: Callable[[list[str]], torch.Tensor],
    generator: SceneGenerator,
    split: str,
    per_class: int,
) -> float:
    """Top-1 over all colour-shape classes on `per_class` single-object scenes per combination."""
    classes = all_combinations()
    text = embed_texts([PROMPT.format(class_name(*c)) for c in classes])
    scenes = list(single_objects(generator, split, per_class))
    correct = 0
    for i in range(0, len(scenes), 64):
        chunk = scenes[i : i + 64]
        predicted = (embed_images([s.image for s in chunk]) @ text.T).argmax(dim=1)
        truth = [classes.index((s.things[0].colour, s.things[0].shape)) for s in chunk]
        correct += int((predicted == torch.tensor(truth)).sum())
    return correct / len(scenes)


def train_synthetic_teacher(
    out_dir: Path,
    architecture: dict[str, Any] = ARCHITECTURE,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    eval_per_class: int = 40,
) -> tuple[TeacherConfig, dict[str, Any]]:
    """Contrastive training on generated pairs; returns how to load the teacher and a report."""
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{NAME}.json"
    config_path.write_text(json.dumps(architecture, indent=2) + "\n")
    open_clip.add_model_config(config_path)
    model = open_clip.create_model(NAME)
    tokenizer = open_clip.get_tokenizer(NAME)
    generator = SceneGenerator(architecture["vision_cfg"]["image_size"], seed=seed)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    loss_fn = open_clip.ClipLoss()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98), eps=1e-6,
    )  # fmt: skip
    warmup = max(1, steps // 20)
    started = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc="synthetic teacher")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, warmup, lr, lr / 50)
        scenes = list(generator.scenes(batch_size, start=step * batch_size))
        images = _images(scenes, mean, std)
        tokens = tokenizer([s.caption for s in scenes])
        image_features, text_features, logit_scale = model(images, tokens)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - started
    teacher_config = save_teacher(model, architecture, out_dir, NAME)
    teacher = Teacher(teacher_config)  # measured through the same path every later step uses
    report = {
        "steps": steps,
        "batch_size": batch_size,
        "seconds": seconds,
        "images_per_s": steps * batch_size / seconds,
        "classes": len(all_combinations()),
        "chance": 1 / len(all_combinations()),
        "held_out": sorted(class_name(*c) for c in generator.held_out),
        "top1_held_out": zero_shot_top1(
            teacher.embed_images, teacher.embed_texts, generator, "held_out", eval_per_class
        ),
        "top1_seen": zero_shot_top1(
            teacher.embed_images, teacher.embed_texts, generator, "seen", eval_per_class // 4
        ),
        "final_loss": float(loss.detach()),
    }
    (out_dir / "teacher.json").write_text(json.dumps(report, indent=2) + "\n")
    return teacher_config, report
