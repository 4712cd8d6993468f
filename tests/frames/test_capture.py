import os
import threading
import time

import cv2
import numpy as np
import pytest
from helpers.avi import with_repeats, write_avi

from retrofit_agent.errors import DeviceLost, SourceError, SourceTruncated
from retrofit_agent.frames import container
from retrofit_agent.frames.capture import (
    CameraSource,
    FrameReader,
    ImageFolderSource,
    Prepared,
    VideoFileSource,
    open_source,
)

pytestmark = pytest.mark.device


def test_video_file_delivers_every_frame_in_order(synthetic_video):
    with open_source(synthetic_video) as source:
        assert isinstance(source, VideoFileSource) and source.total == 40
        frames = [(f.index, float(f.image.mean())) for f in source]
    assert [i for i, _ in frames] == list(range(40))
    brightness = [m for _, m in frames]
    assert brightness == sorted(brightness) and brightness[-1] > brightness[0] + 150
    assert source.dropped == 0


def test_real_video_frame_count(real_video):
    with open_source(real_video) as source:
        count = sum(1 for _ in source)
    assert count == source.total == int(cv2.VideoCapture(str(real_video)).get(7))


def test_realtime_file_is_paced_at_native_rate(synthetic_video):
    started = time.monotonic()
    with open_source(synthetic_video, realtime=True) as source:
        frames = [f.index for f in source]
    elapsed = time.monotonic() - started
    assert elapsed >= 39 / 25 * 0.9  # 40 frames at 25 fps take ~1.56 s
    assert frames == sorted(frames) and frames[-1] == 39


def test_realtime_file_drops_frames_for_a_slow_consumer(synthetic_video):
    with open_source(synthetic_video, realtime=True) as source:
        seen = []
        for frame in source:
            seen.append(frame.index)
            time.sleep(0.1)  # 10 fps consumer, 25 fps source: newest-only must drop
    assert source.dropped > 10
    assert len(seen) + source.dropped == 40
    assert seen == sorted(seen)


def test_truncated_video_is_its_own_error(truncated_video):
    source = open_source(truncated_video)
    with pytest.raises(SourceTruncated, match=r"truncated\.avi: video ends after \d+ of 40 frames"):
        for _ in source:
            pass
    source.close()


def test_zero_length_repeat_entries_are_not_truncation(tmp_path):
    """A complete AVI whose index lists zero-length "repeat the previous frame" entries (370 of
    444 here, as some encoders write): FFmpeg delivers only the 74 real frames, which the old
    frame-count ratio called truncated."""
    entries = with_repeats(444, every=6)
    video = write_avi(tmp_path / "repeats.avi", entries)
    capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 444  # what the container declares
    capture.release()
    with open_source(video) as source:
        assert source.total == 444
        brightness = [round(float(f.image.mean())) for f in source]  # ends without an error
    expected = [round(float(f.mean())) for f in entries if f is not None]
    assert len(brightness) == 74 and brightness == pytest.approx(expected, abs=2)


