"""Presence detection: has an item arrived in the bin, and is it lying still?

The camera looks at the same empty bin floor all day, so the detector keeps a model of that
empty view (a small grey image, learnt from the first frames and slowly updated only while
the bin is empty) and compares each frame with it. Lighting changes (daylight, auto
exposure) scale and shift every pixel together; an item changes *some* pixels. So before
comparing, the frame's global gain and offset relative to the background are estimated with
medians and taken out; what is left over the threshold on enough of the view is an item.

States::

    LEARNING -> EMPTY -> ENTERING -> CLASSIFYING (frames_to_classify frames) -> WAIT_EMPTY
                  ^  (back to EMPTY if the view empties before settling)           |
                  +------------------ empty for empty_frames frames ----------------+

ENTERING becomes CLASSIFYING once the view is occupied and unchanged (frame to frame) for
``stable_frames`` frames: one item, one trigger. The detector re-arms only when the view is
empty again, so an item that stays is reported once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from smartbin.errors import ConfigError

log = logging.getLogger(__name__)


class PresenceState(StrEnum):
    LEARNING = "learning"
    EMPTY = "empty"
    ENTERING = "entering"
    CLASSIFYING = "classifying"
    WAIT_EMPTY = "wait_empty"


@dataclass
class PresenceSettings:
    """The ``[presence]`` table of the bin's config. Every field has a default.

    roi: the part of the frame that shows the bin floor, ``[x, y, w, h]`` as fractions of
        the frame (``[0.1, 0.0, 0.8, 1.0]``); ``None`` = the whole frame. Items are also
        classified on this crop.
    grid_width: width in pixels of the grey image the detector works on (small = fast and
        insensitive to sensor noise).
    diff_threshold: grey levels (0..255) a pixel must differ from the empty bin, after
        lighting compensation, to count as changed.
    min_area: fraction of the ROI that must be changed for the view to be occupied.
    motion_area: the view is unchanged when less than this fraction of it changed since the
        previous frame.
    stable_frames: consecutive unchanged, occupied frames before the item is classified.
    frames_to_classify: frames classified per item; their probabilities are averaged.
    empty_frames: consecutive empty frames needed to re-arm after an item.
    learning_rate: how fast the empty-bin model follows slow changes (per empty frame).
    warmup_frames: frames averaged to learn the empty bin at start (the bin must be empty).
    absorb_frames: an occupied view that has not changed back for this many frames after
        its item was reported becomes the new empty bin (a camera that moved, a bin started
        with an item in view); 0 = never.
    """

    roi: list[float] | None = None
    grid_width: int = 64
    diff_threshold: float = 25.0
    min_area: float = 0.03
    motion_area: float = 0.01
    stable_frames: int = 3
    frames_to_classify: int = 3
    empty_frames: int = 5
    learning_rate: float = 0.05
    warmup_frames: int = 5
    absorb_frames: int = 600

    def __post_init__(self) -> None:
        if self.roi is not None:
            roi = list(self.roi)
            if len(roi) != 4 or not all(isinstance(v, int | float) for v in roi):
                raise ConfigError(f"[presence] roi: expected [x, y, w, h] fractions, got {roi}")
            x, y, w, h = (float(v) for v in roi)
            if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
                raise ConfigError(
                    f"[presence] roi: {roi} is not inside the frame (fractions 0..1, x+w<=1, "
                    "y+h<=1)"
                )
            self.roi = [x, y, w, h]
        positive_ints = ("grid_width", "stable_frames", "frames_to_classify", "empty_frames")
        for name in (*positive_ints, "warmup_frames"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"[presence] {name}: must be >= 1, got {getattr(self, name)}")
        if self.absorb_frames < 0:
            raise ConfigError(f"[presence] absorb_frames: must be >= 0, got {self.absorb_frames}")
        for name in ("min_area", "motion_area", "learning_rate"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(f"[presence] {name}: must be in (0, 1], got {value}")
        if not 0 < self.diff_threshold < 255:
            raise ConfigError(
                f"[presence] diff_threshold: must be in (0, 255), got {self.diff_threshold}"
            )


def crop_roi(rgb: np.ndarray, roi: list[float] | None) -> np.ndarray:
    """The ROI of a frame (``[x, y, w, h]`` fractions); the frame itself when roi is None."""
    if roi is None:
        return rgb
    height, width = rgb.shape[:2]
    x, y, w, h = roi
    left, top = int(round(x * width)), int(round(y * height))
    right = max(left + 1, min(width, int(round((x + w) * width))))
    bottom = max(top + 1, min(height, int(round((y + h) * height))))
    return rgb[top:bottom, left:right]


def changed_fraction(frame: np.ndarray, reference: np.ndarray, threshold: float) -> float:
    """Fraction of pixels that differ beyond ``threshold`` once global lighting is removed.

    Gain from the ratio of medians, then offset from the median residual: both medians
    come from the background as long as an item covers less than about half the view.
    """
    gain = float(np.median(frame)) / max(float(np.median(reference)), 1.0)
    residual = frame - gain * reference
    residual -= float(np.median(residual))
    return float(np.mean(np.abs(residual) > threshold))


@dataclass(frozen=True)
class PresenceUpdate:
    """What the detector made of one frame."""

    state: PresenceState
    changed: float  # fraction of the ROI that differs from the empty bin (NaN: not measured)
    motion: float  # fraction of the ROI that changed since the previous frame (NaN: idem)
    classify: bool = False  # classify this frame (one of frames_to_classify)
    triggered: bool = False  # first frame of a new item
    item_complete: bool = False  # last frame to classify for this item


class PresenceDetector:
    """Feed every frame to :meth:`update`; it says when to classify. Not thread-safe."""

    def __init__(self, settings: PresenceSettings | None = None) -> None:
        self.settings = settings or PresenceSettings()
        self.reset()

    def reset(self) -> None:
        """Forget the empty bin and learn it again from the next frames."""
        self.state = PresenceState.LEARNING
        self._background: np.ndarray | None = None
        self._previous_empty: np.ndarray | None = None
        self._warmup: list[np.ndarray] = []
        self._last: np.ndarray | None = None
        self._stable = 0
        self._empty = 0
        self._collected = 0
        self._waited = 0
        self.triggers = 0

    def _analysis_image(self, rgb: np.ndarray) -> np.ndarray:
        crop = crop_roi(rgb, self.settings.roi)
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
        if self._background is not None:
            size = (self._background.shape[1], self._background.shape[0])
        else:
            width = self.settings.grid_width
            size = (width, max(1, round(width * crop.shape[0] / crop.shape[1])))
        small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        return cv2.GaussianBlur(small, (3, 3), 0)

    def update(self, rgb: np.ndarray) -> PresenceUpdate:
        s = self.settings
        grey = self._analysis_image(rgb)
        last, self._last = self._last, grey
        if self.state is PresenceState.LEARNING or self._background is None:
            self._warmup.append(grey)
            if len(self._warmup) >= s.warmup_frames:
                self._background = np.mean(self._warmup, axis=0).astype(np.float32)
                self._warmup = []
                self.state = PresenceState.EMPTY
                log.info("presence: empty bin learnt from %d frames", s.warmup_frames)
            return PresenceUpdate(PresenceState.LEARNING, 0.0, 0.0)

        if self.state is PresenceState.CLASSIFYING:
            # The item was accepted and gets its fixed number of frames whatever they show:
            # comparing would change nothing, and it is a third of the detector's time on
            # exactly the frames that also pay for the model.
            return self._classify_step(math.nan, math.nan, triggered=False)
        changed = changed_fraction(grey, self._background, s.diff_threshold)
        motion = 1.0 if last is None else changed_fraction(grey, last, s.diff_threshold)
        occupied = changed >= s.min_area

        if self.state is PresenceState.EMPTY:
            if occupied and self._restore_previous_empty(grey):
                occupied = False
            if not occupied:
                self._background += s.learning_rate * (grey - self._background)
                return PresenceUpdate(self.state, changed, motion)
            self.state = PresenceState.ENTERING
            self._stable = 0
            self._empty = 0
            return PresenceUpdate(self.state, changed, motion)

        if self.state is PresenceState.ENTERING:
            if not occupied:
                self._stable = 0
                self._empty += 1
                if self._empty >= s.empty_frames:
                    self.state = PresenceState.EMPTY
                return PresenceUpdate(self.state, changed, motion)
            self._empty = 0
            self._stable = self._stable + 1 if motion < s.motion_area else 0
            if self._stable < s.stable_frames:
                return PresenceUpdate(self.state, changed, motion)
            self.triggers += 1
            self._collected = 0
            self.state = PresenceState.CLASSIFYING
            log.debug("presence: item %d stable (changed=%.3f)", self.triggers, changed)
            return self._classify_step(changed, motion, triggered=True)

        # WAIT_EMPTY: the item was reported; re-arm once the view is empty again.
        if occupied:
            self._empty = 0
            self._waited += 1
            if s.absorb_frames and self._waited >= s.absorb_frames:
                log.warning(
                    "presence: view occupied for %d frames after the item was reported; "
                    "taking it as the new empty bin",
                    self._waited,
                )
                self._previous_empty = self._background
                self._background = grey.copy()
                self.state = PresenceState.EMPTY
        else:
            self._empty += 1
            if self._empty >= s.empty_frames:
                self.state = PresenceState.EMPTY
        return PresenceUpdate(self.state, changed, motion)

    def _classify_step(self, changed: float, motion: float, triggered: bool) -> PresenceUpdate:
        self._collected += 1
        complete = self._collected >= self.settings.frames_to_classify
        if complete:
            self.state = PresenceState.WAIT_EMPTY
            self._empty = 0
            self._waited = 0
        return PresenceUpdate(
            PresenceState.CLASSIFYING,
            changed,
            motion,
            classify=True,
            triggered=triggered,
            item_complete=complete,
        )

    def _restore_previous_empty(self, grey: np.ndarray) -> bool:
        """After absorbing a lingering item, its removal shows the old empty bin: no item."""
        previous = self._previous_empty
        if previous is None:
            return False
        if changed_fraction(grey, previous, self.settings.diff_threshold) >= self.settings.min_area:
            return False
        log.info("presence: the view is back to the earlier empty bin")
        self._background = previous
        self._previous_empty = None
        return True
