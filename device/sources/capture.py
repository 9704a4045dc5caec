"""The capture thread: reads a source on its own thread and hands over the latest frame.

Why a thread with one slot: inference must never wait on the camera longer than its
timeout, and the camera must never wait on inference (a stale frame is worth nothing to a
bin, so it is dropped and counted). Failures are retried here, once for every source kind:
the source is reopened with exponential back-off and each failure is logged, never a crash
loop. A non-looping file or folder *ends*: :attr:`CaptureThread.ended` turns true only once
the consumer has taken the last frame, so the final item is never lost.

Files and folders replay at their own pace (``realtime``) so that what the bin sees does not
depend on how fast the machine is; with ``realtime = false`` every frame is handed over and
the thread waits for the consumer instead of dropping (benchmarks, tests).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from smartbin.device.sources.base import Frame, FrameSource, SourceError, SourceSettings
from smartbin.errors import SmartbinError

log = logging.getLogger(__name__)

FPS_WINDOW_S = 5.0


def open_source(settings: SourceSettings) -> FrameSource:
    """Open the source the settings name. Raises SourceError (retryable) or ConfigError."""
    if settings.kind == "opencv":
        from smartbin.device.sources.opencv_source import OpenCVSource

        return OpenCVSource(settings)
    if settings.kind == "folder":
        from smartbin.device.sources.folder import FolderSource

        return FolderSource(settings)
    if settings.kind == "picamera2":
        from smartbin.device.sources.picamera import PiCameraSource

        return PiCameraSource(settings)
    raise SmartbinError(f"[source] kind: unknown source kind '{settings.kind}'")


class CaptureThread:
    """Runs ``source_factory(settings)`` on a thread; ``get()`` returns the newest frame.

    Health figures: :attr:`fps` (measured), :attr:`dropped`, :attr:`failures`,
    :attr:`last_error`, :attr:`state` (``opening``, ``running``, ``reopening`` while a failed
    source waits for its next try, ``ended``, ``stopped``, ``fatal``) and :attr:`retry_in_s`
    (the back-off of the current outage, 0 when running).
    A :class:`~smartbin.errors.SmartbinError` from the factory (e.g. a missing picamera2
    module) cannot be fixed by retrying: it stops the thread and is kept in :attr:`fatal`
    for the daemon to report.
    """

    def __init__(
        self,
        source_factory: Callable[[SourceSettings], FrameSource] = open_source,
        settings: SourceSettings | None = None,
    ) -> None:
        self.settings = settings or SourceSettings()
        self._factory = source_factory
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._finished = False  # the source ended by itself (not looping)
        self._closed = False  # the thread is gone (finished, stopped or fatal)
        self._times: deque[float] = deque()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self.frames = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None
        self.fatal: BaseException | None = None
        self.description = self.settings.kind
        self.state = "opening"
        self.retry_in_s = 0.0
        self._outage_failures = 0  # failures since the last frame, for the recovery log

    # -- consumer side -------------------------------------------------------------------

    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not yet taken, waiting at most ``timeout`` s; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            return frame

    @property
    def ended(self) -> bool:
        """The source finished (not looping) and its last frame has been taken."""
        with self._cond:
            return self._finished and self._slot is None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def fps(self) -> float:
        """Frames per second delivered over the last few seconds (0 when stalled)."""
        with self._cond:
            times = list(self._times)
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- capture side --------------------------------------------------------------------

    def _publish(self, frame: Frame, wait_for_consumer: bool) -> None:
        with self._cond:
            if wait_for_consumer:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            if self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self.frames += 1
            self._times.append(frame.ts)
            while self._times and self._times[0] < frame.ts - FPS_WINDOW_S:
                self._times.popleft()
            self._cond.notify_all()

    def _failed(self, exc: BaseException, wait_s: float) -> None:
        self.failures += 1
        self._outage_failures += 1
        self.last_error = str(exc)
        self.state = "reopening"
        self.retry_in_s = wait_s
        log.warning(
            "source %s failed: %s; reopening in %.1f s (failure %d)",
            self.settings.kind,
            exc,
            wait_s,
            self.failures,
        )

    def _run(self) -> None:
        settings = self.settings
        backoff = settings.reopen_initial_s
        source: FrameSource | None = None
        next_due: float | None = None
        index = 0
        try:
            while not self._stop.is_set():
                if source is None:
                    try:
                        source = self._factory(settings)
                    except SmartbinError:
                        raise
                    except Exception as exc:  # SourceError, or a driver surprise: retry
                        if not isinstance(exc, SourceError):
                            log.exception("unexpected error opening %s", settings.kind)
                        self._failed(exc, backoff)
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, settings.reopen_max_s)
                        continue
                    self.description = source.description
                    log.info("source opened: %s", source.description)
                    next_due = None
                try:
                    rgb = source.read()
                except SmartbinError:
                    raise
                except Exception as exc:  # SourceError, or a driver surprise: reopen
                    if not isinstance(exc, SourceError):
                        log.exception("unexpected error reading %s", source.description)
                    self._failed(exc, backoff)
                    self._close(source)
                    source = None
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, settings.reopen_max_s)
                    continue
                if rgb is None:
                    log.info("source ended: %s", source.description)
                    self.state = "ended"
                    with self._cond:
                        self._finished = True
                    break
                backoff = settings.reopen_initial_s
                if self.state != "running":
                    self._running()
                if source.replay_fps and not source.lossless:
                    next_due = self._pace(next_due, source.replay_fps)
                self._publish(Frame(rgb, time.monotonic(), index), source.lossless)
                index += 1
        except Exception as exc:  # a config problem (SmartbinError): retrying cannot help
            self.fatal = exc
            self.last_error = str(exc)
            self.state = "fatal"
            log.error("source %s cannot run: %s", settings.kind, exc)
        finally:
            if self.state not in ("ended", "fatal"):
                self.state = "stopped"
            if source is not None:
                self._close(source)
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _running(self) -> None:
        """The first frame after opening: report a recovery from an outage once."""
        if self._outage_failures:
            log.warning(
                "source %s recovered after %d failed attempt(s)",
                self.description,
                self._outage_failures,
            )
        self._outage_failures = 0
        self.state = "running"
        self.retry_in_s = 0.0

    def _pace(self, next_due: float | None, fps: float) -> float:
        """Sleep until the frame is due at ``fps``; never burst to catch up after a stall."""
        now = time.monotonic()
        if next_due is not None and next_due > now:
            self._stop.wait(next_due - now)
            now = next_due
        return now + 1.0 / fps

    @staticmethod
    def _close(source: FrameSource) -> None:
        try:
            source.close()
        except Exception as exc:
            log.debug("closing %s failed: %s", source.description, exc)
