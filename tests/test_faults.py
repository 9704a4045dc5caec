"""Faults a bin meets in months unattended: the broker going away again and again, power cuts
(SIGKILL) while sorting, a camera that vanishes, an outbox that cannot be written, a broken
model pushed onto it. Real mosquitto, real processes, real SQLite, real models.

The checks are about what leaves the bin (MQTT, the outbox file, the log, health reports):
every event id the bin logged arrives, in order, none invented; counts agree with events.
"""

from __future__ import annotations

import collections
import http.server
import json
import logging
import random
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_broker import Broker, Subscriber, first_occurrences
from test_daemon import BIN, PREFIX, _outbox_ids, write_config

from smartbin.benchmarks.clips import make_clip
from smartbin.device.classifier import Classifier
from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
from smartbin.device.comms.outbox import Outbox, OutboxWriteError
from smartbin.device.events import SortEvent
from smartbin.device.reload import ModelManager
from smartbin.device.sources.base import SourceSettings
from smartbin.device.sources.capture import CaptureThread

DATA = Path(__file__).parent / "data" / "trashnet"
EVENT = PREFIX + "event"
HEALTH = PREFIX + "health"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """All six TrashNet photos, one after another (about 23 s in real time)."""
    images = sorted(DATA.glob("*/*.jpg"))
    out = tmp_path_factory.mktemp("long") / "six.mp4"
    return out, make_clip(images, out, fps=10)


def ids_of(sub: Subscriber) -> list[str]:
    return [m.json()["id"] for m in sub.on(EVENT)]


def health_reports(sub: Subscriber) -> list[dict]:
    return [m.json() for m in sub.on(HEALTH)]


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


# -- the broker goes away, several times -------------------------------------------------------


def test_repeated_broker_restarts_lose_nothing_and_keep_order(
    tmp_path,
    broker_factory,
    subscriber_factory,
    daemons,
    long_clip,
    tiny_bundle,
) -> None:
    clip_path, shown = long_clip
    broker = broker_factory(persistence=True)
    sub = subscriber_factory(broker, [EVENT], client_id="test-restarts", clean_session=False)
    config = write_config(
        tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle, realtime=True, fps=10
    )  # real time: about 23 s of items, time for three outages with reconnects between
    daemon = daemons(config)
    restarts = 0
    for _ in range(3):
        # Connected and delivering again (an event arrived since the last restart): pull the
        # plug once more, while items keep coming.
        seen = len(set(ids_of(sub)))
        daemon.wait_until(lambda seen=seen: len(set(ids_of(sub))) > seen, 60, "a new delivery")
        broker.stop()
        time.sleep(1.5)
        broker.start()
        restarts += 1
    assert daemon.wait(120) == 0, daemon.log()[-3000:]
    expected = daemon.event_ids()
    assert len(expected) == shown
    sub.wait_until(EVENT, lambda m: m.json()["id"] == expected[-1], timeout=30)
    ids = ids_of(sub)
    assert first_occurrences(ids) == expected  # every one, in order, none invented
    assert len(ids) - len(expected) <= restarts, f"more repeats than restarts: {ids}"
    assert daemon.log().count("MQTT: connected to") >= restarts + 1


# -- power cuts while sorting ------------------------------------------------------------------


