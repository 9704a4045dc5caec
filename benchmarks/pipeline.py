"""The whole pipeline as the daemon runs it, stage by stage, through the real device classes.

Frames come from a real video file through :class:`OpenCVSource` (``cv2.VideoCapture``,
BGR to RGB), each goes through :meth:`SortingPipeline.process` (check, presence detector,
ROI crop, :meth:`Classifier.classify` = ``prepare_image`` + set input + ``invoke`` + read and
dequantise, then per item the mean, ``decide`` and a :class:`SortEvent`), and each event
goes to a real :class:`MqttPublisher`: ``submit`` (SQLite outbox in a temp folder, fsync'ed)
and its delivery thread's QoS 1 publish to a real broker.

Nothing is copied: stages are timed by thin wrappers set on the real objects (the
detector's ``update``, the classifier's ``classify`` and its interpreter's ``invoke``, the
pipeline's ``flush`` and sink); the device code runs unchanged in between.

Stages of one **classified** frame (the frames the detector hands to the model):

* ``decode``      ``OpenCVSource.read()``: grab, decode, BGR to RGB;
* ``presence``    ``PresenceDetector.update`` on the frame;
* ``preprocess``  from ``classify`` to ``invoke``: ``prepare_image`` and setting the input;
* ``invoke``      ``interpreter.invoke()``;
* ``postprocess`` reading and dequantising the heads, plus the item's mean, ``decide``
  and ``SortEvent`` (once per item, divided over its frames);
* ``publish``     once per item, divided over its frames: ``submit`` (outbox insert,
  fsync) **and** waiting until the delivery thread had the broker's PUBACK and deleted the
  event from the outbox. The daemon does not wait for the ack on its inference thread; the
  benchmark does so that the delivery's whole cost (JSON, socket, ack, SQLite delete, the
  retained ``last_event``/``counts``) falls inside the measured time instead of leaking into
  the next frames: the figure is an upper bound. ``submit`` alone is reported too;
* ``other``       the rest of ``SortingPipeline.process``: frame check, ROI crop, bookkeeping.

``inference_thread`` is the same total without what the daemon does on other threads
(``decode`` on the capture thread, the delivery after ``submit`` on the MQTT thread): the
time its inference loop spends per classified frame when a core is free for the others.

Frames with no item to classify (empty bin, item settling, waiting for it to leave) cost
``decode + presence + other`` and are reported apart as ``idle_frame``: how many there are
depends on the traffic, not on the model.

The per-frame total counts everything, in line, one frame after another: on a board whose
cores are all busy with inference that is what a classified frame costs.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartbin.benchmarks.stats import summarize
from smartbin.errors import SmartbinError

if TYPE_CHECKING:
    from smartbin.device.bundle import ModelBundle

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
#: The clip `smartbin demo` replays; found only in an editable install (not in the wheel).
SAMPLE_CLIP = REPO / "firmware_config" / "sample" / "demo.mp4"
STAGES = ("decode", "presence", "preprocess", "invoke", "postprocess", "publish", "other")
BIN_ID = "bench"
CONNECT_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 10.0
DEFAULT_BROKER_PORT = 1883


def parse_broker(text: str) -> tuple[str, int]:
    """``host`` or ``host:port`` -> (host, port); ValueError saying what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = port_text, str(DEFAULT_BROKER_PORT)
    if not host:
        raise ValueError(f"broker {text!r} has no host name")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"broker port {port_text!r} is not a TCP port (1..65535)")
    return host, int(port_text)


def resolve_clip(clip: Path | None) -> Path:
    """The video to replay: ``clip``, else the sample clip; SmartbinError if it is missing."""
    path = SAMPLE_CLIP if clip is None else Path(clip).expanduser()
    if not path.is_file():
        if clip is None:
            raise SmartbinError(
                f"no sample clip at {path} (smartbin is not installed editable from a "
                "checkout); pass --clip, e.g. firmware_config/sample/demo.mp4"
            )
        raise SmartbinError(f"--clip {path}: no such file")
    return path


def bench_broker(
    spec: tuple[str, int] | None, workdir: Path, stack: ExitStack
) -> tuple[str, int, str]:
    """(host, port, description) of the broker to publish to.

    ``None``: start one the way ``smartbin demo`` does (mosquitto on PATH, else the embedded
    Python broker) on a free local port; else the broker already listening at ``spec``.
    """
    from smartbin.device.broker import free_port
    from smartbin.device.demo import start_broker

    if spec is None:
        host, port = "127.0.0.1", free_port()
        return host, port, start_broker("auto", host, port, workdir, stack)
    host, port = spec
    return host, port, start_broker("external", host, port, workdir, stack)


@dataclass
class _Clock:
    """What the wrappers recorded during one ``process()`` call (ms, or perf_counter s)."""

    presence_ms: float = 0.0
    flush_ms: float = 0.0
    submit_ms: float = 0.0
    deliver_ms: float = 0.0
    classify_start: float | None = None
    classify_end: float | None = None
    invoke_start: float = 0.0
    invoke_end: float = 0.0
    event: Any = None
    acked: bool = True

    @property
    def classified(self) -> bool:
        return self.classify_end is not None


