"""Training data: unlabelled images and video frames, cached once with their teacher embeddings.

Every item (an image file, or frame N of a video) is decoded once. The cache holds two
memory-mapped arrays: the student's input crop (uint8, cut by the agent's own Preprocessor, so
training sees the pixels the camera will) and the teacher's embedding of the item. The teacher
therefore runs once per image, not once per epoch; epochs read the memory map. Batches are a
pure function of (seed, step, rank), which makes `--resume` exact and DDP shards disjoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from retrofit_agent.distill.config import DataConfig
from retrofit_agent.distill.spec import StudentSpec
from retrofit_agent.errors import ConfigError, SourceError
from retrofit_agent.frames.capture import IMAGE_SUFFIXES
from retrofit_agent.frames.preprocess import Preprocessor

CACHE_BATCH = 32


@dataclass(frozen=True)
class Item:
    """An image file, or one frame of a video."""

    path: Path
    frame: int | None = None

    @property
    def key(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path}#{self.frame}"


def collect_items(config: DataConfig) -> list[Item]:
    """Every image under the configured folders and every `video_stride`-th video frame."""
    items: list[Item] = []
    for folder in config.images:
        if not folder.is_dir():
            raise ConfigError(f"data.images: {folder}: no such folder")
        items += [Item(f) for f in sorted(folder.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    for video in config.videos:
        capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        if count <= 0:
            raise SourceError(f"data.videos: {video}: not a readable video")
        items += [Item(video, i) for i in range(0, count, config.video_stride)]
    if not items:
        raise ConfigError("data: no training images (data.images and data.videos are empty)")
    return items


def read_items(items: Sequence[Item]) -> Iterator[tuple[Item, np.ndarray]]:
    """Decode items in order; a video is read sequentially, keeping only the wanted frames."""
    i = 0
    while i < len(items):
        item = items[i]
        if item.frame is None:
            image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"{item.path}: not a readable image")
            yield item, image
            i += 1
            continue
        wanted = {}
        while i < len(items) and items[i].path == item.path and items[i].frame is not None:
            wanted[items[i].frame] = items[i]
            i += 1
        capture = cv2.VideoCapture(str(item.path), cv2.CAP_FFMPEG)
        index, last = 0, max(wanted)
        while index <= last:
            ok, image = capture.read()
            if not ok:
                raise SourceError(f"{item.path}: video ends at frame {index}, before {last}")
            if index in wanted:
                yield wanted[index], image
            index += 1
        capture.release()


class FrameCache:
    """Student crops [N,S,S,3] uint8 (BGR) and teacher embeddings [N,D] float32 on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        index = json.loads((self.directory / "index.json").read_text())
        self.keys: list[str] = index["keys"]
        self.fingerprint: dict[str, Any] = index["fingerprint"]
        self.crops = np.load(self.directory / "crops.npy", mmap_mode="r")
        self.teacher = np.load(self.directory / "teacher.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def build(
        cls,
        directory: Path,
        items: Sequence[Item],
        embed: Callable[[list[np.ndarray]], torch.Tensor],
        preprocessor: Preprocessor,
        fingerprint: dict[str, Any],
        progress: Callable[[int], None] = lambda n: None,
    ) -> FrameCache:
        """Reuse the cache in `directory` if it was built from the same items and fingerprint."""
        directory = Path(directory)
        keys = [item.key for item in items]
        index_path = directory / "index.json"
        if index_path.is_file():
            index = json.loads(index_path.read_text())
            if index["keys"] == keys and index["fingerprint"] == fingerprint:
                return cls(directory)
            index_path.unlink()  # stale: rebuilt below
        directory.mkdir(parents=True, exist_ok=True)
        size = preprocessor.size
        crops = np.lib.format.open_memmap(
            directory / "crops.npy", mode="w+", dtype=np.uint8, shape=(len(items), size, size, 3)
        )
        teacher = None
        pending: list[np.ndarray] = []
        done = 0
        for position, (_, image) in enumerate(read_items(items)):
            crops[position] = preprocessor.crop(image)
            pending.append(image)
            if len(pending) == CACHE_BATCH or position == len(items) - 1:
                embeddings = embed(pending).cpu().numpy().astype(np.float32)
                if teacher is None:
                    teacher = np.lib.format.open_memmap(
                        directory / "teacher.npy",
                        mode="w+",
                        dtype=np.float32,
                        shape=(len(items), embeddings.shape[1]),
                    )
                teacher[done : done + len(pending)] = embeddings
                done += len(pending)
                progress(len(pending))
                pending.clear()
        crops.flush()
        teacher.flush()
        del crops, teacher
        tmp = directory / "index.json.tmp"
        tmp.write_text(json.dumps({"keys": keys, "fingerprint": fingerprint}))
        os.replace(tmp, index_path)  # the cache counts as built only once this exists
        return cls(directory)


def model_inputs(cache: FrameCache, spec: StudentSpec, count: int) -> np.ndarray:
    """`count` cached crops, evenly spaced, normalised as the agent does: [n, 3, S, S] float32."""
    preprocessor = spec.preprocessor()
    indices = np.linspace(0, len(cache) - 1, min(count, len(cache))).round().astype(int)
    return np.concatenate([preprocessor.normalize(cache.crops[i]).copy() for i in indices])


class Batches:
    """Deterministic, augmented training batches from a FrameCache.

    Positions run through an endless stream of per-epoch permutations; the global batch at
    `step` is stream[step * B * world : (step + 1) * B * world] and rank r takes its r-th slice.
    Augmentation is photometric only (brightness, contrast, saturation; flips if enabled), since
    the cached teacher embedding describes the unaugmented crop.
    """

    def __init__(
        self,
        cache: FrameCache,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        color_jitter: float = 0.2,
        flip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.cache = cache
        self.batch_size = batch_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.color_jitter = color_jitter
        self.flip = flip
        self.seed, self.rank, self.world = seed, rank, world

    def _indices(self, step: int) -> np.ndarray:
        n = len(self.cache)
        start = (step * self.world + self.rank) * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(positions // n):
            mask = positions // n == epoch
            permutation = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
            out[mask] = permutation[positions[mask] % n]
        return out

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [B,3,S,S] normalised RGB, teacher embeddings [B,D]) for `step`."""
        indices = self._indices(step)
        order = np.argsort(indices)  # memory maps read fastest in order
        crops = np.empty((len(indices), *self.cache.crops.shape[1:]), dtype=np.uint8)
        crops[order] = self.cache.crops[indices[order]]
        teacher = torch.from_numpy(np.asarray(self.cache.teacher[indices], dtype=np.float32))
        images = torch.from_numpy(crops).permute(0, 3, 1, 2).flip(1).float() / 255.0  # BGR->RGB
        images = self._augment(images, step)
        return (images - self.mean) / self.std, teacher

    def _augment(self, images: torch.Tensor, step: int) -> torch.Tensor:
        seed = np.random.SeedSequence([self.seed, step, self.rank]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        n = len(images)
        if self.color_jitter:
            j = self.color_jitter

            def factor() -> torch.Tensor:
                return (1 + (torch.rand(n, generator=generator) * 2 - 1) * j).view(n, 1, 1, 1)

            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = images * factor()
            mean = (images * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            images = (images - mean) * factor() + mean
            gray = (images * weights).sum(1, keepdim=True)
            images = ((images - gray) * factor() + gray).clamp(0, 1)
        if self.flip:
            flips = torch.rand(n, generator=generator) < 0.5
            images[flips] = images[flips].flip(3)
        return images