def test_sigkill_at_random_points_then_restart_delivers_everything(
    tmp_path,
    broker_factory,
    subscriber_factory,
    daemons,
    clip,
    tiny_bundle,
) -> None:
    clip_path, shown = clip
    rng = random.Random(7)  # seeded: the same kill points on every run
    broker = broker_factory(persistence=True)
    sub = subscriber_factory(broker, [PREFIX + "#"], client_id="test-kills", clean_session=False)
    broker.stop()  # down while the bin is killed again and again: the outbox fills up
    looping = write_config(
        tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle, loop=True,
        realtime=True, fps=20,
    )  # fmt: skip
    db = tmp_path / "state" / "state.db"
    logged: list[str] = []
    for round_ in range(3):
        daemon = daemons(looping, f"kill{round_}")
        before = len(logged)
        daemon.wait_until(
            lambda before=before: db.exists() and len(_outbox_ids(db)) > before,
            60,
            "a new stored event",
        )
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere in the middle of an item, or between
        daemon.kill(signal.SIGKILL)
        daemon.wait(10)
        stored = _outbox_ids(db)
        logged += daemon.event_ids()
        # Every event logged is on disk, except at most the one whose commit the kill cut.
        assert stored == logged[: len(stored)] and len(logged) - len(stored) <= 1, round_
        logged = stored  # an event logged but never committed was never reported
        assert integrity(db) == "ok"

    broker.start()
    final = write_config(tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle)
    last = daemons(final, "final")
    assert last.wait(90) == 0, last.log()[-3000:]
    new = last.event_ids()
    assert len(new) == shown
    expected = logged + new
    sub.wait_until(EVENT, lambda m: m.json()["id"] == expected[-1], timeout=30)
    events = {}
    for message in sub.on(EVENT):
        events.setdefault(message.json()["id"], message.json())
    assert list(events) == expected  # the backlog first, in order, nothing lost or invented
    assert _outbox_ids(db) == []
    # Counts are written with each event in one transaction: they match the events exactly.
    counts = sub.wait_until(
        PREFIX + "counts", lambda m: sum(m.json().values()) == len(expected), timeout=20
    ).json()
    wanted = collections.Counter(e["decision"] for e in events.values())
    assert {k: v for k, v in counts.items() if v} == dict(wanted)
    assert integrity(db) == "ok"


# -- the camera goes away and comes back -------------------------------------------------------


def max_attempts(elapsed_s: float, initial: float, maximum: float) -> int:
    """How many reopen attempts exponential back-off allows in ``elapsed_s`` (plus slack)."""
    attempts, waited, delay = 0, 0.0, initial
    while waited <= elapsed_s:
        attempts += 1
        waited += delay
        delay = min(delay * 2, maximum)
    return attempts + 1


def test_camera_file_removed_and_restored_is_reported_and_recovered(
    tmp_path,
    broker,
    subscriber_factory,
    daemons,
    clip,
    tiny_bundle,
) -> None:
    clip_src, _ = clip
    video = tmp_path / "camera.mp4"
    shutil.copy(clip_src, video)
    sub = subscriber_factory(broker, [PREFIX + "#"])
    config = write_config(
        tmp_path, port=broker.port, clip=video, model=tiny_bundle, loop=True, realtime=True,
        fps=40, extra="",
    )  # fmt: skip
    text = config.read_text().replace(
        "[mqtt]", "reopen_initial_s = 0.2\nreopen_max_s = 1.0\n[mqtt]"
    )
    config.write_text(text)
    daemon = daemons(config)
    sub.wait_for(EVENT, 1, timeout=60)

    hidden = tmp_path / "unplugged.mp4"
    video.rename(hidden)  # the next loop of the file finds it gone
    gone = time.monotonic()

    def reopening() -> bool:
        return any(r.get("source_state") == "reopening" for r in health_reports(sub))

    daemon.wait_until(reopening, 30, "health to report the source reopening")
    report = [r for r in health_reports(sub) if r.get("source_state") == "reopening"][-1]
    assert "camera.mp4" in report["source_error"] and report["source_failures"] >= 1
    assert report["source_retry_s"] > 0
    time.sleep(2.0)
    events_while_gone = len(sub.on(EVENT))
    hidden.rename(video)
    back = time.monotonic()

    def running_again() -> bool:
        reports = health_reports(sub)
        return bool(reports) and reports[-1].get("source_state") == "running"

    daemon.wait_until(running_again, 30, "health to report the source running again")
    sub.wait_for(EVENT, events_while_gone + 1, timeout=60)  # sorting again
    failures = health_reports(sub)[-1]["source_failures"]
    assert 1 <= failures <= max_attempts(back - gone, 0.2, 1.0), failures  # back-off, no storm
    assert "recovered after" in daemon.log()
    daemon.kill(signal.SIGTERM)
    assert daemon.wait(30) == 0  # it never crashed


