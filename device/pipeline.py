"""The sorting pipeline: frames in, exactly one sort event per item out.

Each frame goes through the presence detector; when an item lies still, the next
``frames_to_classify`` frames are cropped to the ROI and classified, their probabilities are
averaged (one blurry frame should not decide) and :func:`decide` turns them into a label.
The resulting :class:`SortEvent` goes to ``sink`` (the daemon's MQTT outbox), then the
pipeline waits for the bin to be empty again.

The classifier can be swapped at runtime (model reload) from another thread: the swap
takes effect at the next item, so one item is never judged by two models.

Every frame is checked first (:func:`check_frame`): greyscale, RGBA and 16-bit pictures are
converted, anything else (wrong type, empty, absurd size) is skipped, counted in
``bad_frames`` and logged with the reason; a bad frame never stops the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from smartbin.device.classifier import Classified
from smartbin.device.decision import Prediction, decide
from smartbin.device.events import SortEvent
from smartbin.device.presence import (
    PresenceDetector,
    PresenceSettings,
    PresenceState,
    PresenceUpdate,
    crop_roi,
)
from smartbin.device.sources.base import Frame, SourceError, ensure_rgb_uint8

log = logging.getLogger(__name__)

DEFAULT_UNKNOWN_THRESHOLD = 0.5
#: Frames outside these bounds are not pictures of a bin floor (or would cost gigabytes to
#: resize: a 10000x1 strip becomes 2,240,000 x 224 at the model's input size).
MIN_FRAME_SIDE = 16
MAX_FRAME_SIDE = 8192
MAX_ASPECT = 8.0
#: A stream of bad frames logs the first one, then one line per this many.
BAD_FRAME_LOG_EVERY = 100


class BadFrame(ValueError):
    """A frame the pipeline cannot use; the message says why."""


def check_frame(rgb: object) -> np.ndarray:
    """``rgb`` as an HxWx3 uint8 RGB picture of a usable size, or :class:`BadFrame`."""
    if not isinstance(rgb, np.ndarray):
        raise BadFrame(f"frame is a {type(rgb).__name__}, not a numpy array")
    if rgb.ndim not in (2, 3):
        raise BadFrame(f"frame has shape {rgb.shape}, expected HxW or HxWx3")
    try:
        rgb = ensure_rgb_uint8(rgb, bgr=False)
    except SourceError as exc:
        raise BadFrame(str(exc)) from None
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_FRAME_SIDE or max(height, width) > MAX_FRAME_SIDE:
        raise BadFrame(
            f"frame is {width}x{height}; sides must be {MIN_FRAME_SIDE}..{MAX_FRAME_SIDE} px"
        )
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise BadFrame(f"frame is {width}x{height}, more elongated than {MAX_ASPECT:g}:1")
    return rgb


class ClassifierLike(Protocol):
    """What the pipeline needs of :class:`smartbin.device.classifier.Classifier`."""

    @property
    def model_version(self) -> str: ...

    def classify(self, rgb: np.ndarray) -> Classified: ...


class _Item:
    """The frames of the item being classified, and the model judging it."""

    def __init__(self, classifier: ClassifierLike, first_ts: float) -> None:
        self.classifier = classifier
        self.first_ts = first_ts
        self.predictions: list[Prediction] = []
        self.inference_ms: list[float] = []


class SortingPipeline:
    """Presence -> classify N frames -> mean -> decide -> one SortEvent to ``sink``.

    ``unknown_threshold`` None = the bundle's own (``classifier.bundle.unknown_threshold``).
    Not thread-safe except for the :attr:`classifier` property: one loop calls
    :meth:`process` / :meth:`run`.
    """

    def __init__(
        self,
        classifier: ClassifierLike,
        sink: Callable[[SortEvent], Any],
        *,
        bin_id: str,
        presence: PresenceSettings | None = None,
        unknown_threshold: float | None = None,
        stats_size: int = 500,
    ) -> None:
        self._classifier = classifier
        self._lock = threading.Lock()
        self.sink = sink
        self.bin_id = bin_id
        self.presence_settings = presence or PresenceSettings()
        self.detector = PresenceDetector(self.presence_settings)
        self.unknown_threshold = unknown_threshold
        self._item: _Item | None = None
        self.frames_processed = 0
        self.events = 0
        self.classify_errors = 0
        self.sink_errors = 0
        self.bad_frames = 0
        self.inference_ms: deque[float] = deque(maxlen=stats_size)
        self.last_event: SortEvent | None = None
        self.last_update: PresenceUpdate | None = None

    # -- model swap ------------------------------------------------------------------------

    @property
    def classifier(self) -> ClassifierLike:
        with self._lock:
            return self._classifier

    @classifier.setter
    def classifier(self, new: ClassifierLike) -> None:
        """Swap the model (e.g. after a reload); the item in progress keeps the old one."""
        with self._lock:
            old, self._classifier = self._classifier, new
        log.info(
            "classifier swapped: %s -> %s",
            getattr(old, "model_version", "?"),
            getattr(new, "model_version", "?"),
        )

    def threshold_for(self, classifier: ClassifierLike) -> float:
        if self.unknown_threshold is not None:
            return self.unknown_threshold
        bundle = getattr(classifier, "bundle", None)
        return float(getattr(bundle, "unknown_threshold", DEFAULT_UNKNOWN_THRESHOLD))

    # -- health --------------------------------------------------------------------------

    @property
    def inference_p50_ms(self) -> float | None:
        return float(np.median(self.inference_ms)) if self.inference_ms else None

    def health(self) -> dict[str, Any]:
        """Figures for the daemon's health message."""
        return {
            "frames_processed": self.frames_processed,
            "events": self.events,
            "inference_p50_ms": self.inference_p50_ms,
            "presence_state": self.detector.state.value,
            "classify_errors": self.classify_errors,
            "sink_errors": self.sink_errors,
            "bad_frames": self.bad_frames,
            "model_version": getattr(self.classifier, "model_version", None),
        }

    # -- the work ------------------------------------------------------------------------

    def process(self, frame: Frame | np.ndarray) -> SortEvent | None:
        """One frame through presence (and classification when due); the event if one ends.

        A frame that :func:`check_frame` refuses is counted, logged and skipped.
        """
        if isinstance(frame, Frame):
            rgb, ts = frame.rgb, frame.ts
        else:
            rgb, ts = frame, time.monotonic()
        try:
            rgb = check_frame(rgb)
        except BadFrame as exc:
            self.bad_frames += 1
            if self.bad_frames % BAD_FRAME_LOG_EVERY == 1:
                log.warning("frame skipped: %s (%d bad frames so far)", exc, self.bad_frames)
            return None
        self.frames_processed += 1
        update = self.detector.update(rgb)
        self.last_update = update
        if not update.classify:
            return None
        if update.triggered or self._item is None:
            self._item = _Item(self.classifier, ts)
        self._classify(self._item, rgb)
        if update.item_complete:
            return self.flush()
        return None

    def _classify(self, item: _Item, rgb: np.ndarray) -> None:
        try:
            result = item.classifier.classify(crop_roi(rgb, self.presence_settings.roi))
        except Exception:
            self.classify_errors += 1
            log.exception("classification of a frame failed; frame skipped")
            return
        item.predictions.append(result.prediction)
        item.inference_ms.append(result.inference_ms)
        self.inference_ms.append(result.inference_ms)

    def flush(self) -> SortEvent | None:
        """Report the item in progress, if any (also used when the source ends mid-item)."""
        item, self._item = self._item, None
        if item is None:
            return None
        if not item.predictions:
            log.error("an item was seen but none of its frames could be classified")
            return None
        prediction = Prediction.mean(item.predictions)
        decision = decide(prediction, self.threshold_for(item.classifier))
        event = SortEvent.from_prediction(
            bin_id=self.bin_id,
            prediction=prediction,
            decision=decision,
            model_version=item.classifier.model_version,
            inference_ms=float(np.mean(item.inference_ms)),
            frames=len(item.predictions),
        )
        self.events += 1
        self.last_event = event
        log.info(
            "sort_event id=%s bin=%s decision=%s confidence=%.3f organic_prob=%.3f frames=%d "
            "inference_ms=%.1f latency_ms=%.0f model=%s",
            event.id,
            event.bin_id,
            event.decision,
            event.confidence,
            event.organic_prob,
            event.frames,
            event.inference_ms,
            (time.monotonic() - item.first_ts) * 1000.0,
            event.model_version,
        )
        try:
            self.sink(event)
        except Exception:
            self.sink_errors += 1
            log.exception("sink refused sort event; payload=%s", event.to_payload())
        return event

    def run(self, capture: Any, stop_event: threading.Event, timeout: float = 0.5) -> None:
        """Process frames from a :class:`CaptureThread` until stopped or the source ends.

        Returns after reporting the item in progress, so a finished file is fully drained.
        """
        while not stop_event.is_set():
            frame = capture.get(timeout)
            if frame is None:
                if capture.ended or not getattr(capture, "alive", True):
                    break  # finished, stopped, or failed for good (capture.fatal)
                continue
            self.process(frame)
        if self._item is not None and self.detector.state is PresenceState.CLASSIFYING:
            log.info("source ended while an item was being classified: reporting it")
        self.flush()
