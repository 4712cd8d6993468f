import cv2
import numpy as np
import pytest

from retrofit_agent.frames.preprocess import INTERPOLATIONS, Preprocessor

pytestmark = pytest.mark.device

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def reference(frame, size, shortest_side, interpolation, mean, std):
    """The textbook pipeline, written out step by step with fresh arrays."""
    h, w = frame.shape[:2]
    if h <= w:
        new_h, new_w = shortest_side, int(shortest_side * w / h)
    else:
        new_h, new_w = int(shortest_side * h / w), shortest_side
    resized = cv2.resize(frame, (new_w, new_h), interpolation=INTERPOLATIONS[interpolation])
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    crop = resized[top : top + size, left : left + size]
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0
    normalized = (rgb - np.array(mean)) / np.array(std)
    return normalized.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize("shape", [(540, 960), (960, 540), (224, 224), (301, 517), (77, 1000)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "area"])
def test_matches_reference(shape, interpolation):
    rng = np.random.default_rng(sum(shape))
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    pre = Preprocessor(224, 256, interpolation, MEAN, STD)
    out = pre(frame)
    expected = reference(frame, 224, 256, interpolation, MEAN, STD)
    assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)


def test_matches_reference_on_real_image(road_images):
    frame = cv2.imread(str(next(road_images.glob("*.jpg"))))
    pre = Preprocessor(224, 224, "bicubic", MEAN, STD)
    np.testing.assert_allclose(
        pre(frame), reference(frame, 224, 224, "bicubic", MEAN, STD), rtol=0, atol=2e-6
    )


def test_channels_are_rgb_order():
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 2] = 255  # pure red in BGR
    out = Preprocessor(32, 32, "bilinear", (0, 0, 0), (1, 1, 1))(frame)
    assert np.allclose(out[0, 0], 1.0) and np.allclose(out[0, 1:], 0.0)


def test_reuses_buffers_across_frames_and_replans_on_new_shape():
    pre = Preprocessor(32, 40, "bilinear", MEAN, STD)
    a = np.full((100, 200, 3), 10, np.uint8)
    b = np.full((100, 200, 3), 200, np.uint8)
    first = pre(a)
    first_values = first.copy()
    second = pre(b)
    assert second is first  # same output buffer, overwritten
    assert not np.allclose(first_values, second)
    c = np.full((300, 120, 3), 10, np.uint8)
    np.testing.assert_allclose(pre(c), reference(c, 32, 40, "bilinear", MEAN, STD), atol=2e-6)


def test_rejects_non_bgr_frames_and_bad_sizes():
    pre = Preprocessor(32, 32, "bilinear", MEAN, STD)
    with pytest.raises(ValueError, match="BGR uint8"):
        pre(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="BGR uint8"):
        pre(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="smaller than the crop"):
        Preprocessor(64, 32, "bilinear", MEAN, STD)
