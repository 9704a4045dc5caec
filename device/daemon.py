"""The bin daemon: camera -> presence -> classifier -> outbox -> MQTT, supervised.

Threads and who owns what:

* the capture thread (``CaptureThread``) reads the source and keeps only the newest frame;
* the pipeline thread runs ``SortingPipeline.run``: presence, classification, one
  ``SortEvent`` per item handed to :meth:`MqttPublisher.submit`, which stores it in the
  SQLite outbox *before* trying the network, so no event is ever dropped;
* paho's network thread (inside the publisher) delivers the outbox and runs commands;
* the main thread (this module) supervises: systemd readiness and watchdog, the health
  report, the model watcher, signals, and the orderly end (drain, "offline").

The watchdog is pinged only while the pipeline thread is alive, so systemd restarts a bin
whose sorting died even though the process lives on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from smartbin.device.config import BinConfig
from smartbin.device.events import utc_now_iso
from smartbin.device.logsetup import fields
from smartbin.device.reload import BundleWatcher, ModelManager, ReloadResult
from smartbin.device.sources.base import Frame
from smartbin.device.systemd import Notifier
from smartbin.errors import ConfigError, SmartbinError

log = logging.getLogger(__name__)

TICK_S = 0.2
CPU_TEMP_FILE = Path("/sys/class/thermal/thermal_zone0/temp")


def read_cpu_temp(path: Path = CPU_TEMP_FILE) -> float | None:
    """CPU temperature in °C where the kernel exposes it (Pi: always), else None."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


class RecordingCapture:
    """The capture thread as the pipeline sees it, remembering the last frame handed over.

    Why: the ``snapshot`` command must show what the bin saw last, without a second reader
    of the camera and without touching the pipeline.
    """

    def __init__(self, capture: Any) -> None:
        self._capture = capture
        self.last_frame: Frame | None = None

    def start(self) -> RecordingCapture:
        self._capture.start()
        return self

    def get(self, timeout: float = 1.0) -> Frame | None:
        frame = self._capture.get(timeout)
        if frame is not None:
            self.last_frame = frame
        return frame

    def __getattr__(self, name: str) -> Any:  # ended, fatal, fps, ...
        return getattr(self._capture, name)


def encode_jpeg(frame: Frame, quality: int = 85) -> bytes:
    import cv2

    bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding of the last frame failed")
    return data.tobytes()