class MjpegCamera:
    """A network camera as many IP cameras are: MJPEG over HTTP (multipart/x-mixed-replace).

    Each connection streams the clip's frames once, then the stream ends; :meth:`close` makes
    the camera vanish (connection refused), a new one on the same port brings it back.
    """

    def __init__(self, clip: Path, port: int = 0) -> None:
        capture = cv2.VideoCapture(str(clip))
        self.jpegs = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", frame)[1].tobytes())
        capture.release()
        jpegs = self.jpegs

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace;boundary=frame")
                self.end_headers()
                for jpeg in jpegs:
                    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                    self.wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/stream"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_network_stream_that_ends_and_vanishes_is_reopened_with_backoff(
    clip,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clip_src, _ = clip
    camera = MjpegCamera(clip_src)
    settings = SourceSettings(kind="opencv", uri=camera.url, reopen_initial_s=0.2, reopen_max_s=1.0)
    capture = CaptureThread(settings=settings).start()
    caplog.set_level(logging.INFO)
    try:
        frames = 0
        deadline = time.monotonic() + 60
        while capture.failures == 0 and time.monotonic() < deadline:  # the stream ends...
            frames += capture.get(0.5) is not None
        assert capture.failures >= 1 and frames > 0
        assert "no frame" in capture.last_error
        while capture.state != "running" and time.monotonic() < deadline:  # ...and reopens
            capture.get(0.5)
        assert capture.state == "running"

        camera.close()  # the camera vanishes
        gone = time.monotonic()
        failures_before = capture.failures
        while capture.state != "reopening" or capture.retry_in_s < 1.0:
            assert time.monotonic() < deadline, (capture.state, capture.last_error)
            capture.get(0.2)
        assert "cannot open" in capture.last_error
        camera = MjpegCamera(clip_src, port=camera.port)  # and comes back
        back = time.monotonic()
        while capture.state != "running":
            assert time.monotonic() < deadline, (capture.state, capture.last_error)
            capture.get(0.2)
        assert capture.get(5.0) is not None
        outage_failures = capture.failures - failures_before
        assert 1 <= outage_failures <= max_attempts(back - gone, 0.2, 1.0), outage_failures
        assert capture.alive and capture.fatal is None
        assert "recovered after" in caplog.text
    finally:
        capture.stop()
        camera.close()


# -- the outbox cannot be written --------------------------------------------------------------


def test_locked_outbox_is_reported_sorting_goes_on_and_nothing_is_lost(
    tmp_path,
    broker,
    subscriber_factory,
    daemons,
    long_clip,
    tiny_bundle,
) -> None:
    clip_path, _ = long_clip
    sub = subscriber_factory(broker, [PREFIX + "#"])
    config = write_config(
        tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle, loop=True,
        realtime=True, fps=20,
    )  # fmt: skip
    db = tmp_path / "state" / "state.db"
    daemon = daemons(config)
    sub.wait_for(EVENT, 1, timeout=60)

    # Another process (a backup tool, a curious admin with sqlite3) holds the write lock.
    intruder = sqlite3.connect(db, timeout=10, isolation_level=None)
    intruder.execute("BEGIN EXCLUSIVE")
    try:
        items_at_lock = len(daemon.event_ids())

        def reported() -> bool:
            return any(
                "locked" in (r.get("outbox_error") or "") and r.get("outbox_held", 0) >= 2
                for r in health_reports(sub)
            )

        daemon.wait_until(reported, 60, "health to report the locked outbox, events held")
        assert len(daemon.event_ids()) >= items_at_lock + 2  # still sorting
        assert "outbox cannot store events" in daemon.log()
    finally:
        intruder.execute("ROLLBACK")
        intruder.close()

    def recovered() -> bool:
        reports = health_reports(sub)
        return (
            bool(reports)
            and reports[-1].get("outbox_held") == 0
            and not reports[-1].get("outbox_error")
        )

    daemon.wait_until(recovered, 60, "health to report the outbox writable again")
    daemon.kill(signal.SIGTERM)
    assert daemon.wait(60) == 0, daemon.log()[-3000:]
    expected = daemon.event_ids()
    sub.wait_until(EVENT, lambda m: m.json()["id"] == expected[-1], timeout=20)
    assert first_occurrences(ids_of(sub)) == expected
    assert integrity(db) == "ok" and _outbox_ids(db) == []


def make_event(i: int) -> SortEvent:
    return SortEvent(
        bin_id=BIN,
        decision=("glass", "paper", "organic")[i % 3],
        confidence=0.9,
        organic_prob=0.1,
        material_probs={"glass": 0.9},
        model_version="m",
        inference_ms=1.0,
        id=f"ev{i:03d}",
    )


