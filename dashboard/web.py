"""The dashboard's web side: one HTML page, a small JSON API and a CSV export.

Why the standard library's ``ThreadingHTTPServer``: a handful of people look at a fleet page
that polls every two seconds; that needs no framework, and the dashboard must install with
nothing beyond the ``device`` extra. The page (``page.html``) is self-contained (no CDN: the
bins' networks often have no internet) and draws its chart as inline SVG.

Routes (GET/HEAD only; the dashboard never changes anything):

=====================  ====================================================================
``/``                  the page
``/api/state``         broker connection, fleet totals and share, each bin's status/counts
``/api/events``        recent events, newest first (``?limit=1..500``, ``?bin=ID``)
``/api/series``        events per time bucket and decision (``?range=1h|24h|7d``)
``/export.csv``        every event in the history, oldest first (``?bin=ID``)
``/healthz``           ``ok`` (for a service monitor)
=====================  ====================================================================

Bind it to 127.0.0.1 (the default) or to a trusted network: there is no login.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from smartbin.dashboard.store import BinState, Store
from smartbin.device.comms.outbox import DECISIONS
from smartbin.device.labels import MATERIAL_CLASSES
from smartbin.errors import SmartbinError

log = logging.getLogger(__name__)

#: ``?range=`` of the chart -> (bucket seconds, number of buckets).
RANGES: dict[str, tuple[int, int]] = {"1h": (60, 60), "24h": (1800, 48), "7d": (21600, 28)}
#: Health figures shown on the page (the whole report stays in the API's ``health``).
HEALTH_KEYS = ("uptime_s", "fps", "inference_ms", "outbox_pending", "cpu_temp_c", "model_version")
CSV_COLUMNS = (
    "id", "bin_id", "ts", "received_utc", "decision", "confidence", "organic_prob",
    *(f"p_{m}" for m in MATERIAL_CLASSES), "model_version", "inference_ms", "frames",
)  # fmt: skip


class BadRequest(ValueError):
    """A query parameter the API does not accept (HTTP 400 with this message)."""


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class DashboardApp:
    """What the routes answer, as plain functions of the store (tested without HTTP too).

    ``broker_status()`` is the ingest's connection report. A bin whose status is ``online``
    but that was not heard from live for ``stale_after_s`` (0 = never) is shown as ``silent``:
    a broker restarted without persistence may have lost the retained ``offline``.
    """

    def __init__(
        self,
        store: Store,
        broker_status: Callable[[], dict[str, Any]],
        *,
        stale_after_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.broker_status = broker_status
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.page = resources.files("smartbin.dashboard").joinpath("page.html").read_bytes()

    # -- /api/state ------------------------------------------------------------------------

    def bin_state(self, state: BinState, now: float) -> dict[str, Any]:
        status = state.status or "unknown"
        if (
            status == "online"
            and self.stale_after_s > 0
            and now - (state.last_seen or state.status_at or now) > self.stale_after_s
        ):
            status = "silent"
        health = state.health or {}
        counts = state.counts
        return {
            "bin_id": state.bin_id,
            "status": status,
            "online": status == "online",
            "status_since": iso(state.status_at),
            "last_seen": iso(state.last_seen),
            "counts": counts,
            "total": sum(counts.values()) if counts is not None else None,
            "counts_at": iso(state.counts_at),
            "events": state.events,
            "health": {key: health.get(key) for key in HEALTH_KEYS if key in health},
            "health_at": iso(state.health_at),
        }

    def state(self) -> dict[str, Any]:
        now = self.clock()
        bins = [self.bin_state(b, now) for b in self.store.bins()]
        fleet: dict[str, int] = dict.fromkeys(DECISIONS, 0)
        for b in bins:
            for decision, n in (b["counts"] or {}).items():
                fleet[decision] = fleet.get(decision, 0) + n
        total = sum(fleet.values())
        history = self.store.decision_totals()
        return {
            "now": iso(now),
            "broker": self.broker_status(),
            "decisions": list(dict.fromkeys([*DECISIONS, *fleet, *history])),
            "fleet": {
                "counts": fleet,
                "total": total,
                "share": {k: (n / total if total else 0.0) for k, n in fleet.items()},
                "bins": len(bins),
                "online": sum(1 for b in bins if b["online"]),
                "history": history,
                "history_total": sum(history.values()),
            },
            "bins": bins,
        }

    # -- /api/events and /api/series -------------------------------------------------------

    def events(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = _int_param(query, "limit", 50, 1, 500)
        bin_id = _one(query, "bin")
        return {"events": self.store.recent_events(limit, bin_id)}

    def series(self, query: dict[str, list[str]]) -> dict[str, Any]:
        name = _one(query, "range") or "1h"
        if name not in RANGES:
            raise BadRequest(f"range: {name!r} is not one of {', '.join(RANGES)}")
        bucket_s, n = RANGES[name]
        now = self.clock()
        start = (math.floor(now / bucket_s) - (n - 1)) * bucket_s
        buckets: list[dict[str, Any]] = [
            {"t": iso(start + i * bucket_s), "counts": {}} for i in range(n)
        ]
        for t, decision, count in self.store.series(start, bucket_s):
            index = round((t - start) / bucket_s)
            if 0 <= index < n:
                buckets[index]["counts"][decision] = count
        return {"range": name, "bucket_s": bucket_s, "start": iso(start), "buckets": buckets}

    # -- /export.csv -----------------------------------------------------------------------

    def csv_lines(self, bin_id: str | None = None) -> Iterator[str]:
        """The CSV export, line by line (streamed: the history may be large)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")

        def line(row: list[Any]) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(row)
            return buffer.getvalue()

        yield line(list(CSV_COLUMNS))
        for record in self.store.iter_events(bin_id):
            payload = record["payload"]
            probs = payload.get("material_probs") if isinstance(payload, dict) else None
            probs = probs if isinstance(probs, dict) else {}
            yield line(
                [
                    _cell(record["id"]),
                    _cell(record["bin_id"]),
                    _cell(record["ts"]),
                    iso(record["received"]),
                    _cell(record["decision"]),
                    record["confidence"],
                    _number_cell(payload.get("organic_prob")),
                    *(_number_cell(probs.get(m)) for m in MATERIAL_CLASSES),
                    _cell(record["model_version"] or ""),
                    _number_cell(payload.get("inference_ms")),
                    _number_cell(payload.get("frames")),
                ]
            )


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def _int_param(query: dict[str, list[str]], key: str, default: int, low: int, high: int) -> int:
    text = _one(query, key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{key}: expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{key}: must be in {low}..{high}, got {value}")
    return value


def _cell(text: Any) -> str:
    """A text cell that a spreadsheet will not run as a formula (bin ids come from topics)."""
    text = str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _number_cell(value: Any) -> Any:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else ""


class _Handler(BaseHTTPRequestHandler):
    """Routes GET/HEAD to :class:`DashboardApp`; one instance per request."""

    app: DashboardApp  # set on the subclass made by make_server()
    server_version = "smartbin-dashboard"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.app.page)
            elif url.path == "/api/state":
                self._json(self.app.state())
            elif url.path == "/api/events":
                self._json(self.app.events(query))
            elif url.path == "/api/series":
                self._json(self.app.series(query))
            elif url.path == "/export.csv":
                self._csv(_one(query, "bin"))
            elif url.path == "/healthz":
                self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n")
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")
        except BadRequest as exc:
            self._send(HTTPStatus.BAD_REQUEST, "text/plain; charset=utf-8", f"{exc}\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            log.debug("dashboard: client went away during %s", self.path)
        except Exception:
            log.exception("dashboard: %s failed", self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"internal error\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self._head_only = True
        self.do_GET()

    def _json(self, data: dict[str, Any]) -> None:
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        self._send(HTTPStatus.OK, "application/json", body)

    def _csv(self, bin_id: str | None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Disposition", 'attachment; filename="smartbin-events.csv"')
        self.send_header("Cache-Control", "no-store")
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        if getattr(self, "_head_only", False):
            return
        for line in self.app.csv_lines(bin_id):
            self.wfile.write(line.encode("utf-8"))

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if not getattr(self, "_head_only", False):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("dashboard http: %s - %s", self.address_string(), format % args)


def make_server(host: str, port: int, app: DashboardApp) -> ThreadingHTTPServer:
    """Bind (port 0 = any free port; see ``server.server_address``); SmartbinError if busy."""
    handler = type("DashboardHandler", (_Handler,), {"app": app})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise SmartbinError(f"--listen {host}:{port}: cannot listen there ({exc})") from None
    server.daemon_threads = True
    return server
