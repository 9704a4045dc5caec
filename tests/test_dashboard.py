"""The fleet dashboard (``smartbin dashboard``): store, ingest, web API, and the page itself.

* Unit level, on real SQLite files and the real parsers: junk payloads are logged and
  skipped, a restart keeps the history, duplicates count once, a bin that goes offline (or
  falls silent) is shown so, the CSV export cannot smuggle spreadsheet formulas.
* Against a real mosquitto: junk published on the bins' topics never stops the ingest.
* End to end: a real mosquitto, ``smartbin dashboard`` and ``smartbin run`` (the shipped
  model on the three-item clip) as processes, and the page in headless Chromium driven by
  Selenium through Debian's chromedriver (no browser download): the page shows the counts
  the bin published, the bin online then offline, its events, the chart; the CSV export
  holds the events; a restarted dashboard still shows its history.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon import BIN, PREFIX, write_config

from smartbin.dashboard import payloads
from smartbin.dashboard.ingest import Ingest, check_prefix
from smartbin.dashboard.store import Store
from smartbin.dashboard.web import DashboardApp, make_server
from smartbin.device.bundle import default_bundle_path
from smartbin.device.comms.mqtt import MqttSettings
from smartbin.device.comms.outbox import DECISIONS
from smartbin.errors import ConfigError, SmartbinError

T0 = 1_800_000_000.0  # a fixed "now" for the unit tests


def event_payload(
    i: int, bin_id: str = "bin-a", decision: str = "glass", ts: str | None = None
) -> bytes:
    """A sort event as the bins send it (see firmware_config/schema/event.schema.json)."""
    return json.dumps(
        {
            "id": f"{i:032x}",
            "ts": ts or f"2027-01-15T08:00:{i % 60:02d}.000Z",
            "bin_id": bin_id,
            "decision": decision,
            "confidence": 0.9,
            "organic_prob": 0.05,
            "material_probs": {"glass": 0.9, "plastic": 0.1},
            "model_version": "m-1",
            "inference_ms": 12.5,
            "frames": 3,
        }
    ).encode()


class Clock:
    """A hand-moved clock for "now" in the ingest and the app."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "dashboard.db")
    yield opened
    opened.close()


@pytest.fixture
def ingest(store: Store, clock: Clock) -> Ingest:
    """The real ingest, fed by calling its message handler (no broker needed for parsing)."""
    return Ingest(store, MqttSettings(port=1), client_id="test", clock=clock)


@pytest.fixture
def app(store: Store, ingest: Ingest, clock: Clock) -> DashboardApp:
    return DashboardApp(store, ingest.status, stale_after_s=300, clock=clock)


def bin_of(app: DashboardApp, bin_id: str) -> dict[str, Any]:
    return next(b for b in app.state()["bins"] if b["bin_id"] == bin_id)


# -- payloads and ingest ---------------------------------------------------------------------

JUNK: list[tuple[str, bytes, str]] = [
    ("event", b"\xff\xfe", "not UTF-8"),
    ("event", b"{not json", "not JSON"),
    ("event", b"[" * 50_000, "nested too deeply"),
    ("event", b"x" * (payloads.MAX_JSON_BYTES + 1), "more than"),
    ("event", b"[1, 2]", "must be a JSON object"),
    ("event", json.dumps({"ts": "2027-01-01T00:00:00Z"}).encode(), "'id'"),
    ("event", event_payload(1).replace(b'"glass"', b'"<b>x</b>"', 1), "'decision'"),
    ("event", event_payload(1).replace(b"0.9,", b"NaN,", 1), "NaN"),
    ("event", event_payload(1).replace(b"0.9,", b"7,", 1), "'confidence'"),
    ("event", event_payload(1, ts="2027-01-01T00:00:00"), "no time zone"),
    ("event", event_payload(1, ts="9999-12-31T23:59:59-05:00"), "out of range"),
    ("event", event_payload(1, ts="yesterday"), "not an ISO-8601 time"),
    ("last_event", b"null", "must be a JSON object"),
    ("counts", b'{"glass": -1}', "whole number >= 0"),
    ("counts", b'{"glass": 1.5}', "whole number >= 0"),
    ("counts", b'{"glass": true}', "whole number >= 0"),
    ("counts", b'{"a b": 1}', "not a decision name"),
    ("counts", b"Infinity", "Infinity"),
    ("status", b"maybe", "'online' or 'offline'"),
    ("status", b"\xff", "'online' or 'offline'"),
    ("health", b'{"uptime_s": "long"}', "'uptime_s' must be a number"),
    ("health", b'{"ts": 5}', "'ts'"),
    ("cmd/result", b'{"ok": "yes"}', "'ok'"),
    ("cmd/result", b'{"ok": false}', "'error'"),
]


