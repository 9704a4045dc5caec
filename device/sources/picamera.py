"""Raspberry Pi camera through picamera2 (libcamera).

picamera2 comes from Raspberry Pi OS (``apt install python3-picamera2``; create the venv with
``--system-site-packages``), so it is imported lazily, only when this source is opened.
Tests cannot have a Pi camera: they set :data:`picamera2_class` to a tiny stand-in; the code
path below is the one a bin runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from smartbin.device.sources.base import SourceError, SourceSettings, ensure_rgb_uint8
from smartbin.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 480)

# Indirection for tests only: None = ``picamera2.Picamera2``.
picamera2_class: Callable[..., Any] | None = None


def _picamera2_class() -> Callable[..., Any]:
    if picamera2_class is not None:
        return picamera2_class
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise ConfigError(
            "[source] kind = 'picamera2' but the picamera2 module cannot be imported "
            f"({exc}); on Raspberry Pi OS: apt install python3-picamera2 and create the venv "
            "with --system-site-packages"
        ) from None
    return Picamera2


class PiCameraSource:
    """One Picamera2 instance streaming the ``main`` stream in RGB888.

    libcamera's ``RGB888`` stores pixels as B, G, R bytes (OpenCV's order), hence the
    conversion to RGB on every frame.
    """

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        try:
            camera_num = int(str(settings.uri).strip() or 0)
        except ValueError:
            raise ConfigError(
                f"[source] uri: picamera2 wants a camera number, got '{settings.uri}'"
            ) from None
        self.description = f"Pi camera {camera_num}"
        self.replay_fps = None
        self.lossless = False
        camera_class = _picamera2_class()
        size = (
            settings.width or DEFAULT_SIZE[0],
            settings.height or DEFAULT_SIZE[1],
        )
        self._camera: Any = None
        try:
            self._camera = camera_class(camera_num)
            controls = {"FrameRate": float(settings.fps)} if settings.fps else {}
            config = self._camera.create_video_configuration(
                main={"size": size, "format": "RGB888"}, controls=controls
            )
            self._camera.configure(config)
            self._camera.start()
        except ConfigError:
            raise
        except Exception as exc:  # libcamera raises RuntimeError, IndexError, OSError...
            self.close()
            raise SourceError(f"{self.description}: cannot start ({exc})") from None
        log.info("%s started at %dx%d", self.description, *size)

    def read(self) -> np.ndarray:
        try:
            frame = self._camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"{self.description}: capture failed ({exc})") from None
        if frame is None:
            raise SourceError(f"{self.description}: capture returned no frame")
        return ensure_rgb_uint8(np.asarray(frame), bgr=True)

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for step in ("stop", "close"):
            try:
                getattr(camera, step)()
            except Exception as exc:
                log.debug("%s: %s() failed while closing: %s", self.description, step, exc)
