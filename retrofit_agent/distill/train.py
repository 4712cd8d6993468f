"""The distillation loop: one readable loop in the spirit of nanoGPT.

AdamW, linear warmup then cosine decay, gradient clipping, bfloat16 autocast on CUDA,
checkpoints every N steps (and at the end) that `--resume` continues exactly, a progress bar,
and a JSON line per logged step in <out_dir>/log.jsonl. Under `torchrun` it trains data-parallel
(DDP: gloo on CPU, nccl on GPU); rank 0 builds the teacher cache, writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from retrofit_agent.bundle.labelset import load_label_set
from retrofit_agent.common.files import replacing
from retrofit_agent.common.strict import first_error
from retrofit_agent.distill.config import RunConfig
from retrofit_agent.distill.data import Batches, FrameCache, collect_items
from retrofit_agent.distill.losses import DistillLoss
from retrofit_agent.distill.spec import StudentSpec
from retrofit_agent.distill.student import Student
from retrofit_agent.distill.teacher import Teacher
from retrofit_agent.errors import ConfigError

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
# what a run must share with a checkpoint to resume it
RESUMABLE = ("backbone", "dim", "hidden", "image_size")


@dataclass(frozen=True)
class Checkpoint:
    """checkpoint.pt: the training state after `step` steps and the spec of its student."""

    step: int
    spec: StudentSpec
    student: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None


def cosine_lr(step: int, steps: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (lr - min_lr)


def lr_at(step: int, config: RunConfig) -> float:
    t = config.train
    return cosine_lr(step, t.steps, t.warmup_steps, t.lr, t.min_lr)


def student_spec(config: RunConfig, teacher: Teacher) -> StudentSpec:
    s = config.student
    return StudentSpec(
        backbone=s.backbone,
        dim=teacher.dim,
        hidden=s.hidden,
        dropout=s.dropout,
        image_size=s.image_size,
        shortest_side=s.shortest_side or s.image_size,
        interpolation=s.interpolation,
        mean=teacher.mean,
        std=teacher.std,
        teacher=teacher.identity,
        teacher_logit_scale=teacher.logit_scale,
    )


def crossmodal_prompts(config: RunConfig) -> list[str]:
    """The cross-modal text bank: the configured prompts, else every prompt of the label set."""
    if config.losses.prompts:
        return config.losses.prompts
    return load_label_set(config.labels.label_set).prompts()


def build_student(spec: StudentSpec, backbone_weights: Path | None = None) -> Student:
    return Student(spec.backbone, spec.dim, spec.hidden, spec.dropout, backbone_weights)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising the process group under torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and convolutions, not biases and norm scales (as nanoGPT does)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def prepare_cache(config: RunConfig, teacher: Teacher, spec: StudentSpec, rank: int):
    """Rank 0 builds (or reuses) the teacher cache; the other ranks wait, then open it."""
    preprocessor = spec.preprocessor()
    fingerprint = {
        # without the unset fields: the identity as it was before it was typed, so caches
        # built then (hours of teacher time on a large data set) are still recognised
        "teacher": teacher.identity.model_dump(mode="json", exclude_none=True),
        "size": spec.image_size,
        "shortest_side": spec.shortest_side,
        "interpolation": spec.interpolation,
    }
    if rank == 0:
        items = collect_items(config.data)
        with tqdm(total=len(items), desc="teacher cache", unit="img", leave=False) as bar:
            cache = FrameCache.build(
                config.cache_dir, items, teacher.embed_images, preprocessor, fingerprint, bar.update
            )
    if dist.is_initialized():
        dist.barrier()
    return cache if rank == 0 else FrameCache(config.cache_dir)


def train(config: RunConfig, resume: bool = False) -> Student:
    """Distil the configured teacher into the student (also saved in out_dir/checkpoint.pt)."""
    rank, world, local_rank = _distributed()
    device = _device(config.train.device, local_rank)
    torch.manual_seed(config.train.seed)
    out_dir = config.out_dir
    checkpoint_path = out_dir / CHECKPOINT
    out_dir.mkdir(parents=True, exist_ok=True)

    teacher = Teacher(config.teacher, device)
    spec = student_spec(config, teacher)
    cache = prepare_cache(config, teacher, spec, rank)
    text = teacher.embed_texts(crossmodal_prompts(config)) if config.losses.crossmodal else None
    criterion = DistillLoss(config.losses, text, teacher.logit_scale)
    del teacher  # only its embeddings are needed from here on

    student = build_student(spec, config.student.backbone_weights).to(device)
    optimizer = torch.optim.AdamW(
        _param_groups(student, config.train.weight_decay), lr=config.train.lr, betas=(0.9, 0.95)
    )
    start = 0
    if resume:
        start = _restore(checkpoint_path, spec, student, optimizer)
    model = DistributedDataParallel(student) if world > 1 else student
    batches = Batches(
        cache,
        config.train.batch_size,
        spec.mean,
        spec.std,
        config.data.color_jitter,
        config.data.flip,
        config.train.seed,
        rank,
        world,
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.train.amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    log = open(out_dir / LOG, "a") if rank == 0 else None  # noqa: SIM115 - closed below
    bar = tqdm(
        range(start, config.train.steps),
        initial=start,
        total=config.train.steps,
        desc="distill",
        disable=rank != 0,
    )
    model.train()
    window_start, window_images = time.perf_counter(), 0
    for step in bar:
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, targets = (t.to(device, non_blocking=True) for t in batches(step))
        with autocast:
            embeddings = model(images)
        loss, parts = criterion(embeddings.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        window_images += len(images) * world
        done = step + 1
        if log is not None and (done % config.train.log_every == 0 or done == config.train.steps):
            elapsed = time.perf_counter() - window_start
            record = {
                "step": done,
                "loss": float(loss.detach()),
                **parts,
                "lr": lr,
                "images_per_s": window_images / elapsed,
                "unix_time": time.time(),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.1f}")
            window_start, window_images = time.perf_counter(), 0
        if rank == 0 and (done % config.train.checkpoint_every == 0 or done == config.train.steps):
            _save(checkpoint_path, done, spec, student, optimizer, config)
    if log is not None:
        log.close()
    if dist.is_initialized():
        # DDP broadcasts rank 0's buffers (BatchNorm statistics) before each forward; do it once
        # more so every rank ends with the weights rank 0 saved.
        for buffer in student.buffers():
            dist.broadcast(buffer, 0)
        dist.barrier()
        dist.destroy_process_group()
    return student


def _save(path: Path, step: int, spec: StudentSpec, student, optimizer, config: RunConfig) -> None:
    state = {
        "step": step,
        "spec": spec.model_dump(mode="json"),  # plain data: loads without this package's classes
        "student": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "config": config.model_dump(mode="json"),
    }
    with replacing(path) as tmp:  # a crash mid-save leaves the previous checkpoint intact
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at `path`, its spec validated; ConfigError naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"{path}: no checkpoint to resume from")
    state = torch.load(path, map_location="cpu", weights_only=False)
    try:
        spec = StudentSpec.model_validate(state["spec"])
    except ValidationError as exc:
        raise ConfigError(f"{path}: spec: {first_error(exc)}") from None
    return Checkpoint(
        step=state["step"],
        spec=spec,
        student=state["student"],
        optimizer=state["optimizer"],
        rng=state["rng"],
        cuda_rng=state["cuda_rng"],
    )


def _restore(path: Path, spec: StudentSpec, student, optimizer) -> int:
    state = load_checkpoint(path)
    for key in RESUMABLE:
        had, has = getattr(state.spec, key), getattr(spec, key)
        if had != has:
            raise ConfigError(f"{path}: checkpoint has {key} {had!r}, this run {has!r}")
    student.load_state_dict(state.student)
    optimizer.load_state_dict(state.optimizer)
    torch.set_rng_state(state.rng)
    if state.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda_rng)
    return state.step
