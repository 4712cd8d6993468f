"""Procedural image-caption pairs: coloured shapes on varied backgrounds (numpy/cv2 only).

No pretrained CLIP can be had here, so the project trains its own small CLIP on these scenes,
where zero-shot is real: the (colour, shape) combinations in `held_out` never appear in any
training or distillation image, yet every colour and every shape does (with other partners).
A model that labels a held-out combination correctly has composed it from parts.

Scenes are a pure function of (seed, index): the same seed gives the same data everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# BGR, saturated and far apart, so a colour name is unambiguous under lighting jitter
COLOURS = {
    "red": (40, 40, 220),
    "green": (60, 180, 40),
    "blue": (220, 90, 30),
    "yellow": (30, 220, 230),
    "purple": (170, 40, 150),
    "orange": (20, 130, 250),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "middle")
# One combination per colour, rotating through the shapes: every part stays seen.
HELD_OUT = (
    ("red", "circle"),
    ("green", "square"),
    ("blue", "triangle"),
    ("yellow", "star"),
    ("purple", "cross"),
    ("orange", "ring"),
    ("white", "triangle"),
    ("black", "star"),
)
ONE_OBJECT = (
    "a photo of a {colour} {shape}.",
    "a {size} {colour} {shape}.",
    "a {colour} {shape} on the {position}.",
    "a {colour} {shape}.",
    "a picture of a {size} {colour} {shape} on the {position}.",
    "a {colour} object shaped like a {shape}.",
)
PART_ONLY = ("a {shape}.", "something {colour}.")


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # BGR uint8 [H, W, 3]
    things: tuple[Thing, ...]
    caption: str


def class_name(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def all_combinations() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


class SceneGenerator:
    def __init__(
        self,
        size: int = 64,
        held_out: Sequence[tuple[str, str]] = HELD_OUT,
        seed: int = 0,
        max_things: int = 2,
    ) -> None:
        self.size = size
        self.held_out = frozenset(held_out)
        unknown = {c for c, _ in self.held_out} - set(COLOURS) | (
            {s for _, s in self.held_out} - set(SHAPES)
        )
        if unknown:
            raise ValueError(f"unknown colours or shapes in held_out: {sorted(unknown)}")
        self.seed = seed
        self.max_things = max_things
        self.seen = [c for c in all_combinations() if c not in self.held_out]

    def scene(self, index: int, split: str = "seen") -> Scene:
        """Scene `index` of a split: "seen" (training) or "held_out" (one held-out object)."""
        rng = np.random.default_rng([self.seed, index, 1 if split == "held_out" else 0])
        if split == "held_out":
            pool = sorted(self.held_out)
            combos = [pool[rng.integers(len(pool))]]
        else:
            count = 1 if rng.random() < 0.7 else rng.integers(2, self.max_things + 1)
            picks = rng.choice(len(self.seen), size=count, replace=False)
            combos = [self.seen[i] for i in picks]
        positions = rng.choice(POSITIONS, size=len(combos), replace=False)
        things = tuple(
            Thing(c, s, str(rng.choice(SIZES)), str(p))
            for (c, s), p in zip(combos, positions, strict=True)
        )
        return Scene(self.render(things, rng), things, self.caption(things, rng))

    def scenes(self, count: int, split: str = "seen", start: int = 0) -> Iterator[Scene]:
        for index in range(start, start + count):
            yield self.scene(index, split)

    def caption(self, things: Sequence[Thing], rng: np.random.Generator) -> str:
        if len(things) == 1:
            thing = things[0]
            templates = ONE_OBJECT + PART_ONLY if rng.random() < 0.15 else ONE_OBJECT
            return str(rng.choice(templates)).format(**vars(thing))
        return " and ".join(f"a {t.colour} {t.shape}" for t in things) + "."

    def render(self, things: Sequence[Thing], rng: np.random.Generator) -> np.ndarray:
        image = background(self.size, rng)
        for thing in things:
            draw(image, thing, rng)
        gain = rng.uniform(0.8, 1.15)  # lighting
        return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Low-saturation backgrounds (never a competing colour): gradient, noise or stripes."""
    base = rng.uniform(70, 180)
    kind = rng.integers(3)
    if kind == 0:
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        angle = rng.uniform(0, np.pi)
        plane = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
        gray = base + 40 * plane
    elif kind == 1:
        noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1)).astype(np.float32)
        gray = base + 25 * cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    else:
        period = rng.integers(6, 16)
        stripes = ((np.arange(size) // period) % 2).astype(np.float32)
        gray = base + 20 * (stripes[None, :] if rng.random() < 0.5 else stripes[:, None])
        gray = np.broadcast_to(gray, (size, size))
    tint = rng.uniform(-8, 8, 3).astype(np.float32)
    image = gray[..., None] + tint + rng.normal(0, 4, (size, size, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def draw(image: np.ndarray, thing: Thing, rng: np.random.Generator) -> None:
    size = image.shape[0]
    radius = size * (rng.uniform(0.09, 0.13) if thing.size == "small" else rng.uniform(0.2, 0.26))
    cx, cy = {
        "left": (0.25, 0.5),
        "right": (0.75, 0.5),
        "top": (0.5, 0.25),
        "bottom": (0.5, 0.75),
        "middle": (0.5, 0.5),
    }[thing.position]
    jitter = size * 0.06
    centre = np.array(
        [cx * size + rng.uniform(-jitter, jitter), cy * size + rng.uniform(-jitter, jitter)]
    )
    colour = tuple(int(np.clip(v + rng.uniform(-20, 20), 0, 255)) for v in COLOURS[thing.colour])
    angle = rng.uniform(0, 2 * np.pi)
    shape_points(image, thing.shape, centre, radius, angle, colour)


def _polygon(centre: np.ndarray, radii: Sequence[float], angle: float) -> np.ndarray:
    n = len(radii)
    angles = angle + np.arange(n) * 2 * np.pi / n
    points = (
        centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.asarray(radii)[:, None]
    )
    return np.round(points * 16).astype(np.int32)  # 4 fractional bits, for smooth edges


def shape_points(image, shape: str, centre, radius: float, angle: float, colour) -> None:
    shift = 4
    if shape == "circle":
        cv2.circle(
            image,
            tuple(np.round(centre * 16).astype(int)),
            int(radius * 16),
            colour,
            -1,
            cv2.LINE_AA,
            shift,
        )
    elif shape == "ring":
        cv2.circle(
            image,
            tuple(np.round(centre * 16).astype(int)),
            int(radius * 0.75 * 16),
            colour,
            max(2, int(radius * 0.45)),
            cv2.LINE_AA,
            shift,
        )
    elif shape == "square":
        cv2.fillPoly(
            image, [_polygon(centre, [radius * 1.2] * 4, angle)], colour, cv2.LINE_AA, shift
        )
    elif shape == "triangle":
        cv2.fillPoly(
            image, [_polygon(centre, [radius * 1.25] * 3, angle)], colour, cv2.LINE_AA, shift
        )
    elif shape == "star":
        radii = [radius * 1.25, radius * 0.5] * 5
        cv2.fillPoly(image, [_polygon(centre, radii, angle)], colour, cv2.LINE_AA, shift)
    elif shape == "cross":
        arm = radius * 0.38
        for a in (angle, angle + np.pi / 2):
            d = np.array([np.cos(a), np.sin(a)]) * radius * 1.2
            n = np.array([-np.sin(a), np.cos(a)]) * arm
            corners = np.stack([centre - d - n, centre + d - n, centre + d + n, centre - d + n])
            cv2.fillPoly(
                image, [np.round(corners * 16).astype(np.int32)], colour, cv2.LINE_AA, shift
            )
    else:
        raise ValueError(f"unknown shape {shape!r}")


def write_images(generator: SceneGenerator, folder: Path, count: int, split: str = "seen") -> None:
    """Unlabelled training images (PNG) for distillation."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, scene in enumerate(generator.scenes(count, split)):
        cv2.imwrite(str(folder / f"{split}-{index:06d}.png"), scene.image)


def single_objects(generator: SceneGenerator, split: str, per_class: int) -> Iterator[Scene]:
    """`per_class` one-object scenes of every combination in `split`, for evaluation.

    Drawn from their own random stream, so they are never training images.
    """
    wanted = sorted(generator.held_out) if split == "held_out" else generator.seen
    for index in range(per_class * len(wanted)):
        rng = np.random.default_rng([generator.seed, 10_000_019, index])
        colour, shape = wanted[index % len(wanted)]
        thing = Thing(colour, shape, str(rng.choice(SIZES)), str(rng.choice(POSITIONS)))
        yield Scene(generator.render((thing,), rng), (thing,), f"a {colour} {shape}.")


def write_eval_folder(generator: SceneGenerator, folder: Path, per_class: int, split: str) -> None:
    """One sub-folder per (colour, shape) class, all 48 of them, so chance is 1/48.

    Only the split's combinations get images; the rest stay empty and count as wrong answers
    the classifier can give.
    """
    for colour, shape in all_combinations():
        (folder / class_name(colour, shape)).mkdir(parents=True, exist_ok=True)
    for index, scene in enumerate(single_objects(generator, split, per_class)):
        thing = scene.things[0]
        cv2.imwrite(
            str(folder / class_name(thing.colour, thing.shape) / f"{index:05d}.png"), scene.image
        )


def write_demo_clip(
    path: Path,
    generator: SceneGenerator,
    seconds_per_scene: float = 2.0,
    fps: int = 10,
    size: int = 192,
) -> list[str]:
    """A short clip of single objects drifting across the frame, held-out ones included.

    Returns the scene captions in order (what a viewer should see labelled).
    """
    rng = np.random.default_rng([generator.seed, 77])
    script = [
        ("red", "square"),
        ("red", "circle"),
        ("blue", "star"),
        ("blue", "triangle"),
        ("green", "ring"),
        ("yellow", "star"),
        ("white", "cross"),
        ("black", "circle"),
    ]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise OSError(f"{path}: cannot write video")
    captions = []
    frames = int(seconds_per_scene * fps)
    for colour, shape in script:
        captions.append(class_name(colour, shape))
        back = background(size, rng)
        radius = size * 0.2
        angle = rng.uniform(0, 2 * np.pi)
        start, end = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.3, 0.7, 2) * size
        for i in range(frames):
            t = i / max(1, frames - 1)
            image = back.copy()
            shape_points(
                image, shape, start + (end - start) * t, radius, angle + t, COLOURS[colour]
            )
            writer.write(image)
    writer.release()
    return captions
