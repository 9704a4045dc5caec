"""OpenCV source: a USB camera (index or /dev node), an RTSP/HTTP stream or GStreamer
pipeline, or a video file (optionally looping)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from smartbin.device.sources.base import SourceError, SourceSettings, ensure_rgb_uint8

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
# A file whose container does not say its frame rate is replayed at this rate.
FALLBACK_FILE_FPS = 10.0


def camera_index(uri: str | int) -> int | None:
    """``0`` / ``"0"`` -> 0 (a USB camera); anything else -> None."""
    if isinstance(uri, int):
        return uri
    text = str(uri).strip()
    return int(text) if text.isdigit() else None


def is_stream(uri: str | int) -> bool:
    """A network stream, a GStreamer pipeline (``... ! appsink``) or a /dev video node."""
    text = str(uri).strip()
    return text.lower().startswith(STREAM_SCHEMES) or "!" in text or text.startswith("/dev/")


class OpenCVSource:
    """``cv2.VideoCapture`` over a camera index, a stream URL or a video file.

    Live sources (camera, stream) raise :class:`SourceError` when no frame comes, so the
    capture thread reopens them. A video file ends (``read() -> None``) or rewinds when
    ``loop`` is set.
    """

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        index = camera_index(settings.uri)
        self.is_file = index is None and not is_stream(settings.uri)
        if index is not None:
            self.description = f"USB camera {index}"
            target: int | str = index
        elif not self.is_file:
            text = str(settings.uri).strip()
            kind = "camera" if text.startswith("/dev/") else "stream"
            self.description = f"{kind} {text}"
            target = text
        else:
            path = Path(str(settings.uri)).expanduser()
            self.description = f"video file {path}"
            if not path.is_file():
                raise SourceError(f"{self.description}: file not found")
            target = str(path)
        self._target = target
        self._cap = self._open()
        self.lossless = self.is_file and not settings.realtime
        self.replay_fps: float | None = None
        if self.is_file:
            native = self._cap.get(cv2.CAP_PROP_FPS)
            native = native if native and 0 < native < 1000 else FALLBACK_FILE_FPS
            self.replay_fps = settings.fps or native
        self._frames_this_pass = 0

    def _open(self) -> cv2.VideoCapture:
        try:
            if isinstance(self._target, str) and "!" in self._target:
                cap = cv2.VideoCapture(self._target, cv2.CAP_GSTREAMER)
            else:
                cap = cv2.VideoCapture(self._target)
        except cv2.error as exc:
            raise SourceError(f"{self.description}: cannot open ({exc})") from None
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.description}: cannot open (unplugged, wrong URL or codec?)")
        if not self.is_file:
            s = self.settings
            if s.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
            if s.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
            if s.fps:
                cap.set(cv2.CAP_PROP_FPS, s.fps)
            # Keep the driver's queue short so a slow consumer sees fresh frames.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _grab(self) -> np.ndarray | None:
        try:
            ok, frame = self._cap.read()
        except cv2.error as exc:
            raise SourceError(f"{self.description}: read failed ({exc})") from None
        return frame if ok and frame is not None else None

    def read(self) -> np.ndarray | None:
        frame = self._grab()
        if frame is None and self.is_file:
            if not self.settings.loop:
                return None
            if self._frames_this_pass == 0:
                raise SourceError(f"{self.description}: no readable frame in the file")
            log.debug("%s: end reached, looping", self.description)
            self._cap.release()
            self._cap = self._open()
            self._frames_this_pass = 0
            frame = self._grab()
        if frame is None:
            raise SourceError(f"{self.description}: no frame (unplugged or stream lost?)")
        self._frames_this_pass += 1
        return ensure_rgb_uint8(frame, bgr=True)

    def close(self) -> None:
        self._cap.release()
