"""Frame sources and the capture thread, on real video files and real image folders."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from smartbin.benchmarks.clips import make_clip, write_video
from smartbin.device.preprocess import load_image_rgb
from smartbin.device.sources import CaptureThread, SourceSettings, open_source
from smartbin.device.sources import picamera as picamera_module
from smartbin.errors import ConfigError

DATA = Path(__file__).parent / "data" / "trashnet"
ITEMS = sorted(DATA.glob("*/*.jpg"))


def drain(capture: CaptureThread, limit_s: float = 20.0) -> list:
    """Take frames until the capture says it ended (or the time limit, which fails)."""
    frames = []
    deadline = time.monotonic() + limit_s
    while not capture.ended:
        assert time.monotonic() < deadline, "source never ended"
        frame = capture.get(timeout=0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "three.mp4"
    make_clip(ITEMS[:3], path, fps=10, item_seconds=0.8, empty_seconds=0.5, seed=1)
    return path


@pytest.fixture(scope="module")
def red_clip(tmp_path_factory) -> Path:
    """12 frames whose top half is red: tells RGB from BGR."""
    frame = np.full((48, 64, 3), 40, np.uint8)
    frame[:24] = (200, 20, 20)
    path = tmp_path_factory.mktemp("clips") / "red.mp4"
    write_video(iter([frame] * 12), path, fps=30)
    return path


def test_settings_reject_unknown_kind():
    with pytest.raises(ConfigError, match="kind"):
        SourceSettings(kind="webcam")
    with pytest.raises(ConfigError, match="fps"):
        SourceSettings(fps=0)


def test_video_file_every_frame_then_ends(clip):
    expected = frame_count(clip)
    settings = SourceSettings(kind="opencv", uri=str(clip), realtime=False)
    with CaptureThread(open_source, settings) as capture:
        frames = drain(capture)
    assert len(frames) == expected
    assert [f.index for f in frames] == list(range(expected))
    assert capture.dropped == 0
    assert capture.ended and capture.failures == 0
    assert all(f.rgb.dtype == np.uint8 and f.rgb.shape == (240, 320, 3) for f in frames)
    assert capture.get(timeout=0.05) is None


def test_frames_are_rgb(red_clip):
    settings = SourceSettings(kind="opencv", uri=str(red_clip), realtime=False)
    with CaptureThread(open_source, settings) as capture:
        frames = drain(capture)
    top = frames[0].rgb[:20].reshape(-1, 3).mean(axis=0)
    assert top[0] > 150 and top[2] < 70, f"not RGB: mean top colour {top}"


def test_realtime_replay_paces_and_keeps_last_frame(red_clip):
    settings = SourceSettings(kind="opencv", uri=str(red_clip))  # realtime: the file's 30 fps
    start = time.monotonic()
    with CaptureThread(open_source, settings) as capture:
        frames = drain(capture)
    elapsed = time.monotonic() - start
    assert elapsed >= 11 / 30 * 0.9, f"12 frames at 30 fps took only {elapsed:.2f} s"
    assert frames[-1].index == 11  # the final frame is never lost, even if others drop


def test_slow_consumer_gets_latest_frame_and_drops_are_counted(red_clip):
    settings = SourceSettings(kind="opencv", uri=str(red_clip), fps=60)
    with CaptureThread(open_source, settings) as capture:
        frames = []
        while not capture.ended:
            frame = capture.get(timeout=1.0)
            if frame is not None:
                frames.append(frame)
                time.sleep(0.06)  # a consumer slower than the source
    assert capture.dropped > 0
    assert len(frames) + capture.dropped == 12
    assert frames[-1].index == 11
    assert [f.index for f in frames] == sorted(f.index for f in frames)


def test_video_file_loops(clip):
    expected = frame_count(clip)
    settings = SourceSettings(kind="opencv", uri=str(clip), loop=True, realtime=False)
    with CaptureThread(open_source, settings) as capture:
        frames = [capture.get(timeout=2.0) for _ in range(expected * 2 + 5)]
        assert not capture.ended
    assert all(f is not None for f in frames)
    # The second pass shows the same pictures as the first (mp4 decode is deterministic).
    assert np.array_equal(frames[0].rgb, frames[expected].rgb)
    assert not capture.alive


def test_folder_replays_sorted_and_skips_unreadable(tmp_path, caplog):
    for i, item in enumerate(ITEMS[:3]):
        shutil.copy(item, tmp_path / f"{i:02d}_{item.name}")
    (tmp_path / "01b_broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    settings = SourceSettings(kind="folder", uri=str(tmp_path), realtime=False)
    with caplog.at_level(logging.WARNING), CaptureThread(open_source, settings) as capture:
        frames = drain(capture)
    expected = [load_image_rgb(p) for p in sorted(tmp_path.glob("0[0-9]_*.jpg"))]
    assert len(frames) == 3
    for frame, image in zip(frames, expected, strict=True):
        assert np.array_equal(frame.rgb, image)
    messages = [r.getMessage() for r in caplog.records]
    assert any("01b_broken.jpg" in m and "skipping" in m for m in messages), messages


def test_folder_loops_in_order(tmp_path):
    for i, item in enumerate(ITEMS[:3]):
        shutil.copy(item, tmp_path / f"{i}.jpg")
    originals = [load_image_rgb(tmp_path / f"{i}.jpg") for i in range(3)]
    settings = SourceSettings(kind="folder", uri=str(tmp_path), loop=True, realtime=False)
    with CaptureThread(open_source, settings) as capture:
        frames = [capture.get(timeout=2.0) for _ in range(7)]
    for n, frame in enumerate(frames):
        assert np.array_equal(frame.rgb, originals[n % 3])


def test_missing_file_is_retried_with_backoff_then_recovers(tmp_path, clip, caplog):
    target = tmp_path / "later.mp4"
    settings = SourceSettings(
        kind="opencv", uri=str(target), realtime=False, reopen_initial_s=0.1, reopen_max_s=0.4
    )
    with caplog.at_level(logging.WARNING), CaptureThread(open_source, settings) as capture:
        start = time.monotonic()
        assert capture.get(timeout=0.3) is None
        assert time.monotonic() - start < 1.0  # the consumer never waits beyond its timeout
        time.sleep(1.2)
        assert capture.alive and not capture.ended
        assert capture.failures >= 3
        assert "later.mp4" in capture.last_error and "not found" in capture.last_error
        waits = [
            float(m.group(1))
            for r in caplog.records
            if (m := re.search(r"reopening in ([\d.]+) s", r.getMessage()))
        ]
        assert waits[:3] == [0.1, 0.2, 0.4] and max(waits) == 0.4
        shutil.copy(clip, target)  # the file appears: the source opens on the next try
        frames = drain(capture)
    assert len(frames) == frame_count(clip)


def test_open_source_reports_missing_folder(tmp_path):
    from smartbin.device.sources import SourceError

    with pytest.raises(SourceError, match="not a directory"):
        open_source(SourceSettings(kind="folder", uri=str(tmp_path / "nope")))


class FakePicamera2:
    """Stand-in for ``picamera2.Picamera2`` (no Pi camera here): the calls PiCameraSource
    makes, returning a frame in libcamera's RGB888 byte order (B, G, R). ``fail_after``
    frames, capture_array raises like an unplugged camera."""

    instances: list[FakePicamera2] = []
    fail_after: int | None = None

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config: dict | None = None
        self.started = False
        self.closed = False
        self.captured = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, controls: dict) -> dict:
        return {"main": main, "controls": controls}

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        assert self.started and name == "main"
        if self.fail_after is not None and self.captured >= self.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        self.captured += 1
        width, height = self.config["main"]["size"]
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 2] = 220  # red, stored last in RGB888 (B, G, R) order
        return frame

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_picamera(monkeypatch):
    FakePicamera2.instances = []
    FakePicamera2.fail_after = None
    monkeypatch.setattr(picamera_module, "picamera2_class", FakePicamera2)
    return FakePicamera2


def test_picamera2_source_gives_rgb_at_requested_size(fake_picamera):
    settings = SourceSettings(kind="picamera2", uri="0", width=160, height=120, fps=15)
    with CaptureThread(open_source, settings) as capture:
        frame = capture.get(timeout=2.0)
    assert frame is not None and frame.rgb.shape == (120, 160, 3)
    assert frame.rgb[0, 0].tolist() == [220, 0, 0]
    camera = fake_picamera.instances[0]
    assert camera.config == {
        "main": {"size": (160, 120), "format": "RGB888"},
        "controls": {"FrameRate": 15.0},
    }
    assert camera.closed


def test_picamera2_failure_reopens_camera(fake_picamera):
    fake_picamera.fail_after = 3
    settings = SourceSettings(kind="picamera2", uri="0", reopen_initial_s=0.05)
    with CaptureThread(open_source, settings) as capture:
        got = 0
        deadline = time.monotonic() + 5
        while got < 8 and time.monotonic() < deadline:
            got += capture.get(timeout=0.5) is not None
    assert got == 8
    assert capture.failures >= 2 and "timed out" in capture.last_error
    assert len(fake_picamera.instances) >= 3
    assert all(cam.closed for cam in fake_picamera.instances)


def test_picamera2_missing_module_is_a_config_error_not_a_retry_loop():
    # The real import path: picamera2 is not installed on this machine.
    assert picamera_module.picamera2_class is None
    settings = SourceSettings(kind="picamera2", reopen_initial_s=0.05)
    with CaptureThread(open_source, settings) as capture:
        assert capture.get(timeout=1.0) is None
        capture._thread.join(2.0)
        assert not capture.alive
    assert isinstance(capture.fatal, ConfigError)
    assert "picamera2" in str(capture.fatal) and capture.failures == 0


@pytest.mark.parametrize("uri", ["/dev/video9", "9"])
def test_unplugged_camera_is_retried_not_fatal(uri):
    settings = SourceSettings(kind="opencv", uri=uri, reopen_initial_s=0.05, reopen_max_s=0.1)
    with CaptureThread(open_source, settings) as capture:
        assert capture.get(timeout=0.6) is None
        assert capture.alive and capture.fatal is None and not capture.ended
        assert capture.failures >= 2 and "cannot open" in capture.last_error