def test_truncation_is_told_by_the_container(tmp_path, synthetic_video, real_video):
    """A file is truncated when it ends inside its container's declared structure: AVI
    (RIFF), MP4 (ISO BMFF, here the real footage, moov first) and Matroska."""
    repeats = write_avi(tmp_path / "repeats.avi", with_repeats(444, every=6))
    mkv = tmp_path / "video.mkv"
    writer = cv2.VideoWriter(str(mkv), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    for whole in (repeats, synthetic_video, real_video, mkv):
        assert not container.truncated(whole), whole
        cut = tmp_path / f"cut-{whole.name}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
        assert container.truncated(cut), cut
    not_video = tmp_path / "notes.txt"
    not_video.write_text("no container here")
    assert not container.truncated(not_video)


def test_truncated_real_footage_is_its_own_error(real_video, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(real_video.read_bytes()[: real_video.stat().st_size // 2])
    with (
        open_source(cut) as source,
        pytest.raises(SourceTruncated, match=r"cut\.mp4: video ends after \d+ of 221 frames"),
    ):
        list(source)


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    """Opening a FIFO blocks until a writer comes: as the video, the dry run hung forever."""
    fifo = tmp_path / "camera.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=r"camera\.mp4: a named pipe \(FIFO\), not a video"):
        open_source(fifo)
    images = tmp_path / "images"
    images.mkdir()
    os.mkfifo(images / "frame.png")
    with (
        open_source(images) as source,
        pytest.raises(SourceError, match=r"frame\.png: image is a named pipe \(FIFO\)"),
    ):
        list(source)


def test_a_video_whose_frames_are_too_large_is_refused_before_decoding(synthetic_video):
    with pytest.raises(SourceError, match=r"320x240 is 76800 pixels, more than capture"):
        open_source(synthetic_video, max_pixels=76799)
    with open_source(synthetic_video, max_pixels=76800) as source:
        assert len(list(source)) == 40


def test_unreadable_inputs(not_a_video, tmp_path):
    with pytest.raises(SourceError, match=r"notes\.mp4: not a readable video"):
        open_source(not_a_video)
    with pytest.raises(SourceError, match="no such file or directory"):
        open_source(tmp_path / "absent.mp4")
    with pytest.raises(SourceError, match="cannot open camera"):
        open_source("/dev/video97")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(empty)


def test_image_folder_in_name_order_and_bad_image(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((20, 30, 3), 50 * i, np.uint8))
    with open_source(tmp_path) as source:
        assert isinstance(source, ImageFolderSource) and source.total == 3
        means = [float(f.image.mean()) for f in source]
    assert means == [0.0, 50.0, 100.0]
    (tmp_path / "frame3.jpg").write_bytes(b"not a jpeg")
    with (
        open_source(tmp_path) as source,
        pytest.raises(SourceError, match=r"frame3\.jpg: not a readable image"),
    ):
        list(source)


def test_real_image_folder(road_images):
    with open_source(road_images) as source:
        frames = [f.image.shape for f in source]
    assert len(frames) == source.total and all(s[2] == 3 for s in frames)


class FlakyCamera:
    """Stands in for cv2.VideoCapture: delivers `good` frames, then fails or hangs."""

    def __init__(self, good: int, hang: bool = False) -> None:
        self.good, self.hang, self.reads = good, hang, 0
        self.release_event = threading.Event()

    def read(self, image=None):
        self.reads += 1
        if self.reads <= self.good:
            time.sleep(0.005)
            return True, np.zeros((8, 8, 3), np.uint8)
        if self.hang:
            self.release_event.wait(5)
        return False, None

    def release(self):
        self.release_event.set()


def test_camera_that_vanishes_raises_device_lost():
    camera = CameraSource(FlakyCamera(good=5), "/dev/video-fake")
    with pytest.raises(DeviceLost, match="stopped delivering frames"):
        for frame in camera:
            assert frame.image.shape == (8, 8, 3)
    camera.close()


def test_camera_that_stalls_raises_device_lost_not_a_hang():
    camera = CameraSource(FlakyCamera(good=3, hang=True), "/dev/video-fake", stall_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(DeviceLost, match="no frame for 0.3 s"):
        for _ in camera:
            pass
    assert time.monotonic() - started < 3
    camera.close()


def test_reader_keeps_all_with_bounded_queue():
    produced = iter(range(100))
    reader = FrameReader(
        lambda _spare: np.full(1, v) if (v := next(produced, None)) is not None else None,
        keep_all=True,
        capacity=3,
    )
    time.sleep(0.1)
    assert reader.read_count <= 3  # blocked by the bound, not read ahead
    values = []
    while (frame := reader.get(timeout=1)) is not None:
        values.append(int(frame.image[0]))
    assert values == list(range(100)) and reader.dropped == 0


def test_reader_passes_errors_to_the_consumer():
    def read(_spare):
        raise SourceError("boom")

    reader = FrameReader(read, keep_all=True)
    with pytest.raises(SourceError, match="boom"):
        reader.get(timeout=1)


def test_reader_recycles_images_the_consumer_is_done_with():
    produced = iter(range(50))
    fresh = []

    def read(spare):
        value = next(produced, None)
        if value is None:
            return None
        if spare is None:
            spare = np.empty(1, np.int64)
            fresh.append(spare)
        spare[0] = value
        return spare

    reader = FrameReader(read, keep_all=True, capacity=2)
    values = []
    while (frame := reader.get(timeout=1)) is not None:
        held = int(frame.image[0])
        time.sleep(0.002)  # the reader fills spares meanwhile: never the frame held here
        assert int(frame.image[0]) == held
        values.append(held)
    assert values == list(range(50))
    assert len(fresh) <= 4  # queue, the one being read, the one held: then only spares


def test_reader_recycles_overwritten_frames_of_a_live_source():
    fresh = []

    def read(spare):
        time.sleep(0.001)
        if spare is None:
            spare = np.zeros(1)
            fresh.append(spare)
        return spare

    reader = FrameReader(read, keep_all=False)
    time.sleep(0.2)
    assert reader.dropped > 20 and len(fresh) <= 3
    reader.close()


def test_prepare_runs_on_the_reader_thread_into_recycled_inputs(synthetic_video):
    threads, spares = set(), []

    def prepare(image, spare):
        threads.add(threading.current_thread().name)
        spares.append(spare)
        out = np.empty(1) if spare is None else spare
        out[0] = image.mean()
        return Prepared(out, "mean")

    with open_source(synthetic_video, prepare=prepare) as source:
        frames = [
            (f.index, float(f.prepared.input[0]), float(f.image.mean()), f.prepare_ms)
            for f in source
        ]
    assert [f[0] for f in frames] == list(range(40))
    assert all(value == mean and ms > 0 for _, value, mean, ms in frames)
    assert threads == {"frame-reader"}
    assert sum(s is None for s in spares) <= 3  # then recycled


def test_looped_file_starts_again_endlessly(synthetic_video):
    with open_source(synthetic_video, loop=True) as source:
        assert source.total is None  # endless, and never "truncated"
        # images are recycled once the next frame is asked for: read them on the way
        frames = [
            (f.index, float(f.image.mean())) for _, f in zip(range(100), source, strict=False)
        ]
    assert [index for index, _ in frames] == list(range(100))
    brightness = [mean for _, mean in frames]
    assert brightness[40] == brightness[0] and brightness[80] == brightness[0]
    assert brightness[39] > brightness[0] + 150


def test_a_stalled_camera_is_released_only_after_its_read_returns():
    class Stalled:
        """A driver read that blocks until told otherwise."""

        def __init__(self):
            self.reading, self.unblock, self.released = (threading.Event() for _ in range(3))
            self.released_while_reading = None

        def read(self, image=None):
            self.reading.set()
            self.unblock.wait(10)
            self.reading.clear()
            return False, None

        def release(self):
            self.released_while_reading = self.reading.is_set()
            self.released.set()

    device = Stalled()
    camera = CameraSource(device, "/dev/video-fake", stall_timeout_s=0.2)
    with pytest.raises(DeviceLost, match="no frame for 0.2 s"):
        list(camera)
    camera.close()  # gives up waiting for the reader, but must not pull the capture from under it
    assert not device.released.is_set()
    device.unblock.set()
    assert device.released.wait(5) and device.released_while_reading is False
