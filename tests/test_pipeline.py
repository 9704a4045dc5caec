"""The sorting pipeline end to end: a real video file, the capture thread, a real TFLite model."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from smartbin.benchmarks.clips import clip_frames, make_clip, synthetic_bin_background
from smartbin.device.bundle import load_bundle
from smartbin.device.classifier import Classifier
from smartbin.device.decision import Prediction, decide
from smartbin.device.labels import MATERIAL_CLASSES, UNKNOWN
from smartbin.device.pipeline import SortingPipeline
from smartbin.device.preprocess import load_image_rgb
from smartbin.device.presence import PresenceDetector, PresenceSettings
from smartbin.device.sources import CaptureThread, SourceSettings, open_source

DATA = Path(__file__).parent / "data" / "trashnet"
ITEMS = sorted(DATA.glob("*/*.jpg"))
DECISIONS = {"organic", UNKNOWN, *MATERIAL_CLASSES}


@pytest.fixture(scope="module")
def classifier(tiny_bundle) -> Classifier:
    return Classifier(load_bundle(tiny_bundle), num_threads=1, use_edgetpu=False)


class Versioned:
    """A real classifier reporting another model version (what a reload looks like)."""

    def __init__(self, inner: Classifier, version: str) -> None:
        self.inner, self.model_version, self.bundle = inner, version, inner.bundle

    def classify(self, rgb: np.ndarray):
        return self.inner.classify(rgb)


def run_clip(pipeline: SortingPipeline, clip: Path, realtime: bool) -> CaptureThread:
    settings = SourceSettings(kind="opencv", uri=str(clip), realtime=realtime)
    stop = threading.Event()
    with CaptureThread(open_source, settings) as capture:
        worker = threading.Thread(target=pipeline.run, args=(capture, stop))
        worker.start()
        worker.join(60)
        stop.set()
        assert not worker.is_alive(), "pipeline.run did not return when the file ended"
    return capture


def check_event(event, classifier) -> None:
    assert event.decision in DECISIONS
    assert event.frames == 3
    assert event.model_version == classifier.model_version
    assert abs(sum(event.material_probs.values()) - 1.0) < 0.02
    # The reported decision is the one decide() gives on the reported probabilities.
    prediction = Prediction(
        binary=np.array([event.organic_prob, 1 - event.organic_prob]),
        material=np.array([event.material_probs[name] for name in MATERIAL_CLASSES]),
    )
    expected = decide(prediction, classifier.bundle.unknown_threshold)
    assert (expected.label, round(expected.confidence, 3)) == (
        event.decision,
        round(event.confidence, 3),
    )


def test_n_items_give_exactly_n_events(tmp_path, classifier, caplog):
    clip = tmp_path / "four.mp4"
    count = make_clip(ITEMS[:4], clip, fps=10, item_seconds=1.2, empty_seconds=0.8, drift=0.1)
    events = []
    pipeline = SortingPipeline(classifier, events.append, bin_id="bin-7")
    with caplog.at_level(logging.INFO, logger="smartbin.device.pipeline"):
        capture = run_clip(pipeline, clip, realtime=False)
    assert capture.ended and capture.dropped == 0
    assert len(events) == count == 4
    assert len({e.id for e in events}) == 4
    for event in events:
        assert event.bin_id == "bin-7"
        check_event(event, classifier)
    assert pipeline.events == 4 and pipeline.frames_processed == capture.frames
    assert len(pipeline.inference_ms) == 12 and pipeline.inference_p50_ms > 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sort_event")]
    assert len(lines) == 4
    assert all(f"id={e.id}" in line for e, line in zip(events, lines, strict=True))


def test_realtime_replay_gives_the_same_count(tmp_path, classifier):
    clip = tmp_path / "two.mp4"
    count = make_clip(ITEMS[4:6], clip, fps=20, item_seconds=0.8, empty_seconds=0.6)
    events = []
    pipeline = SortingPipeline(classifier, events.append, bin_id="bin-7")
    run_clip(pipeline, clip, realtime=True)
    assert len(events) == count == 2


def test_event_is_the_mean_of_the_classified_roi_crops(classifier):
    """The event's probabilities are those of the ROI crops of the classified frames."""
    roi = [0.25, 0.0, 0.5, 1.0]
    background = synthetic_bin_background((320, 240), seed=5)
    frames = list(
        clip_frames([load_image_rgb(ITEMS[3])], background, fps=10, item_seconds=1.5, noise=0)
    )
    settings = PresenceSettings(roi=roi)
    events = []
    pipeline = SortingPipeline(classifier, events.append, bin_id="b", presence=settings)
    classified = []
    for frame in frames:
        pipeline.process(frame)
        if pipeline.last_update.classify:
            classified.append(frame)
    assert len(events) == 1 and len(classified) == 3
    height, width = frames[0].shape[:2]
    crops = [f[:, width // 4 : 3 * width // 4] for f in classified]
    expected = Prediction.mean([classifier.classify(c).prediction for c in crops])
    assert events[0].material_probs == pytest.approx(expected.material_probs(), abs=1e-3)
    assert events[0].organic_prob == pytest.approx(expected.organic_prob, abs=1e-3)


def test_model_swap_applies_from_the_next_item(tmp_path, classifier):
    clip = tmp_path / "three.mp4"
    make_clip(ITEMS[:3], clip, fps=10, item_seconds=1.2, empty_seconds=0.8)
    events = []
    pipeline = SortingPipeline(classifier, events.append, bin_id="b")

    def sink(event):
        events.append(event)
        if len(events) == 1:  # a reload lands while the bin runs
            pipeline.classifier = Versioned(classifier, "v-reloaded")

    pipeline.sink = sink
    run_clip(pipeline, clip, realtime=False)
    versions = [e.model_version for e in events]
    assert versions == [classifier.model_version, "v-reloaded", "v-reloaded"]


def test_source_ending_mid_item_still_reports_it(classifier):
    background = synthetic_bin_background((320, 240), seed=6)
    frames = list(clip_frames([load_image_rgb(ITEMS[0])], background, fps=10, item_seconds=1.0))
    # Cut the clip one frame after the item settled: 2 of its 3 frames get classified.
    probe = PresenceDetector()
    cut = next(i for i, f in enumerate(frames) if probe.update(f).triggered) + 2
    events = []
    pipeline = SortingPipeline(classifier, events.append, bin_id="b")
    for frame in frames[:cut]:
        pipeline.process(frame)
    assert events == []
    pipeline.flush()
    assert len(events) == 1 and events[0].frames == 2


def test_sink_failure_is_logged_and_the_bin_goes_on(tmp_path, classifier, caplog):
    clip = tmp_path / "two.mp4"
    make_clip(ITEMS[:2], clip, fps=10, item_seconds=1.2, empty_seconds=0.8)
    offered, delivered = [], []

    def sink(event):
        offered.append(event)
        if len(offered) == 1:
            raise ConnectionError("outbox full")
        delivered.append(event)

    pipeline = SortingPipeline(classifier, sink, bin_id="b")
    with caplog.at_level(logging.ERROR):
        run_clip(pipeline, clip, realtime=False)
    assert pipeline.events == 2 and pipeline.sink_errors == 1 and len(delivered) == 1
    refused = [r.getMessage() for r in caplog.records if "sink refused" in r.getMessage()]
    assert len(refused) == 1 and offered[0].id in refused[0]  # the payload is in the log