def test_full_outbox_holds_events_in_bounded_memory_and_never_corrupts(
    tmp_path: Path,
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_factory(persistence=True)
    sub = subscriber_factory(broker, [PREFIX + "#"], client_id="test-full", clean_session=False)
    broker.stop()
    db = tmp_path / "state.db"
    # The smallest cap there is: the file may not grow beyond what the schema already uses.
    outbox = Outbox(db, max_bytes=1)
    settings = MqttSettings(**broker.settings_kwargs())
    publisher = MqttPublisher(settings, BIN, outbox, held_capacity=5)
    publisher.start()
    caplog.set_level(logging.INFO)
    try:
        events = [make_event(i) for i in range(40)]
        seqs = [publisher.submit(e) for e in events]  # never raises
        stored = [e.id for e, seq in zip(events, seqs, strict=True) if seq is not None]
        assert 0 < len(stored) < len(events)  # it filled up
        with pytest.raises(OutboxWriteError, match="full"):
            outbox.add(make_event(99))
        report = publisher.outbox_health()
        assert "full" in report["outbox_error"] and report["outbox_held"] == 5
        given_up = events[len(stored) : len(events) - 5]
        assert report["events_not_stored"] == len(given_up)
        assert "outbox cannot store events" in caplog.text
        for event in given_up:  # the log is their last record: the whole payload is in it
            assert f'"id":"{event.id}"' in caplog.text
        assert integrity(db) == "ok"

        broker.start()  # deliveries free space; the held events go in, then out
        expected = stored + [e.id for e in events[-5:]]
        sub.wait_until(PREFIX + "event", lambda m: m.json()["id"] == expected[-1], timeout=30)
        assert first_occurrences([m.json()["id"] for m in sub.on(PREFIX + "event")]) == expected
        assert publisher.drain(10)
        report = publisher.outbox_health()
        assert report["outbox_error"] is None and report["outbox_held"] == 0
        assert sum(outbox.counts().values()) == len(expected)  # counted when stored
        assert integrity(db) == "ok"
    finally:
        publisher.stop(2.0)
        outbox.close()


# -- a broken model pushed onto the bin --------------------------------------------------------


def _truncate(bundle: Path) -> str:
    """Cut the model in half and make the manifest agree: the hash passes, the model does not."""
    from smartbin.device.bundle import sha256_file

    model = bundle / "model.tflite"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["model"]["sha256"] = sha256_file(model)
    manifest["model_version"] = "truncated"
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    return "model"


def _wrong_hash(bundle: Path) -> str:
    with open(bundle / "model.tflite", "ab") as handle:
        handle.write(b"\0tampered")
    return "sha256"


def _wrong_schema(bundle: Path) -> str:
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["schema"] = "smartbin-bundle/99"
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    return "schema"


@pytest.mark.parametrize("breakage", [_truncate, _wrong_hash, _wrong_schema])
def test_hot_swap_to_a_broken_bundle_is_refused_and_the_old_model_serves(
    tmp_path: Path, tiny_bundle: Path, breakage: Callable[[Path], str]
) -> None:
    from smartbin.device.config import BinConfig
    from smartbin.device.daemon import Daemon

    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    installed: list[Classifier] = []
    daemon = Daemon(BinConfig(bin_id=BIN, model=str(folder)))
    daemon.models = ModelManager(folder, 1, False, installed.append)
    old = daemon.models.load_initial()
    picture = np.full((80, 96, 3), (90, 200, 220), np.uint8)
    before = old.classify(picture).prediction.material_probs()

    word = breakage(folder)
    result = daemon.reload_model("test")
    assert not result.ok and word in result.error.lower(), result.error
    assert result.model_version == old.model_version
    assert daemon.models.classifier is old and installed == []  # nothing swapped in
    assert old.classify(picture).prediction.material_probs() == before  # it still serves
    reported = daemon.health()["model_reload"]  # the refusal goes into the health report
    assert reported["ok"] is False and word in reported["error"].lower()

    shutil.rmtree(folder)
    shutil.copytree(tiny_bundle, folder)  # a good bundle again: accepted
    assert daemon.reload_model("test").ok and len(installed) == 1