@pytest.mark.parametrize(
    ("leaf", "payload", "reason"),
    [pytest.param(leaf, p, r, id=f"{leaf}: {r}") for leaf, p, r in JUNK],
)
def test_junk_is_logged_and_skipped(
    ingest: Ingest,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    leaf: str,
    payload: bytes,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="smartbin.dashboard")
    topic = f"smartbin/bin-a/{leaf}"
    assert ingest.handle(topic, payload) == "rejected"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and not caplog.records[0].exc_info
    assert f"skipped a message on {topic}: " in warnings[0] and reason in warnings[0]
    assert store.bins() == [] and store.recent_events() == []
    assert ingest.status()["rejected"] == 1
    # ... and the next good message is taken as usual.
    assert ingest.handle("smartbin/bin-a/event", event_payload(2)) == "event"


def test_junk_on_one_topic_is_logged_once_a_minute(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="smartbin.dashboard")
    for _ in range(50):
        ingest.handle("smartbin/bin-a/counts", b"junk")
    ingest.handle("smartbin/bin-b/counts", b"junk")
    assert len(caplog.records) == 2  # a flooding publisher cannot flood the log
    assert ingest.status()["rejected"] == 51


def test_topics_outside_the_bins_and_cleared_retained_messages_are_ignored(
    ingest: Ingest, store: Store
) -> None:
    assert ingest.handle("smartbin/bin-a", b"x") == "ignored"
    assert ingest.handle("other/bin-a/event", event_payload(1)) == "ignored"
    assert ingest.handle("smartbin/bin-a/snapshot", b"\xff\xd8jpeg") == "ignored"
    assert ingest.handle("smartbin/bin-a/cmd", b'{"cmd": "ping"}') == "ignored"
    assert ingest.handle("smartbin/bin-a/status", b"", retain=True) == "cleared"
    assert store.bins() == []


def test_prefix_needs_one_bin_level() -> None:
    assert check_prefix("smartbin/+/") == ["smartbin", "+"]
    assert check_prefix("site/{bin_id}") == ["site", "+"]  # the bins' own template works
    for bad in ("smartbin/", "smartbin/+/+/", "smartbin/#", "smartbin/a+/", "smartbin//+/"):
        with pytest.raises(ConfigError, match="--prefix"):
            check_prefix(bad)


def test_events_are_kept_once_and_retained_copies_are_not_news(
    ingest: Ingest, app: DashboardApp, clock: Clock
) -> None:
    assert ingest.handle("smartbin/bin-a/event", event_payload(1)) == "event"
    assert ingest.handle("smartbin/bin-a/event", event_payload(1)) == "duplicate"
    assert ingest.handle("smartbin/bin-a/last_event", event_payload(1), retain=True) == "known"
    # A retained last_event may fill a gap in the history, but says nothing about "now".
    clock.now += 60
    assert ingest.handle("smartbin/bin-b/last_event", event_payload(2), retain=True) == "event"
    assert [e["id"] for e in app.store.recent_events()] == [f"{2:032x}", f"{1:032x}"]
    assert bin_of(app, "bin-a")["last_seen"] is not None
    assert bin_of(app, "bin-b")["last_seen"] is None
    assert ingest.status()["events"] == 2 and ingest.status()["duplicates"] == 1


def test_an_event_s_bin_is_the_topic_s_bin(
    ingest: Ingest, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="smartbin.dashboard")
    ingest.handle("smartbin/bin-a/event", event_payload(1, bin_id="elsewhere"))
    ingest.handle("smartbin/bin-a/event", event_payload(2, bin_id="elsewhere"))
    assert [e["bin_id"] for e in store.recent_events()] == ["bin-a", "bin-a"]
    assert len(caplog.records) == 1 and "topic_prefix" in caplog.text


