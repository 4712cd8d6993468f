import pytest

torch = pytest.importorskip("torch", reason="needs the [distill] extra")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from retrofit_agent.distill.config import DataConfig  # noqa: E402
from retrofit_agent.distill.data import Batches, FrameCache, Item, collect_items  # noqa: E402
from retrofit_agent.errors import ConfigError, SourceError  # noqa: E402
from retrofit_agent.frames.preprocess import Preprocessor  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class CountingEmbedder:
    """Stands in for the teacher: a deterministic embedding, counting images it is asked for."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        rows = [np.resize(i.astype(np.float32).mean((0, 1)), 8) + 1 for i in images]
        return torch.nn.functional.normalize(torch.tensor(np.stack(rows)), dim=1)


def test_collect_images_and_video_frames(synthetic_video, tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "sub/a.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    items = collect_items(DataConfig(images=[tmp_path], videos=[synthetic_video], video_stride=7))
    assert [i.path.name for i in items[:2]] == ["b.png", "a.jpg"]
    assert [i.frame for i in items[2:]] == [0, 7, 14, 21, 28, 35]


def test_bad_data_sources(tmp_path, not_a_video):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no training images"):
        collect_items(DataConfig(images=[empty]))
    with pytest.raises(ConfigError, match=r"data\.images: .*absent: no such folder"):
        collect_items(DataConfig(images=[tmp_path / "absent"]))
    with pytest.raises(SourceError, match=r"notes\.mp4: not a readable video"):
        collect_items(DataConfig(videos=[not_a_video]))


def test_cache_runs_the_teacher_once_per_image(real_video, tmp_path):
    items = collect_items(DataConfig(videos=[real_video], video_stride=20))
    preprocessor = Preprocessor(48, 56, "bilinear", MEAN, STD)
    embed = CountingEmbedder()
    cache = FrameCache.build(tmp_path / "cache", items, embed, preprocessor, {"teacher": "x"})
    assert embed.images == len(items) == len(cache) == 12
    assert cache.crops.shape == (12, 48, 48, 3) and cache.teacher.shape == (12, 8)

    capture = cv2.VideoCapture(str(real_video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 40)
    frame = capture.read()[1]
    assert items[2] == Item(real_video, 40)
    np.testing.assert_array_equal(cache.crops[2], preprocessor.crop(frame))

    again = CountingEmbedder()
    FrameCache.build(tmp_path / "cache", items, again, preprocessor, {"teacher": "x"})
    assert again.images == 0  # reused: same items, same fingerprint
    FrameCache.build(tmp_path / "cache", items, again, preprocessor, {"teacher": "y"})
    assert again.images == 12  # another teacher: rebuilt


def test_batches_are_deterministic_and_ranks_disjoint(synthetic_video, tmp_path):
    items = collect_items(DataConfig(videos=[synthetic_video], video_stride=1))
    cache = FrameCache.build(
        tmp_path / "c", items, CountingEmbedder(), Preprocessor(16, 16, "area", MEAN, STD), {}
    )
    rank0 = Batches(cache, 4, MEAN, STD, color_jitter=0.3, flip=True, seed=1, rank=0, world=2)
    rank1 = Batches(cache, 4, MEAN, STD, color_jitter=0.3, flip=True, seed=1, rank=1, world=2)
    images, teacher = rank0(3)
    assert images.shape == (4, 3, 16, 16) and teacher.shape == (4, 8)
    again_images, again_teacher = rank0(3)
    assert torch.equal(images, again_images) and torch.equal(teacher, again_teacher)
    # one epoch of 40 items is 5 global steps of 2 x 4: every item once, ranks never overlap
    seen = np.concatenate(
        [np.concatenate([rank0._indices(s), rank1._indices(s)]) for s in range(5)]
    )
    assert sorted(seen) == list(range(40))
    assert not torch.equal(rank0(0)[0], rank0(5)[0])  # a new epoch, a new order


def test_batches_without_augmentation_are_the_normalised_crops(synthetic_video, tmp_path):
    items = collect_items(DataConfig(videos=[synthetic_video], video_stride=10))
    pre = Preprocessor(16, 16, "area", MEAN, STD)
    cache = FrameCache.build(tmp_path / "c", items, CountingEmbedder(), pre, {})
    batches = Batches(cache, 4, MEAN, STD, color_jitter=0, flip=False)
    images, _ = batches(0)
    index = int(batches._indices(0)[0])
    expected = pre(np.ascontiguousarray(cache.crops[index]))  # the agent's own maths
    np.testing.assert_allclose(images[0].numpy(), expected[0], atol=1e-5)