@dataclass
class _FrameTimes:
    """The stages of one classified frame; the per-item share is added when the item ends."""

    stages: dict[str, float] = field(default_factory=dict)
    #: The part the daemon does on other threads: decode (capture thread) and the wait for
    #: the delivery (delivery thread).
    off_thread: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.stages.values())


class _TimedInterpreter:
    """The classifier's interpreter with ``invoke()`` timed; every other call goes through."""

    def __init__(self, inner: Any, clock: Callable[[], _Clock]) -> None:
        self._inner = inner
        self._clock = clock

    def invoke(self) -> None:
        clock = self._clock()
        clock.invoke_start = time.perf_counter()
        self._inner.invoke()
        clock.invoke_end = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class PipelineBench:
    """One run: real source, pipeline, classifier, outbox, publisher and broker, instrumented."""

    def __init__(self, bundle: ModelBundle, threads: int, use_edgetpu: bool) -> None:
        from smartbin.device.classifier import Classifier

        self.clock = _Clock()
        self.classifier = Classifier(bundle, num_threads=threads, use_edgetpu=use_edgetpu)
        self.threads = threads
        self.publisher: Any = None

    # -- the wrappers ----------------------------------------------------------------------

    def _instrument(self, pipeline: Any) -> None:
        classifier = self.classifier
        classifier.interpreter = _TimedInterpreter(classifier.interpreter, lambda: self.clock)
        classify, update, flush = classifier.classify, pipeline.detector.update, pipeline.flush

        def timed_classify(rgb: Any) -> Any:
            self.clock.classify_start = time.perf_counter()
            try:
                return classify(rgb)
            finally:
                self.clock.classify_end = time.perf_counter()

        def timed_update(rgb: Any) -> Any:
            start = time.perf_counter()
            try:
                return update(rgb)
            finally:
                self.clock.presence_ms += _elapsed_ms(start)

        def timed_flush() -> Any:
            start = time.perf_counter()
            try:
                return flush()
            finally:
                self.clock.flush_ms += _elapsed_ms(start)

        # Instance attributes shadow the methods: process() calls these, the code is theirs.
        classifier.classify = timed_classify
        pipeline.detector.update = timed_update
        pipeline.flush = timed_flush

    def _sink(self, event: Any) -> None:
        """The daemon's sink (``publisher.submit``), then the wait for the PUBACK."""
        start = time.perf_counter()
        self.publisher.submit(event)
        self.clock.submit_ms = _elapsed_ms(start)
        start = time.perf_counter()
        self.clock.acked = self.publisher.drain(ACK_TIMEOUT_S)
        self.clock.deliver_ms = _elapsed_ms(start)
        self.clock.event = event

    # -- the run ---------------------------------------------------------------------------

    def run(
        self,
        clip: Path,
        broker: tuple[str, int] | None,
        runs: int,
        warmup: int,
        progress: Any = None,
    ) -> dict[str, Any]:
        """Replay ``clip`` (again and again) until ``runs`` classified frames were timed."""
        from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
        from smartbin.device.comms.outbox import Outbox
        from smartbin.device.pipeline import SortingPipeline

        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smartbin-bench-")))
            host, port, broker_text = bench_broker(broker, tmp, stack)
            outbox = Outbox(tmp / "state.db")
            stack.callback(outbox.close)
            # No Home Assistant discovery: retained configs on a user's broker would make a
            # phantom device; discovery is sent on connect only, never per event.
            settings = MqttSettings(host=host, port=port, discovery=False)
            self.publisher = MqttPublisher(
                settings, BIN_ID, outbox, lambda: self.classifier.model_version
            )
            self.publisher.start()
            stack.callback(self.publisher.stop)
            if not self.publisher.wait_ready(CONNECT_TIMEOUT_S):
                reason = self.publisher.last_error or "no connection"
                raise SmartbinError(
                    f"MQTT broker {host}:{port}: {reason} ({CONNECT_TIMEOUT_S:g} s)"
                )
            pipeline = SortingPipeline(self.classifier, self._sink, bin_id=BIN_ID)
            self._instrument(pipeline)
            result = self._replay(pipeline, clip, runs, warmup, progress)
        result.update(
            broker=broker_text,
            qos=1,
            waits_for_ack=True,
            threads=self.threads,
            model=self.variant,
            classify_errors=pipeline.classify_errors,
        )
        return result

    @property
    def variant(self) -> str:
        return "edgetpu" if self.classifier.on_edgetpu else "int8"

    def _open(self, clip: Path) -> Any:
        from smartbin.device.sources.base import SourceError, SourceSettings
        from smartbin.device.sources.opencv_source import OpenCVSource

        settings = SourceSettings(kind="opencv", uri=str(clip), loop=False, realtime=False)
        try:
            return OpenCVSource(settings)
        except SourceError as exc:
            raise SmartbinError(str(exc)) from None

    def _replay(
        self, pipeline: Any, clip: Path, runs: int, warmup: int, progress: Any
    ) -> dict[str, Any]:
        from smartbin.device.sources.base import Frame

        k = pipeline.presence_settings.frames_to_classify
        warmup_items = math.ceil(warmup / k)
        timed: list[_FrameTimes] = []
        item: list[_FrameTimes] = []
        idle_ms: list[float] = []
        submit_ms: list[float] = []
        deliver_ms: list[float] = []
        items = passes = index = 0
        width = height = None
        source = self._open(clip)
        fps = source.replay_fps
        items_this_pass = 0
        try:
            while len(timed) < runs:
                start = time.perf_counter()
                rgb = source.read()
                decode_ms = _elapsed_ms(start)
                if rgb is None:  # end of the clip: replay it
                    source.close()
                    passes += 1
                    if items_this_pass == 0:
                        raise SmartbinError(
                            f"--clip {clip}: the presence detector found no item in the whole "
                            "clip; it needs items appearing on an empty bin floor"
                        )
                    items_this_pass = 0
                    source = self._open(clip)
                    continue
                height, width = rgb.shape[:2]
                self.clock = clock = _Clock()
                start = time.perf_counter()
                pipeline.process(Frame(rgb, time.monotonic(), index))
                process_ms = _elapsed_ms(start)
                index += 1
                classify_ms = 0.0
                if clock.classified:
                    classify_ms = (clock.classify_end - clock.classify_start) * 1000.0
                other_ms = max(0.0, process_ms - clock.presence_ms - classify_ms - clock.flush_ms)
                if not clock.classified:
                    idle_ms.append(decode_ms + clock.presence_ms + other_ms)
                elif clock.invoke_end:  # else the classifier raised: counted by the pipeline
                    item.append(
                        _FrameTimes(
                            {
                                "decode": decode_ms,
                                "presence": clock.presence_ms,
                                "preprocess": (clock.invoke_start - clock.classify_start) * 1e3,
                                "invoke": (clock.invoke_end - clock.invoke_start) * 1e3,
                                "postprocess": (clock.classify_end - clock.invoke_end) * 1e3,
                                "publish": 0.0,
                                "other": other_ms,
                            }
                        )
                    )
                if clock.flush_ms == 0.0:
                    continue
                # The item ended in this frame: share its per-event cost among its frames.
                frames, item = item, []
                if clock.event is None or not frames:
                    continue  # nothing could be classified: no event, nothing to time
                if not clock.acked:
                    raise SmartbinError(
                        f"the broker did not acknowledge an event within {ACK_TIMEOUT_S:g} s"
                    )
                items += 1
                items_this_pass += 1
                if items <= warmup_items:
                    continue
                publish = clock.submit_ms + clock.deliver_ms
                event_post = max(0.0, clock.flush_ms - publish)
                submit_ms.append(clock.submit_ms)
                deliver_ms.append(clock.deliver_ms)
                for frame in frames:
                    frame.stages["postprocess"] += event_post / len(frames)
                    frame.stages["publish"] += publish / len(frames)
                    frame.off_thread = frame.stages["decode"] + clock.deliver_ms / len(frames)
                if progress is not None:  # the last item may overshoot --runs: cap the bar
                    progress.update(min(len(frames), runs - len(timed)))
                timed += frames
        finally:
            source.close()
        return self._report(timed, idle_ms, submit_ms, deliver_ms, k, warmup_items) | {
            "clip": {
                "path": str(clip),
                "width": width,
                "height": height,
                "fps": fps,
                "passes": passes,
                "frames_read": index,
            }
        }

    @staticmethod
    def _report(
        timed: list[_FrameTimes],
        idle_ms: list[float],
        submit_ms: list[float],
        deliver_ms: list[float],
        k: int,
        warmup_items: int,
    ) -> dict[str, Any]:
        totals = [frame.total for frame in timed]
        total = summarize(totals)
        mean_total = float(total["mean_ms"])
        stages: dict[str, dict[str, float]] = {}
        for name in STAGES:
            values = summarize([frame.stages[name] for frame in timed])
            stages[name] = {
                "p50_ms": float(values["p50_ms"]),
                "mean_ms": float(values["mean_ms"]),
                "share": float(values["mean_ms"]) / mean_total,
            }
        per_event = [s + d for s, d in zip(submit_ms, deliver_ms, strict=True)]
        return {
            **total,
            "fps": 1000.0 / mean_total,
            "inference_thread": summarize([frame.total - frame.off_thread for frame in timed]),
            "classified_frames": len(timed),
            "items": len(submit_ms),
            "warmup_items": warmup_items,
            "publish_per_frames": k,
            "stages": stages,
            "publish_per_event": {
                "submit_ms": summarize(submit_ms),
                "deliver_ms": summarize(deliver_ms),
                "total_ms": summarize(per_event),
            },
            "idle_frame": summarize(idle_ms) if idle_ms else None,
        }
