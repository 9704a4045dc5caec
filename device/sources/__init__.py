"""Frame sources: picamera2, OpenCV (USB, RTSP/HTTP, video file), a folder of images.

``open_source(settings)`` opens the source the ``[source]`` config names;
``CaptureThread(open_source, settings)`` reads it on its own thread with latest-frame
semantics, reopening it with back-off when it fails.
"""

from smartbin.device.sources.base import (
    SOURCE_KINDS,
    Frame,
    FrameSource,
    SourceError,
    SourceSettings,
)
from smartbin.device.sources.capture import CaptureThread, open_source

__all__ = [
    "SOURCE_KINDS",
    "CaptureThread",
    "Frame",
    "FrameSource",
    "SourceError",
    "SourceSettings",
    "open_source",
]
