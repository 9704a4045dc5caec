"""The whole bin, as a subprocess: a real clip, a real tiny model, a real mosquitto.

``python -m smartbin run --config ...`` is started exactly as systemd would start it; the
tests only look at what leaves the process (MQTT messages, exit code, log lines, the outbox
file), so they hold for the real daemon and not for a test double.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_broker import first_occurrences

from smartbin.benchmarks.clips import make_clip
from smartbin.device.bundle import default_bundle_path

DATA = Path(__file__).parent / "data" / "trashnet"
BIN = "bin-01"
PREFIX = f"smartbin/{BIN}/"
REQUIRED = (
    "id",
    "ts",
    "bin_id",
    "decision",
    "confidence",
    "organic_prob",
    "material_probs",
    "model_version",
    "inference_ms",
)
EVENT_LOG = re.compile(r"sort_event id=([0-9a-f]{32})")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """Three real TrashNet photos dropped one after another into an empty bin."""
    images = [DATA / "glass" / "glass100.jpg", DATA / "paper" / "paper101.jpg"]
    images.append(DATA / "plastic" / "plastic100.jpg")
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    shown = make_clip(images, out, fps=10)
    assert shown == 3
    return out, shown


def write_config(
    folder: Path,
    *,
    port: int,
    clip: Path,
    model: Path,
    loop: bool = False,
    realtime: bool = False,
    fps: float | None = None,
    extra: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fps_line = f"fps = {fps}\n" if fps else ""
    text = f"""\
bin_id = "{BIN}"
model = "{model}"
state_dir = "state"
drain_timeout_s = 30
{extra}
[source]
kind = "opencv"
uri = "{clip}"
loop = {str(loop).lower()}
realtime = {str(realtime).lower()}
{fps_line}
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min_delay_s = 1
reconnect_max_delay_s = 1