class Daemon:
    """One bin. ``run()`` returns the process exit code."""

    def __init__(self, config: BinConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self.started = time.monotonic()
        self.pipeline: Any = None
        self.capture: Any = None
        self.publisher: Any = None
        self.models: ModelManager | None = None
        self._pipeline_error: BaseException | None = None
        self.last_reload: dict[str, Any] | None = None

    # -- control -------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            log.info("stopping", extra=fields(reason=reason))
        self.stop_event.set()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.request_stop(signal.Signals(signum).name)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # -- pieces --------------------------------------------------------------------------

    def _install_classifier(self, classifier: Any) -> None:
        if self.pipeline is not None:
            self.pipeline.classifier = classifier

    def _sink(self, event: Any) -> None:
        """Outbox first (inside submit): an event survives a dead broker or a power cut."""
        self.publisher.submit(event)

    def reload_model(self, reason: str) -> ReloadResult:
        """Reload the configured bundle; the outcome goes into the (retained) health report
        at once, so a refused model is visible on MQTT whoever triggered the reload."""
        assert self.models is not None
        result = self.models.reload(reason)
        self.last_reload = result.to_payload() | {"reason": reason, "ts": utc_now_iso()}
        if self.publisher is not None:
            self._publish_health()
        return result

    def _cmd_reload(self) -> str:
        """``reload_model`` command: a refusal becomes the command's error reply."""
        result = self.reload_model("command")
        if not result.ok:
            raise SmartbinError(
                f"reload refused, still running model {result.model_version}: {result.error}"
            )
        return f"model {result.previous_version} -> {result.model_version}"

    def _cmd_snapshot(self) -> bytes | None:
        """``snapshot`` command: the last frame the pipeline took, as JPEG."""
        frame = self.capture.last_frame if self.capture is not None else None
        return encode_jpeg(frame) if frame is not None else None

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "model_version": self.models.model_version if self.models else None,
        }
        if self.capture is not None:
            data.update(
                fps=round(self.capture.fps, 2),
                frames=self.capture.frames,
                dropped_frames=self.capture.dropped,
                source=self.capture.description,
                source_state=self.capture.state,
                source_retry_s=self.capture.retry_in_s,
                source_failures=self.capture.failures,
                source_error=self.capture.last_error,
            )
        if self.pipeline is not None:
            stats = self._pipeline_stats()
            p50 = stats.get("inference_p50_ms")
            data.update(
                inference_ms=round(p50, 2) if p50 is not None else None,
                items=stats.get("events"),
                presence_state=stats.get("presence_state"),
                classify_errors=stats.get("classify_errors"),
                bad_frames=stats.get("bad_frames"),
                sink_errors=stats.get("sink_errors"),
            )
        data["cpu_temp_c"] = read_cpu_temp()
        if self.last_reload is not None:
            data["model_reload"] = self.last_reload
        return data

    def _pipeline_stats(self) -> dict[str, Any]:
        """The pipeline's figures, read from another thread (a deque may change meanwhile)."""
        for _ in range(3):
            try:
                return self.pipeline.health()
            except RuntimeError:  # "deque mutated during iteration": just read again
                continue
        return {}

    def _run_pipeline(self) -> None:
        try:
            self.pipeline.run(self.capture, self.stop_event)
        except BaseException as exc:
            self._pipeline_error = exc
            log.exception("the sorting pipeline died")

    # -- the run -------------------------------------------------------------------------

    def run(self) -> int:
        from smartbin.device.comms.mqtt import MqttPublisher
        from smartbin.device.comms.outbox import Outbox
        from smartbin.device.pipeline import SortingPipeline
        from smartbin.device.sources import CaptureThread, open_source

        cfg = self.config
        self.install_signal_handlers()
        self.models = ModelManager(cfg.model, cfg.threads, cfg.edgetpu, self._install_classifier)
        classifier = self.models.load_initial()  # a broken bundle: BundleError, exit 2
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{cfg.config_file}: state_dir: cannot create {cfg.state_dir} ({exc.strerror})"
            ) from None
        outbox = Outbox(cfg.outbox_path, max_bytes=cfg.outbox_max_bytes)
        models = self.models
        self.publisher = MqttPublisher(
            cfg.mqtt,
            cfg.bin_id,
            outbox,
            lambda: models.model_version,
            on_reload_model=self._cmd_reload,
            on_snapshot=self._cmd_snapshot,
            health_provider=self.health,  # published every health.interval_s while connected
            held_capacity=cfg.outbox_memory_events,
        )
        self.pipeline = SortingPipeline(
            classifier,
            self._sink,
            bin_id=cfg.bin_id,
            presence=cfg.presence,
            unknown_threshold=cfg.unknown_threshold,
        )
        self.capture = RecordingCapture(CaptureThread(open_source, cfg.source))
        watcher = (
            BundleWatcher(self.models.folder, cfg.watch_interval_s) if cfg.watch_model else None
        )
        log.info(
            "starting",
            extra=fields(
                bin_id=cfg.bin_id,
                model_version=self.models.model_version,
                source=f"{cfg.source.kind}:{cfg.source.uri}",
                broker=f"{cfg.mqtt.host}:{cfg.mqtt.port}",
                outbox=str(cfg.outbox_path),
                pending=outbox.pending_count(),
                outbox_max_mb=cfg.outbox_max_mb,
            ),
        )
        self.publisher.start()  # never blocks on the broker: events queue in the outbox
        self.capture.start()
        worker = threading.Thread(target=self._run_pipeline, name="pipeline", daemon=True)
        worker.start()
        self.notifier.ready(f"sorting, model {self.models.model_version}")
        try:
            code = self._supervise(worker, watcher)
        finally:
            self._shutdown(worker, outbox)
        return code

    def _supervise(self, worker: threading.Thread, watcher: BundleWatcher | None) -> int:
        """The main loop; returns the exit code once the run is over."""
        while True:
            now = time.monotonic()
            if worker.is_alive():
                self.notifier.watchdog(now)
            if watcher is not None and watcher.poll(now):
                self.reload_model("bundle changed")
            if self.stop_event.is_set():
                return 0
            if not worker.is_alive():
                return self._finished()
            self.stop_event.wait(TICK_S)

    def _finished(self) -> int:
        """The pipeline thread returned without being asked: source end, fatal, or crash."""
        fatal = getattr(self.capture, "fatal", None)
        if self._pipeline_error is not None:
            return 1
        if fatal is not None:
            log.error("the source cannot run", extra=fields(error=str(fatal)))
            return 2 if isinstance(fatal, SmartbinError) else 1
        if self.capture.ended:
            self.stop_reason = "source ended"
            log.info(
                "source ended; delivering the outbox", extra=fields(items=self.pipeline.events)
            )
            drained = self._drain(self.config.drain_timeout_s)
            return 0 if drained or self.stop_event.is_set() else 1
        return 1

    def _drain(self, timeout: float) -> bool:
        """Wait for the broker to take every pending event (it may be down: keep waiting),
        bounded by ``timeout``; SIGTERM cuts it short. The watchdog keeps being fed: the
        daemon is doing its job, not hanging."""
        self.notifier.status("delivering the outbox")
        deadline = time.monotonic() + timeout
        drained = False
        while not drained:
            self.notifier.watchdog()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stop_event.is_set():
                break
            drained = bool(self.publisher.drain(min(remaining, 0.5)))
        pending = self.publisher.spool.pending_count()  # never raises for a broken database
        if drained:
            log.info("outbox delivered", extra=fields(pending=pending))
        else:
            log.warning(
                "outbox not fully delivered; kept for the next start",
                extra=fields(pending=pending, timeout_s=timeout),
            )
        return drained

    def _publish_health(self) -> None:
        try:
            self.publisher.publish_health(self.health())
        except Exception:
            log.exception("health report failed")

    def _shutdown(self, worker: threading.Thread, outbox: Any) -> None:
        cfg = self.config
        self.notifier.stopping(f"stopping ({self.stop_reason or 'end'})")
        self.stop_event.set()
        worker.join(cfg.stop_timeout_s)  # the pipeline reports the item in progress
        if worker.is_alive():
            log.error(
                "the pipeline did not stop in time", extra=fields(timeout_s=cfg.stop_timeout_s)
            )
        self.capture.stop()
        self._publish_health()
        # Flushes what it can within the timeout (when connected), then "offline".
        self.publisher.stop(cfg.stop_timeout_s)
        outbox.close()
        self.notifier.close()
        log.info("stopped", extra=fields(reason=self.stop_reason or "end"))
