"""Presence detection on real item photos over a bin floor (video files and frame lists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smartbin.benchmarks.clips import _place_item, make_clip, synthetic_bin_background
from smartbin.device.preprocess import load_image_rgb
from smartbin.device.presence import (
    PresenceDetector,
    PresenceSettings,
    PresenceState,
    changed_fraction,
    crop_roi,
)
from smartbin.device.sources import SourceSettings
from smartbin.device.sources.opencv_source import OpenCVSource
from smartbin.errors import ConfigError

DATA = Path(__file__).parent / "data" / "trashnet"
ITEMS = sorted(DATA.glob("*/*.jpg"))
RNG = np.random.default_rng(7)


def video_frames(path: Path) -> list[np.ndarray]:
    source = OpenCVSource(SourceSettings(kind="opencv", uri=str(path), realtime=False))
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    return frames


def lit(frame: np.ndarray, gain: float, offset: float = 0.0, noise: float = 2.0) -> np.ndarray:
    """The same view under other light, with sensor noise."""
    out = frame.astype(np.float32) * gain + offset + RNG.normal(0, noise, frame.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def trigger_indices(frames: list[np.ndarray], settings: PresenceSettings | None = None):
    detector = PresenceDetector(settings)
    return [i for i, frame in enumerate(frames) if detector.update(frame).triggered]


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    return synthetic_bin_background((320, 240), seed=3)


@pytest.fixture(scope="module")
def item_frame(background) -> np.ndarray:
    return _place_item(background, load_image_rgb(ITEMS[0]), 0.7, (0, 0))


@pytest.mark.parametrize("drift", [0.0, 0.3])
def test_one_trigger_per_item_in_a_video(tmp_path, drift):
    clip = tmp_path / "items.mp4"
    fps, item_s, empty_s = 10, 1.5, 1.0
    count = make_clip(
        ITEMS, clip, fps=fps, item_seconds=item_s, empty_seconds=empty_s, drift=drift, seed=2
    )
    frames = video_frames(clip)
    triggers = trigger_indices(frames)
    assert len(triggers) == count == len(ITEMS)
    # Each trigger falls while its own item is on view (after the drop-in, before it leaves).
    empty_n, item_n = int(empty_s * fps), int(item_s * fps)
    for k, index in enumerate(triggers):
        start = empty_n + k * (item_n + empty_n)
        assert start < index < start + item_n, (k, index)


def test_lighting_changes_alone_never_trigger(background, item_frame):
    gains = list(np.linspace(1.0, 0.55, 40)) + list(np.linspace(0.55, 1.35, 6)) + [1.35] * 20
    offsets = list(np.linspace(0, -10, 40)) + list(np.linspace(-10, 15, 6)) + [15] * 20
    frames = [lit(background, g, o) for g, o in zip(gains, offsets, strict=True)]
    detector = PresenceDetector()
    states = {detector.update(frame).state for frame in frames}
    assert detector.triggers == 0
    assert PresenceState.CLASSIFYING not in states
    # Not blind afterwards: an item under the new light still triggers, once.
    for _ in range(10):
        detector.update(lit(item_frame, 1.35, 15))
    assert detector.triggers == 1


def test_lighting_compensation_is_what_keeps_the_ramp_quiet(background):
    # Without taking gain/offset out, a darker bin differs everywhere.
    dark = lit(background, 0.6, noise=0).astype(np.float32)
    ref = background.astype(np.float32)
    assert np.mean(np.abs(dark[..., 1] - ref[..., 1]) > 25) > 0.5
    assert changed_fraction(dark[..., 1], ref[..., 1], 25) < 0.03


def test_item_that_stays_triggers_once(background, item_frame):
    frames = [lit(background, 1.0)] * 10 + [lit(item_frame, 1.0) for _ in range(200)]
    assert len(trigger_indices(frames)) == 1


def test_lingering_item_absorbed_then_removed_is_not_a_new_item(background, item_frame):
    settings = PresenceSettings(absorb_frames=30)
    frames = (
        [lit(background, 1.0) for _ in range(10)]
        + [lit(item_frame, 1.0) for _ in range(80)]
        + [lit(background, 1.0) for _ in range(30)]
    )
    detector = PresenceDetector(settings)
    for frame in frames:
        detector.update(frame)
    assert detector.triggers == 1
    assert detector.state is PresenceState.EMPTY
    # And it is armed again for the next item.
    for _ in range(10):
        detector.update(lit(item_frame, 1.0))
    assert detector.triggers == 2


def test_item_that_never_settles_does_not_trigger(background):
    item = load_image_rgb(ITEMS[1])
    moving = [_place_item(background, item, 0.6, (-120 + 24 * k, 0)) for k in range(10)]
    frames = [lit(background, 1.0)] * 8 + moving + [lit(background, 1.0)] * 10
    assert trigger_indices(frames) == []


def test_classifies_the_configured_number_of_frames(background, item_frame):
    detector = PresenceDetector(PresenceSettings(frames_to_classify=4, stable_frames=2))
    updates = [detector.update(lit(background, 1.0)) for _ in range(8)]
    updates += [detector.update(lit(item_frame, 1.0)) for _ in range(15)]
    classify = [u for u in updates if u.classify]
    assert len(classify) == 4
    assert classify[0].triggered and classify[-1].item_complete
    assert sum(u.item_complete for u in updates) == 1


def test_an_accepted_item_gets_all_its_frames_even_if_it_is_taken_away(background, item_frame):
    """Once triggered, the item's frames are classified whatever they show, so the detector
    does not compare them (NaN); it compares again from the next frame on."""
    detector = PresenceDetector(PresenceSettings(frames_to_classify=3, stable_frames=2))
    for _ in range(8):
        detector.update(lit(background, 1.0))
    for _ in range(10):
        update = detector.update(lit(item_frame, 1.0))
        if update.triggered:
            break
    assert update.triggered and update.changed > 0.03
    updates = [detector.update(lit(background, 1.0)) for _ in range(3)]
    assert [u.classify for u in updates] == [True, True, False]
    assert updates[1].item_complete and np.isnan(updates[0].changed)
    assert updates[2].state is PresenceState.WAIT_EMPTY and updates[2].changed < 0.03


def test_item_outside_the_roi_is_ignored(background):
    item = load_image_rgb(ITEMS[2])
    left_item = _place_item(background, item, 0.7, (-100, 0))  # left part of the frame
    frames = [lit(background, 1.0)] * 8 + [lit(left_item, 1.0)] * 20
    assert len(trigger_indices(frames)) == 1
    right_half = PresenceSettings(roi=[0.6, 0.0, 0.4, 1.0])
    assert trigger_indices(frames, right_half) == []


def test_crop_roi():
    frame = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    assert crop_roi(frame, None) is frame
    crop = crop_roi(frame, [0.25, 0.5, 0.5, 0.5])
    assert crop.shape == (50, 100, 3)
    assert np.array_equal(crop, frame[50:100, 50:150])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"roi": [0.5, 0.0, 0.7, 1.0]},
        {"roi": [0.1, 0.1, 0.5]},
        {"min_area": 0.0},
        {"stable_frames": 0},
        {"diff_threshold": 300},
    ],
)
def test_settings_validation(kwargs):
    with pytest.raises(ConfigError, match=r"\[presence\] " + next(iter(kwargs))):
        PresenceSettings(**kwargs)