[health]
interval_s = 1
"""
    path = folder / "bin.toml"
    path.write_text(text)
    return path


class DaemonProcess:
    """``smartbin run`` in a subprocess, its log in a file we can poll."""

    def __init__(
        self, config: Path, name: str = "daemon", env: dict[str, str] | None = None
    ) -> None:
        self.log_path = config.parent / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in wait()/kill()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env = {**base, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smartbin", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def event_ids(self) -> list[str]:
        return EVENT_LOG.findall(self.log())

    def wait_until(self, what: Callable[[], bool], timeout: float, why: str) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) before {why}:\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {why}:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"daemon still running after {timeout}s:\n{self.log()[-3000:]}"
            ) from None
        self._log.close()
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)


@pytest.fixture
def daemons() -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config: Path, name: str = "daemon", env: dict | None = None) -> DaemonProcess:
        process = DaemonProcess(config, name, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.proc.wait(10)


def events_of(subscriber) -> list[dict]:  # noqa: ANN001 - fixtures_broker.Subscriber
    return [m.json() for m in subscriber.on(PREFIX + "event")]


def statuses(subscriber) -> list[bytes]:  # noqa: ANN001
    return [m.payload for m in subscriber.on(PREFIX + "status")]


def test_clip_end_to_end(tmp_path, broker, subscriber_factory, daemons, clip, tiny_bundle) -> None:
    clip_path, shown = clip
    sub = subscriber_factory(broker, [PREFIX + "#"])
    config = write_config(tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle)
    daemon = daemons(config)
    assert daemon.wait(90) == 0, daemon.log()[-3000:]

    events = events_of(sub)
    assert len(events) == shown, daemon.log()[-3000:]
    manifest = json.loads((tiny_bundle / "bundle.json").read_text())
    for event in events:
        missing = [key for key in REQUIRED if key not in event]
        assert not missing, event
        assert event["bin_id"] == BIN
        assert event["model_version"] == manifest["model_version"]
        assert set(event["material_probs"]) == set(manifest["labels"]["material"])
        assert sum(event["material_probs"].values()) == pytest.approx(1.0, abs=0.02)
        assert event["inference_ms"] > 0
    assert len({e["id"] for e in events}) == shown
    assert [e["id"] for e in events] == daemon.event_ids()  # in the order they were seen

    # Retained state as a newcomer (e.g. Home Assistant after a restart) sees it.
    late = subscriber_factory(broker, [PREFIX + "counts", PREFIX + "status", PREFIX + "health"])
    counts = late.wait_for(PREFIX + "counts", 1)[-1]
    assert counts.retain
    expected = collections.Counter(e["decision"] for e in events)
    assert {k: v for k, v in counts.json().items() if v} == dict(expected)
    assert late.wait_for(PREFIX + "status", 1)[-1].payload == b"offline"
    health = late.wait_for(PREFIX + "health", 1)[-1].json()
    assert health["model_version"] == manifest["model_version"]
    assert health["outbox_pending"] == 0 and health["items"] == shown
    assert health["inference_ms"] > 0 and "uptime_s" in health and "fps" in health

    seen = statuses(sub)
    assert seen[0] == b"online" and seen[-1] == b"offline"
    assert (tmp_path / "state" / "state.db").is_file()  # state_dir relative to the config
    assert "source ended" in daemon.log() and "outbox delivered" in daemon.log()


def test_broker_restart_mid_run_loses_nothing(
    tmp_path, broker_factory, subscriber_factory, daemons, clip, tiny_bundle
) -> None:
    clip_path, shown = clip
    broker = broker_factory(persistence=True)  # the subscriber's session survives the restart
    sub = subscriber_factory(
        broker, [PREFIX + "event"], client_id="test-persistent", clean_session=False
    )
    # Real-time replay at 2x speed: the run lasts a few seconds, long enough to pull the plug.
    config = write_config(
        tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle, realtime=True, fps=20
    )
    daemon = daemons(config)
    sub.wait_for(PREFIX + "event", 1, timeout=60)
    broker.stop()
    time.sleep(1.5)
    broker.start()
    assert daemon.wait(90) == 0, daemon.log()[-3000:]
    expected = daemon.event_ids()
    assert len(expected) == shown
    # Wait for the last event itself: an at-least-once repeat of an event that was in flight
    # when the broker died could make up a message count before every event arrived.
    sub.wait_until(PREFIX + "event", lambda m: m.json()["id"] == expected[-1], timeout=20)
    ids = [m.json()["id"] for m in sub.on(PREFIX + "event")]
    assert first_occurrences(ids) == expected  # all of them, in order, none invented
    assert len(ids) - len(expected) <= 1, f"more repeats than the one restart explains: {ids}"


def _outbox_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT event_id FROM events ORDER BY seq")]


def test_sigkill_then_restart_delivers_the_outbox(
    tmp_path, broker_factory, subscriber_factory, daemons, clip, tiny_bundle
) -> None:
    clip_path, shown = clip
    broker = broker_factory(persistence=True)
    sub = subscriber_factory(broker, [PREFIX + "event"], client_id="test-kill", clean_session=False)
    broker.stop()  # the broker is down from the start: the bin must sort anyway
    config = write_config(
        tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle, realtime=True, fps=20
    )
    db = tmp_path / "state" / "state.db"
    first = daemons(config, "first")
    first.wait_until(lambda: db.exists() and len(_outbox_ids(db)) >= 1, 60, "a stored event")
    first.kill(signal.SIGKILL)
    first.wait(10)
    stored = _outbox_ids(db)
    logged = first.event_ids()
    # Everything the bin logged is on disk (the kill may at most have hit between the log
    # line and the commit of the very last one).
    assert stored and stored == logged[: len(stored)] and len(logged) - len(stored) <= 1

    broker.start()
    second = daemons(config, "second")
    assert second.wait(90) == 0, second.log()[-3000:]
    new = second.event_ids()
    assert len(new) == shown
    ids = [m.json()["id"] for m in sub.wait_for(PREFIX + "event", len(stored) + shown, 20)]
    assert ids == stored + new  # the backlog first, same ids, nothing lost, nothing twice
    assert _outbox_ids(db) == []


def test_sigterm_stops_cleanly_under_systemd_and_snapshot_works(
    tmp_path, broker, subscriber_factory, daemons, clip, tiny_bundle
) -> None:
    clip_path, _ = clip
    sub = subscriber_factory(broker, [PREFIX + "#"])
    config = write_config(
        tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle, loop=True, realtime=True
    )
    # What systemd gives a Type=notify service with WatchdogSec=1.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    daemon = daemons(config, env=env)
    sub.wait_for(PREFIX + "event", 1, timeout=60)

    sub.publish(PREFIX + "cmd", json.dumps({"cmd": "snapshot", "id": "s1"}))
    jpeg = sub.wait_for(PREFIX + "snapshot", 1, timeout=10)[-1].payload
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape == (240, 320, 3)  # the clip's frame size

    time.sleep(1.2)  # at least two watchdog periods
    daemon.kill(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.log()[-3000:]
    assert statuses(sub)[-1] == b"offline"
    assert "reason=SIGTERM" in daemon.log()
    assert [e["id"] for e in events_of(sub)] == daemon.event_ids()

    notify.setblocking(False)
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(notify.recv(4096).decode())
    notify.close()
    lines = [line for m in messages for line in m.splitlines()]
    assert lines[0] == "READY=1"
    assert lines.count("WATCHDOG=1") >= 2
    assert "STOPPING=1" in lines and lines.index("STOPPING=1") > lines.index("WATCHDOG=1")


def _corrupt(bundle: Path) -> None:
    with open(bundle / "model.tflite", "ab") as handle:
        handle.write(b"\0broken")


def test_broken_bundle_is_refused_and_the_old_model_keeps_sorting(
    tmp_path, broker, subscriber_factory, daemons, clip, tiny_bundle
) -> None:
    clip_path, _ = clip
    model = tmp_path / "model"
    shutil.copytree(tiny_bundle, model)
    version = json.loads((model / "bundle.json").read_text())["model_version"]
    sub = subscriber_factory(broker, [PREFIX + "#"])
    config = write_config(
        tmp_path,
        port=broker.port,
        clip=clip_path,
        model=model,
        loop=True,
        realtime=True,
        fps=20,
        extra="watch_model = true\nwatch_interval_s = 0.5",
    )
    daemon = daemons(config)
    sub.wait_for(PREFIX + "event", 1, timeout=60)

    # 1. the watcher sees the changed file, refuses it, says so in the retained health
    _corrupt(model)
    daemon.wait_until(lambda: "model reload refused" in daemon.log(), 20, "the watcher")

    def refusal_in_health() -> bool:
        reports = [m.json() for m in sub.on(PREFIX + "health")]
        return any(r.get("model_reload", {}).get("ok") is False for r in reports)

    daemon.wait_until(refusal_in_health, 10, "the refusal in the health report")
    report = [m.json() for m in sub.on(PREFIX + "health") if "model_reload" in m.json()][-1]
    assert "sha256" in report["model_reload"]["error"]
    assert report["model_reload"]["model_version"] == version

    # 2. the command gets an error reply naming the problem
    sub.publish(PREFIX + "cmd", json.dumps({"cmd": "reload_model", "id": 7}))
    reply = sub.wait_for(PREFIX + "cmd/result", 1, timeout=20)[-1].json()
    assert reply["id"] == 7 and reply["ok"] is False
    assert "refused" in reply["error"] and "sha256" in reply["error"]

    # 3. the old model keeps sorting
    before = len(sub.on(PREFIX + "event"))
    sub.wait_for(PREFIX + "event", before + 1, timeout=30)
    assert all(e["model_version"] == version for e in events_of(sub))

    # 4. a repaired bundle is accepted
    shutil.copy(tiny_bundle / "model.tflite", model / "model.tflite")
    sub.publish(PREFIX + "cmd", json.dumps({"cmd": "reload_model", "id": 8}))
    replies = sub.wait_for(PREFIX + "cmd/result", 2, timeout=20)
    assert replies[-1].json()["ok"] is True, replies[-1].json()

    daemon.kill(signal.SIGTERM)
    assert daemon.wait(30) == 0


# -- the daemon's small parts, without a subprocess -------------------------------------------


def test_bundle_watcher_reports_a_settled_change_once(tmp_path: Path) -> None:
    from smartbin.device.reload import BundleWatcher

    (tmp_path / "bundle.json").write_text("{}")
    watcher = BundleWatcher(tmp_path, interval_s=1.0)
    t = time.monotonic() + 10
    assert not watcher.poll(t)  # nothing changed
    (tmp_path / "model.tflite").write_bytes(b"half")
    assert not watcher.poll(t + 1)  # first sight of the change: maybe still copying
    (tmp_path / "model.tflite").write_bytes(b"half and the rest")
    assert not watcher.poll(t + 2)  # changed again: still copying
    assert watcher.poll(t + 3)  # settled: reload once
    assert not watcher.poll(t + 4)  # and not again for the same state


def test_cpu_temperature(tmp_path: Path) -> None:
    from smartbin.device.daemon import read_cpu_temp

    (tmp_path / "temp").write_text("48312\n")
    assert read_cpu_temp(tmp_path / "temp") == 48.3
    assert read_cpu_temp(tmp_path / "absent") is None


def test_log_lines_are_one_line_each() -> None:
    import logging

    from smartbin.device.logsetup import JsonFormatter, LogfmtFormatter, fields

    record = logging.LogRecord("smartbin.x", logging.INFO, __file__, 1, "sort event", (), None)
    for key, value in fields(decision="glass", note="two words", probs={"a": 0.5}).items():
        setattr(record, key, value)
    text = LogfmtFormatter().format(record)
    assert "\n" not in text
    assert 'msg="sort event"' in text and "decision=glass" in text
    assert 'note="two words"' in text and 'probs="{\\"a\\":0.5}"' in text
    data = json.loads(JsonFormatter().format(record))
    assert data["msg"] == "sort event" and data["decision"] == "glass"
    assert data["probs"] == {"a": 0.5} and data["level"] == "INFO"


def test_minimal_config_uses_the_shipped_model(
    tmp_path, broker, subscriber_factory, daemons, clip
) -> None:
    """The issue's minimal config, as written: no `model` key -> the shipped default bundle."""
    clip_path, shown = clip
    config = tmp_path / "bin.toml"
    config.write_text(
        f'bin_id = "{BIN}"\n[source]\nkind = "opencv"\nuri = "{clip_path}"\nloop = false\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
    )
    sub = subscriber_factory(broker, [PREFIX + "event"])
    # No state_dir in the file: where systemd would point it (STATE_DIRECTORY), not /var/lib.
    daemon = daemons(config, env={"STATE_DIRECTORY": str(tmp_path / "state")})
    assert daemon.wait(120) == 0, daemon.log()[-3000:]
    events = events_of(sub)
    assert len(events) == shown, daemon.log()[-3000:]
    shipped = json.loads((default_bundle_path() / "bundle.json").read_text())
    assert {e["model_version"] for e in events} == {shipped["model_version"]}
    assert (tmp_path / "state" / "state.db").is_file()