def test_a_bin_that_goes_offline_is_shown_offline(
    ingest: Ingest, app: DashboardApp, clock: Clock
) -> None:
    ingest.handle("smartbin/bin-a/status", b"online", retain=True)
    ingest.handle("smartbin/bin-b/status", b"online")
    ingest.handle("smartbin/bin-b/counts", b'{"glass": 2, "paper": 1}')
    state = app.state()
    assert [(b["bin_id"], b["status"]) for b in state["bins"]] == [
        ("bin-a", "online"),
        ("bin-b", "online"),
    ]
    assert state["fleet"]["online"] == 2

    ingest.handle("smartbin/bin-b/status", b"offline")  # its last will, sent by the broker
    state = app.state()
    assert bin_of(app, "bin-b")["status"] == "offline" and not bin_of(app, "bin-b")["online"]
    assert state["fleet"]["online"] == 1 and state["fleet"]["bins"] == 2
    assert bin_of(app, "bin-b")["counts"] == {"glass": 2, "paper": 1}  # the last it said

    # "online" but nothing heard for longer than stale_after_s: shown as silent (a broker
    # restarted without persistence may have lost the retained "offline").
    clock.now += 301
    assert bin_of(app, "bin-a")["status"] == "silent"
    ingest.handle("smartbin/bin-a/health", b'{"uptime_s": 5, "fps": 10.0}')
    assert bin_of(app, "bin-a")["status"] == "online"
    assert bin_of(app, "bin-a")["health"] == {"uptime_s": 5, "fps": 10.0}


def test_fleet_counts_and_share_are_the_bins_counts(ingest: Ingest, app: DashboardApp) -> None:
    ingest.handle("smartbin/bin-a/counts", b'{"glass": 3, "paper": 1, "organic": 0}')
    ingest.handle("smartbin/bin-b/counts", b'{"glass": 1, "organic": 3, "new_class": 2}')
    ingest.handle("smartbin/bin-a/counts", b'{"glass": 4, "paper": 1}')  # replaces, not adds
    fleet = app.state()["fleet"]
    assert fleet["total"] == 11
    assert {k: v for k, v in fleet["counts"].items() if v} == {
        "glass": 5,
        "paper": 1,
        "organic": 3,
        "new_class": 2,
    }
    assert fleet["share"]["glass"] == pytest.approx(5 / 11)
    assert set(DECISIONS) <= set(fleet["counts"])  # every decision has a row on the page
    assert "new_class" in app.state()["decisions"]


def test_history_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "history.db"
    first = Store(path)
    feed = Ingest(first, MqttSettings(port=1), client_id="t", clock=clock)
    for i in range(5):
        feed.handle("smartbin/bin-a/event", event_payload(i, decision=DECISIONS[i]))
    feed.handle("smartbin/bin-a/counts", b'{"glass": 5}')
    feed.handle("smartbin/bin-a/status", b"offline")
    before = DashboardApp(first, feed.status, clock=clock).state()
    first.close()

    again = Store(path)
    try:
        after = DashboardApp(again, feed.status, clock=clock).state()
        assert after == before
        assert after["fleet"]["history_total"] == 5
        assert after["bins"][0]["status"] == "offline"
        assert len(again.recent_events()) == 5
    finally:
        again.close()


def test_a_newer_or_broken_database_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SmartbinError, match="newer than this smartbin"):
        Store(newer)
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SmartbinError, match="not a usable dashboard database"):
        Store(broken)


def test_old_history_is_pruned(store: Store, ingest: Ingest) -> None:
    ingest.handle("smartbin/bin-a/event", event_payload(1, ts="2020-01-01T00:00:00Z"))
    ingest.handle("smartbin/bin-a/event", event_payload(2, ts="2027-01-01T00:00:00Z"))
    assert store.prune(payloads.parse_timestamp("2026-01-01T00:00:00Z")) == 1
    assert [e["id"] for e in store.recent_events()] == [f"{2:032x}"]


def test_csv_export_streams_every_event_and_defuses_formulas(
    ingest: Ingest, app: DashboardApp
) -> None:
    n = 1203  # more than the store's read chunk (500), same second for many: order by id too
    for i in range(n):
        ts = f"2027-01-15T08:{i // 600:02d}:{(i // 10) % 60:02d}.000Z"
        ingest.handle("smartbin/bin-a/event", event_payload(i, ts=ts))
    late = "2027-01-15T09:00:00.000Z"
    ingest.handle("smartbin/=cmd()/event", event_payload(n, bin_id="=cmd()", ts=late))
    rows = list(csv.DictReader(io.StringIO("".join(app.csv_lines()))))
    assert len(rows) == n + 1
    assert [r["id"] for r in rows[:n]] == [f"{i:032x}" for i in range(n)]
    assert rows[0]["decision"] == "glass" and rows[0]["p_glass"] == "0.9"
    assert rows[0]["p_metal"] == "" and rows[0]["frames"] == "3"
    assert rows[-1]["bin_id"] == "'=cmd()"  # a spreadsheet shows it, does not run it
    only_b = list(csv.DictReader(io.StringIO("".join(app.csv_lines("=cmd()")))))
    assert [r["id"] for r in only_b] == [f"{n:032x}"]


