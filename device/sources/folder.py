"""Folder source: a directory of images replayed in sorted order, optionally looping.

Useful to replay frames recorded on a bin, or to demo the daemon without a camera. An image
that cannot be decoded (corrupt, empty, truncated, or so large that Pillow refuses it as a
decompression bomb) is logged (path + reason) and skipped; it never stops the replay.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from smartbin.device.preprocess import IMAGE_SUFFIXES, load_image_rgb
from smartbin.device.sources.base import SourceError, SourceSettings
from smartbin.errors import ImageReadError

log = logging.getLogger(__name__)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), in sorted order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class FolderSource:
    """Replays the images of one folder; re-lists the folder at each pass when looping."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.folder = Path(str(settings.uri)).expanduser()
        self.description = f"image folder {self.folder}"
        self.replay_fps: float | None = settings.fps or settings.folder_fps
        self.lossless = not settings.realtime
        self.skipped: list[Path] = []
        self._pending: list[Path] = self._scan()
        self._read_this_pass = 0

    def _scan(self) -> list[Path]:
        if not self.folder.is_dir():
            raise SourceError(f"{self.description}: not a directory")
        images = list_images(self.folder)
        if not images:
            raise SourceError(f"{self.description}: no image files in it")
        return images

    def read(self) -> np.ndarray | None:
        while True:
            if not self._pending:
                if not self.settings.loop:
                    return None
                if self._read_this_pass == 0:
                    raise SourceError(f"{self.description}: no readable image in it")
                self._pending = self._scan()
                self._read_this_pass = 0
            path = self._pending.pop(0)
            try:
                rgb = load_image_rgb(path)
            except ImageReadError as exc:
                self._skip(path, exc.reason)
                continue
            except Image.DecompressionBombError as exc:  # not an OSError: not caught above
                self._skip(path, f"too large to decode ({exc})")
                continue
            self._read_this_pass += 1
            return rgb

    def _skip(self, path: Path, reason: str) -> None:
        log.warning("skipping image %s: %s", path, reason)
        self.skipped.append(path)

    def close(self) -> None:
        self._pending = []
