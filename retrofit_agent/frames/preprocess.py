"""Frame to model input: shortest-side resize, centre crop, BGR to RGB, mean/std, NCHW float32.

The maths follows torchvision's Resize(int) + CenterCrop (short side to exactly
`shortest_side`, long side truncated; crop offsets rounded), so the student sees on the camera
what it saw in training. Buffers are planned once per input shape and reused for every frame.
"""

from __future__ import annotations

import cv2
import numpy as np

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def resized_shape(height: int, width: int, shortest_side: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to `shortest_side` (torchvision's rule)."""
    if height <= width:
        return shortest_side, int(shortest_side * width / height)
    return int(shortest_side * height / width), shortest_side


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of a centred `size` x `size` crop, rounded as torchvision's CenterCrop."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


class Preprocessor:
    """Turns BGR uint8 frames [H, W, 3] into the student's input [1, 3, size, size].

    The returned array is owned by the preprocessor and overwritten by the next call (except
    with `prepare`). Not thread-safe: one thread at a time.
    """

    def __init__(
        self,
        size: int,
        shortest_side: int,
        interpolation: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        if shortest_side < size:
            raise ValueError(f"shortest_side {shortest_side} is smaller than the crop {size}")
        self.size = size
        self.shortest_side = shortest_side
        # what this preprocessor makes: inputs made by one with another spec are not reused
        self.spec = (size, shortest_side, interpolation, tuple(mean), tuple(std))
        self.interpolation = INTERPOLATIONS[interpolation]
        mean_bgr = np.asarray(mean, dtype=np.float32)[::-1]
        std_bgr = np.asarray(std, dtype=np.float32)[::-1]
        # (x / 255 - mean) / std == x * scale - offset, computed per BGR channel; as a table of
        # the 256 values per channel, so a frame costs one lookup per pixel and channel, written
        # straight into its RGB plane of the output (no float HWC intermediate, no transpose)
        scale = (1.0 / (255.0 * std_bgr)).astype(np.float32)
        offset = (mean_bgr / std_bgr).astype(np.float32)
        levels = np.arange(256, dtype=np.float32)
        self._tables = [(levels * scale[c] - offset[c]).reshape(256, 1) for c in range(3)]
        self._plane = np.empty((size, size), dtype=np.uint8)
        self._output: np.ndarray | None = None  # made on first use: `prepare` brings its own
        self._planned_for: tuple[int, int] | None = None

    def _plan(self, height: int, width: int) -> None:
        new_h, new_w = resized_shape(height, width, self.shortest_side)
        top, left = crop_offsets(new_h, new_w, self.size)
        self._resized = np.empty((new_h, new_w, 3), dtype=np.uint8)
        self._crop = self._resized[top : top + self.size, left : left + self.size]
        self._planned_for = (height, width)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """The geometric half: the resized, centre-cropped BGR uint8 [size, size, 3] (a view).

        Training caches these crops and normalises in torch, so the student learns on exactly
        the pixels the camera will give it.
        """
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"expected a BGR uint8 frame [H, W, 3], got {frame.dtype}{frame.shape}"
            )
        if frame.shape[:2] != self._planned_for:
            self._plan(*frame.shape[:2])
        resized = self._resized
        cv2.resize(frame, (resized.shape[1], resized.shape[0]), resized, 0, 0, self.interpolation)
        return self._crop

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.normalize(self.crop(frame))

    def prepare(self, frame: np.ndarray, spare: np.ndarray | None = None) -> np.ndarray:
        """The input of `frame` in `spare` (a new array if there is none or it does not fit)
        instead of the shared `output`.

        For inputs made ahead on a reader thread (capture's `prepare`): several are in flight.
        """
        fits = spare is not None and spare.shape == (1, 3, self.size, self.size)
        out = spare if fits else self._new_output()
        return self.normalize(self.crop(frame), out)

    def normalize(self, crop: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The photometric half: a BGR uint8 crop [size, size, 3] to [1, 3, size, size]."""
        if out is None:
            self._output = self._new_output() if self._output is None else self._output
            out = self._output
        for bgr, table in enumerate(self._tables):
            cv2.extractChannel(crop, bgr, self._plane)
            cv2.LUT(self._plane, table, out[0, 2 - bgr])
        return out

    def _new_output(self) -> np.ndarray:
        return np.empty((1, 3, self.size, self.size), dtype=np.float32)