def test_series_buckets_the_recent_events(ingest: Ingest, app: DashboardApp, clock: Clock) -> None:
    clock.now = payloads.parse_timestamp("2027-01-15T08:30:30Z")
    for i, (minute, decision) in enumerate([(29, "glass"), (29, "glass"), (30, "paper")]):
        ts = f"2027-01-15T08:{minute:02d}:10Z"
        ingest.handle("smartbin/bin-a/event", event_payload(i, decision=decision, ts=ts))
    ingest.handle("smartbin/bin-a/event", event_payload(9, ts="2027-01-15T06:00:00Z"))  # too old
    series = app.series({"range": ["1h"]})
    assert len(series["buckets"]) == 60 and series["bucket_s"] == 60
    assert series["buckets"][-1] == {"t": "2027-01-15T08:30:00Z", "counts": {"paper": 1}}
    assert series["buckets"][-2]["counts"] == {"glass": 2}
    assert sum(sum(b["counts"].values()) for b in series["buckets"]) == 3


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_http_routes(app: DashboardApp, ingest: Ingest) -> None:
    ingest.handle("smartbin/bin-a/event", event_payload(1))
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, kind, body = _get(base + "/")
        assert status == 200 and kind.startswith("text/html") and "smartbin fleet" in body
        assert "http://" not in body.replace("http://www.w3.org/2000/svg", "")  # no CDN
        status, kind, body = _get(base + "/api/state")
        assert status == 200 and json.loads(body)["fleet"]["history_total"] == 1
        status, _, body = _get(base + "/api/events?limit=1&bin=bin-a")
        assert [e["decision"] for e in json.loads(body)["events"]] == ["glass"]
        for bad in ("/api/events?limit=0", "/api/events?limit=x", "/api/series?range=1y"):
            status, _, body = _get(base + bad)
            assert status == 400 and body.strip(), bad
        status, kind, body = _get(base + "/export.csv")
        assert status == 200 and kind.startswith("text/csv") and len(body.splitlines()) == 2
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/nothing")[0] == 404
        with pytest.raises(SmartbinError, match="cannot listen"):
            make_server("127.0.0.1", server.server_address[1], app)  # the port is taken
    finally:
        server.shutdown()
        server.server_close()


def test_junk_over_a_real_broker_never_stops_the_ingest(
    broker,  # noqa: ANN001 - fixtures_broker.Broker
    subscriber_factory: Callable[..., Any],
    store: Store,
) -> None:
    feed = Ingest(store, MqttSettings(**broker.settings_kwargs()), client_id="dash-test")
    feed.start()
    try:
        assert feed.wait_subscribed(20), feed.status()
        publisher = subscriber_factory(broker, ["smartbin/+/status"])
        for leaf, payload, _ in JUNK:
            publisher.publish(f"smartbin/junk/{leaf}", payload)
        publisher.publish("smartbin/bin-a/status", b"online", retain=True)
        deadline = time.monotonic() + 20
        while not store.bins() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(b.bin_id, b.status) for b in store.bins()] == [("bin-a", "online")]
        assert feed.status()["connected"] and feed.status()["rejected"] == len(JUNK)
    finally:
        feed.stop()


# -- end to end: processes, broker, browser --------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SERVING = re.compile(r"dashboard: serving (http://[\d.]+:\d+)/")


class DashboardProcess:
    """``smartbin dashboard`` as systemd would run it; its log in a file we can poll."""

    def __init__(self, workdir: Path, broker_port: int, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "smartbin", "dashboard",
                "--broker", f"127.0.0.1:{broker_port}", "--listen", "127.0.0.1:0",
                "--db", str(workdir / "dashboard.db"), "--client-id", "e2e-dashboard",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> str:
        """The page's address, once the dashboard serves it and is subscribed."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            found = SERVING.search(text)
            if found and "dashboard: subscribed to smartbin/+/#" in text:
                return found.group(1)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dashboard not ready (exit {self.proc.poll()}):\n{text}")
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()


@pytest.fixture
def dashboards(tmp_path: Path) -> Iterator[Callable[[int, str], DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(broker_port: int, name: str = "dashboard") -> DashboardProcess:
        process = DashboardProcess(tmp_path, broker_port, name)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian chromium through Debian's chromedriver, both named explicitly, so
    Selenium Manager is never asked to find (or download) anything."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} missing: the end-to-end page test needs Debian's "
            "chromium and chromium-driver (bash scripts/setup.sh dev installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, what: Callable[[Any], Any], why: str, timeout: float = 60.0) -> Any:
    """Selenium's explicit wait, with a message that shows what the page says.

    The page redraws its tables when a message arrives; an element found just before a
    redraw is stale when read, so that poll is retried rather than failed."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(
            driver,
            timeout,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException,),
        ).until(what)
    except TimeoutException:
        page = driver.find_element("tag name", "main").text
        raise AssertionError(f"page never showed {why} in {timeout}s; it shows:\n{page}") from None


