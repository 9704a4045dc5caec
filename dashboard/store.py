"""The dashboard's history: one SQLite file, so a restart keeps every event and bin state.

Why SQLite: one file next to nothing else, transactions, and WAL so that the web threads can
read while the MQTT thread writes. Events are keyed by their ``id``: delivery is
at-least-once, so the same event may arrive twice (and the retained ``last_event`` arrives
again on every reconnect); ``INSERT OR IGNORE`` keeps exactly one row per item.

``synchronous=NORMAL``: a power cut may lose the last moments of history but never corrupts
the file; the dashboard is a view, the bins' own outboxes are the record that must not lose
events.

The ``bins`` table holds the latest state of each bin: its status (``online``/``offline``,
the broker sends ``offline`` as the bin's last will), its own counts (as the bin published
them, since its last ``reset_counts``), its latest health report and when the dashboard last
heard from it live (retained copies replayed at subscription do not count as "heard").
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartbin.dashboard.payloads import Event
from smartbin.errors import SmartbinError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id            TEXT PRIMARY KEY,
    bin_id        TEXT NOT NULL,
    ts            TEXT NOT NULL,
    ts_epoch      REAL NOT NULL,
    received      REAL NOT NULL,
    decision      TEXT NOT NULL,
    confidence    REAL,
    model_version TEXT,
    payload       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (ts_epoch);
CREATE INDEX IF NOT EXISTS events_bin_time ON events (bin_id, ts_epoch);
CREATE TABLE IF NOT EXISTS bins (
    bin_id     TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen  REAL,
    status     TEXT,
    status_at  REAL,
    counts     TEXT,
    counts_at  REAL,
    health     TEXT,
    health_at  REAL
);
"""

#: Columns of :meth:`Store.events` rows, in CSV order.
EVENT_COLUMNS = ("id", "bin_id", "ts", "received", "decision", "confidence", "model_version")


@dataclass(frozen=True)
class BinState:
    """The latest known state of one bin (``None`` where nothing arrived yet)."""

    bin_id: str
    first_seen: float
    last_seen: float | None
    status: str | None
    status_at: float | None
    counts: dict[str, int] | None
    counts_at: float | None
    health: dict[str, Any] | None
    health_at: float | None
    events: int  # events in the dashboard's history


