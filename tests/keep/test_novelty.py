"""The novelty rule on hand-made embeddings: duplicates dropped, new directions kept, and the
adaptive radius holding its target rate (never below its floor)."""

import numpy as np
import pytest

from retrofit_agent.keep.config import NoveltyConfig
from retrofit_agent.keep.novelty import Novelty

pytestmark = pytest.mark.device  # the policy runs on the camera

DIM = 16


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, np.float32)
    return vector / np.linalg.norm(vector)


def axis(i: int) -> np.ndarray:
    return np.eye(DIM, dtype=np.float32)[i]


def kept(novelty: Novelty, embeddings, dt: float = 1.0) -> list[int]:
    """Indices of the novel embeddings, each remembered as the policy does with kept frames."""
    novel = []
    for i, embedding in enumerate(embeddings):
        if novelty.observe(embedding, i * dt):
            novelty.remember(embedding)
            novel.append(i)
    return novel


def fixed(radius: float = 0.1, memory: int = 3) -> Novelty:
    return Novelty(NoveltyConfig(radius=radius, memory=memory, target_per_hour=0))


def test_duplicates_and_near_duplicates_are_dropped_a_new_direction_is_kept():
    near = unit(axis(0) + 0.05 * axis(1))  # cosine distance ~0.001 from axis 0
    assert kept(fixed(), [axis(0), axis(0), near, axis(0), axis(1), near]) == [0, 4]


def test_the_radius_is_a_cosine_distance():
    tilted = [unit(np.cos(a) * axis(0) + np.sin(a) * axis(1)) for a in (0.0, 0.40, 0.50)]
    # 1 - cos(0.40) = 0.079 < 0.1, 1 - cos(0.50) = 0.122 > 0.1
    assert kept(fixed(0.1), tilted) == [0, 2]


def test_only_the_last_memory_kept_embeddings_count():
    # memory 3: after three other directions, the first is forgotten and novel again
    assert kept(fixed(memory=3), [axis(0), axis(1), axis(2), axis(3), axis(0)]) == [0, 1, 2, 3, 4]
    assert kept(fixed(memory=4), [axis(0), axis(1), axis(2), axis(3), axis(0)]) == [0, 1, 2, 3]


def test_what_was_not_remembered_does_not_count():
    novelty = fixed()
    assert novelty.observe(axis(0), 0.0)  # novel, but the policy did not keep it
    assert novelty.observe(axis(0), 1.0)


def test_another_embedding_size_starts_a_new_memory():
    novelty = fixed()
    assert kept(novelty, [axis(0), axis(0)]) == [0]
    assert novelty.observe(np.eye(8, dtype=np.float32)[0], 2.0)  # a reload to an 8-d model


def drive(seconds: float, fps: float, step: float, seed: int = 0):
    """A random walk on the sphere: each frame a small step from the last (a moving scene)."""
    rng = np.random.default_rng(seed)
    current = unit(rng.normal(size=DIM))
    for _ in range(int(seconds * fps)):
        current = unit(current + step * rng.normal(size=DIM))
        yield current


@pytest.mark.parametrize(("target", "step"), [(360.0, 0.05), (120.0, 0.2)])
def test_the_adaptive_radius_converges_to_its_target_rate(target, step):
    config = NoveltyConfig(radius=0.05, radius_min=1e-4, radius_max=1.5, target_per_hour=target)
    novelty = Novelty(config)
    fps = 2.0
    novel = kept(novelty, drive(2 * 3600, fps, step), dt=1 / fps)
    second_hour = sum(i >= 3600 * fps for i in novel)
    assert second_hour == pytest.approx(target, rel=0.15)  # the first hour converges
    fixed_radius = kept(fixed(0.05, memory=10), drive(3600, fps, step))
    assert abs(len(fixed_radius) - target) > 0.5 * target  # without adapting: far from it


def test_a_static_scene_keeps_nothing_below_the_floor():
    config = NoveltyConfig(radius=0.05, radius_min=0.01, target_per_hour=3600)
    novelty = Novelty(config)
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=DIM))
    noisy = [unit(base + 0.01 * rng.normal(size=DIM)) for _ in range(3000)]  # ~1e-4 apart
    assert kept(novelty, noisy) == [0]  # the target asks for one a second: noise is not news
    assert novelty.radius == pytest.approx(0.01)