def _cell(driver: Any, decision: str) -> str:
    return driver.find_element(
        "css selector", f'#bins tr[data-bin="{BIN}"] td[data-decision="{decision}"]'
    ).text


def _status(driver: Any) -> str:
    rows = driver.find_elements("css selector", f'#bins tr[data-bin="{BIN}"] td.status')
    return rows[0].text if rows else ""


def test_page_shows_what_a_running_bin_publishes(
    tmp_path: Path,
    broker,  # noqa: ANN001 - fixtures_broker.Broker
    subscriber_factory: Callable[..., Any],
    daemons: Callable[..., Any],
    dashboards: Callable[[int, str], DashboardProcess],
    clip: tuple[Path, int],
    browser: Any,
) -> None:
    clip_path, shown = clip
    sub = subscriber_factory(broker, [PREFIX + "#"])
    dashboard = dashboards(broker.port, "dashboard")
    url = dashboard.wait_ready()

    # Junk from a misbehaving client first: logged, skipped, the dashboard carries on.
    sub.publish("smartbin/junk-bin/event", b"{not json")
    sub.publish("smartbin/junk-bin/counts", b'{"glass": -3}')

    browser.get(url + "/")
    _wait(
        browser, lambda d: d.find_element("tag name", "body").get_attribute("data-loaded"), "data"
    )
    assert "No bin has reported yet." in browser.find_element("id", "bins").text
    assert "connected" in browser.find_element("id", "broker").text

    # A real bin: the shipped model on the three-item clip, in real time (about 12 s).
    config = write_config(
        tmp_path / "bin", port=broker.port, clip=clip_path, model=default_bundle_path(),
        realtime=True,
    )  # fmt: skip
    daemon = daemons(config)
    _wait(browser, lambda d: _status(d) == "online", "the bin online")
    assert daemon.wait(120) == 0, daemon.log()[-3000:]

    events = [m.json() for m in sub.on(PREFIX + "event")]
    assert len(events) == shown, daemon.log()[-3000:]
    published = sub.on(PREFIX + "counts")[-1].json()  # what the bin said last
    assert sum(published.values()) == shown

    _wait(browser, lambda d: _status(d) == "offline", "the bin offline after it stopped")
    _wait(browser, lambda d: _cell(d, "total") == str(shown), f"a total of {shown}")
    for decision, n in published.items():
        assert _cell(browser, decision) == str(n), decision
    assert browser.find_element("id", "fleet-total").text == str(shown)
    assert browser.find_element("id", "fleet-online").text == "0 / 1"
    for decision, n in published.items():
        share = browser.find_element("css selector", f'#share [data-decision="{decision}"]')
        assert f"{n} ({100 * n / shown:.1f} %)" in share.text, decision
    shown_ids = [
        row.get_attribute("data-event")
        for row in browser.find_elements("css selector", "#events tbody tr")
    ]
    assert sorted(shown_ids) == sorted(e["id"] for e in events)
    bars = browser.find_elements("css selector", "#chart rect")
    assert bars and "junk-bin" not in browser.find_element("id", "bins").text

    log = dashboard.log()
    assert "skipped a message on smartbin/junk-bin/event: payload is not JSON" in log
    assert "skipped a message on smartbin/junk-bin/counts" in log
    assert "Traceback" not in log

    # The export link the page offers gives every event.
    href = browser.find_element("id", "csv").get_attribute("href")
    status, _, body = _get(href)
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(body)))
    assert sorted(r["id"] for r in rows) == sorted(e["id"] for e in events)
    assert {r["decision"] for r in rows} == {e["decision"] for e in events}

    # Restarted, the dashboard still shows the history and the bin as offline.
    assert dashboard.stop() == 0
    again = dashboards(broker.port, "dashboard-again")
    url = again.wait_ready()
    browser.get(url + "/")
    _wait(browser, lambda d: _cell(d, "total") == str(shown), "the counts after a restart")
    assert browser.find_element("id", "fleet-history").text == str(shown)
    assert _status(browser) == "offline"
    assert len(browser.find_elements("css selector", "#events tbody tr")) == shown
    assert "Traceback" not in again.log()