class Store:
    """Thread-safe access to the history database at ``path`` (created when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SmartbinError(
                    f"{self.path}: dashboard database version {version} is newer than this "
                    f"smartbin ({SCHEMA_VERSION}); refusing to touch it"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise SmartbinError(f"{self.path}: not a usable dashboard database: {exc}") from None
        except OSError as exc:
            raise SmartbinError(f"{self.path}: cannot create the database: {exc}") from None

    # -- writing ---------------------------------------------------------------------------

    def add_event(self, bin_id: str, event: Event, received: float) -> bool:
        """Keep ``event`` for ``bin_id``; False when its id is already in the history."""
        payload = json.dumps(event.payload, separators=(",", ":"), sort_keys=True)
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO events (id, bin_id, ts, ts_epoch, received, decision, "
                "confidence, model_version, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    bin_id,
                    event.ts,
                    event.ts_epoch,
                    received,
                    event.decision,
                    event.confidence,
                    event.model_version,
                    payload,
                ),
            )
            return cur.rowcount == 1

    def seen(self, bin_id: str, at: float, *, live: bool) -> None:
        """Record that a valid message of ``bin_id`` arrived; ``live`` = not a retained copy."""
        with self._lock:
            self._db.execute(
                "INSERT INTO bins (bin_id, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (bin_id, at),
            )
            if live:
                self._db.execute("UPDATE bins SET last_seen = ? WHERE bin_id = ?", (at, bin_id))

    def set_status(self, bin_id: str, status: str, at: float, *, live: bool) -> None:
        self._set(bin_id, "status", status, at, live)

    def set_counts(self, bin_id: str, counts: dict[str, int], at: float, *, live: bool) -> None:
        self._set(bin_id, "counts", json.dumps(counts, sort_keys=True), at, live)

    def set_health(self, bin_id: str, health: dict[str, Any], at: float, *, live: bool) -> None:
        self._set(bin_id, "health", json.dumps(health, sort_keys=True, default=str), at, live)

    def _set(self, bin_id: str, column: str, value: str, at: float, live: bool) -> None:
        assert column in ("status", "counts", "health")  # never user input
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self.seen(bin_id, at, live=live)
                self._db.execute(
                    f"UPDATE bins SET {column} = ?, {column}_at = ? WHERE bin_id = ?",
                    (value, at, bin_id),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def prune(self, before_epoch: float) -> int:
        """Forget events that happened before ``before_epoch``; returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM events WHERE ts_epoch < ?", (before_epoch,))
            return cur.rowcount

    # -- reading ---------------------------------------------------------------------------

    def bins(self) -> list[BinState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT b.bin_id, first_seen, last_seen, status, status_at, counts, counts_at, "
                "health, health_at, (SELECT COUNT(*) FROM events e WHERE e.bin_id = b.bin_id) "
                "FROM bins b ORDER BY b.bin_id"
            ).fetchall()
        return [
            BinState(
                bin_id=row[0],
                first_seen=row[1],
                last_seen=row[2],
                status=row[3],
                status_at=row[4],
                counts=json.loads(row[5]) if row[5] else None,
                counts_at=row[6],
                health=json.loads(row[7]) if row[7] else None,
                health_at=row[8],
                events=int(row[9]),
            )
            for row in rows
        ]

    def recent_events(self, limit: int = 50, bin_id: str | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` events (by the bin's time), newest first."""
        where, params = ("WHERE bin_id = ?", [bin_id]) if bin_id else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events {where} "
                "ORDER BY ts_epoch DESC, received DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in rows]

    def decision_totals(self, bin_id: str | None = None) -> dict[str, int]:
        """Events per decision in the history (all of it, or one bin's)."""
        where, params = ("WHERE bin_id = ?", (bin_id,)) if bin_id else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT decision, COUNT(*) FROM events {where} GROUP BY decision", params
            ).fetchall()
        return {decision: int(n) for decision, n in rows}

    def series(self, since: float, bucket_s: float) -> list[tuple[float, str, int]]:
        """``(bucket start, decision, events)`` for events at or after ``since``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT CAST((ts_epoch - ?) / ? AS INTEGER) AS k, decision, COUNT(*) "
                "FROM events WHERE ts_epoch >= ? GROUP BY k, decision ORDER BY k",
                (since, bucket_s, since),
            ).fetchall()
        return [(since + int(k) * bucket_s, decision, int(n)) for k, decision, n in rows]

    def iter_events(self, bin_id: str | None = None, chunk: int = 500) -> Iterator[dict[str, Any]]:
        """Every event, oldest first, with its full payload, read in chunks (CSV export):
        the lock is never held while the caller writes to a slow client."""
        after: tuple[float, str] = (float("-inf"), "")
        bin_clause = "AND bin_id = ? " if bin_id else ""
        while True:
            params: tuple[Any, ...] = (after[0], after[0], after[1], *((bin_id,) if bin_id else ()))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT ts_epoch, payload, {', '.join(EVENT_COLUMNS)} FROM events "
                    f"WHERE (ts_epoch > ? OR (ts_epoch = ? AND id > ?)) {bin_clause}"
                    "ORDER BY ts_epoch, id LIMIT ?",
                    (*params, chunk),
                ).fetchall()
            for row in rows:
                record = dict(zip(EVENT_COLUMNS, row[2:], strict=True))
                record["payload"] = json.loads(row[1])
                yield record
            if len(rows) < chunk:
                return
            after = (rows[-1][0], rows[-1][2])

    def close(self) -> None:
        with self._lock:
            self._db.close()
