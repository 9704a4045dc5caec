"""What every frame source shares: the settings, the frame, the source interface, its error.

A source is deliberately dumb: ``read()`` gives the next uint8 RGB picture, ``None`` when a
non-looping file or folder is finished, or raises :class:`SourceError` when the device or
stream fails. Retrying, back-off, pacing and dropping stale frames live in one place,
:class:`smartbin.device.sources.capture.CaptureThread`, so each source stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from smartbin.errors import ConfigError

SOURCE_KINDS = ("picamera2", "opencv", "folder")


class SourceError(Exception):
    """A source that cannot deliver right now (unplugged, stream lost, file missing).

    Not a :class:`~smartbin.errors.SmartbinError`: the capture thread reopens the source with
    back-off instead of stopping the bin.
    """


@dataclass
class SourceSettings:
    """The ``[source]`` table of the bin's config. Every field has a default.

    kind: ``"picamera2"`` (Raspberry Pi camera), ``"opencv"`` (USB camera, RTSP/HTTP stream
        or a video file) or ``"folder"`` (a directory of images, replayed in sorted order).
    uri: what to open. opencv: a USB index (``0`` or ``"0"``) or ``/dev/videoN`` node, an
        ``rtsp://`` / ``http(s)://`` URL, a GStreamer pipeline (``... ! appsink``)
        or a video file path. folder: the directory. picamera2: the camera number.
    loop: files and folders only: start again at the end instead of ending. A source that
        does not loop *ends*, and the daemon exits 0 once the last item is reported.
    fps: cameras: the frame rate asked of the device (if it supports it). Files and folders:
        the replay rate; ``None`` = the video's own fps (folders: ``folder_fps``).
    folder_fps: a folder's replay rate when ``fps`` is not set (images carry no rate).
    realtime: files and folders only. ``True``: replay at ``fps``, dropping frames when the
        consumer is slower, like a camera. ``False``: hand over every frame as fast as the
        consumer takes them (benchmarks, tests), nothing is dropped.
    width, height: cameras only: the capture size asked of the device; ``None`` = its default.
    reopen_initial_s: first wait before reopening a failed source; doubles on each failure.
    reopen_max_s: the longest wait between two reopen attempts.
    """

    kind: str = "opencv"
    uri: str | int = "0"
    loop: bool = False
    fps: float | None = None
    realtime: bool = True
    width: int | None = None
    height: int | None = None
    reopen_initial_s: float = 0.5
    reopen_max_s: float = 30.0
    folder_fps: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(
                f"[source] kind: '{self.kind}' is not one of {', '.join(SOURCE_KINDS)}"
            )
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"[source] fps: must be > 0, got {self.fps}")
        if self.folder_fps <= 0:
            raise ConfigError(f"[source] folder_fps: must be > 0, got {self.folder_fps}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"[source] {name}: must be > 0, got {value}")
        if self.reopen_initial_s <= 0 or self.reopen_max_s < self.reopen_initial_s:
            raise ConfigError(
                "[source] reopen_initial_s/reopen_max_s: need 0 < initial <= max, got "
                f"{self.reopen_initial_s}/{self.reopen_max_s}"
            )


@dataclass(frozen=True)
class Frame:
    """One picture as it left the capture thread."""

    rgb: np.ndarray  # HxWx3 uint8, RGB order
    ts: float  # time.monotonic() when it was captured
    index: int  # counts every frame the source delivered, dropped ones included


class FrameSource(Protocol):
    """An opened source. Not thread-safe: only the capture thread calls it."""

    description: str  # for logs: "video file clip.mp4", "USB camera 0", ...
    replay_fps: float | None  # pace for files/folders; None for live sources (self-paced)
    lossless: bool  # True: the capture thread waits for the consumer instead of dropping

    def read(self) -> np.ndarray | None:
        """The next uint8 RGB frame; ``None`` = finished (non-looping file/folder).

        Raises :class:`SourceError` when the source failed and must be reopened.
        """
        ...

    def close(self) -> None: ...


def ensure_rgb_uint8(frame: np.ndarray, bgr: bool) -> np.ndarray:
    """Every frame leaving a source is HxWx3 uint8 RGB, whatever the device produced.

    Greyscale is repeated into three channels, a 4th (alpha/padding) channel dropped, 16-bit
    pixels keep their top 8 bits; anything else raises :class:`SourceError` saying why.
    """
    from smartbin.device.preprocess import bgr_to_rgb

    if frame.dtype == np.uint16:  # 16-bit sensors / PNGs: same picture, 8 bits per pixel
        frame = (frame >> 8).astype(np.uint8)
    if frame.dtype != np.uint8:
        raise SourceError(f"frame has dtype {frame.dtype}, expected uint8")
    if frame.ndim == 2:
        return np.ascontiguousarray(np.stack([frame] * 3, axis=-1))
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise SourceError(f"frame has shape {frame.shape}, expected HxWx3")
    if frame.shape[2] == 4:  # BGRA / XBGR padding: drop the 4th channel
        frame = frame[:, :, :3]
    if bgr:
        return bgr_to_rgb(np.ascontiguousarray(frame))
    return np.ascontiguousarray(frame)
