"""The on-disk outbox: every sort event is on disk before anyone tries to send it.

Why SQLite: one file, atomic transactions, and with ``journal_mode=WAL`` plus
``synchronous=FULL`` a commit is fsync'ed before :meth:`Outbox.add` returns, so neither a
SIGKILL nor a power cut afterwards loses the event. The event row and the per-decision
counter are written in the *same* transaction, so after any crash the counts agree with the
events the bin has seen (delivered or not).

Events leave the outbox only once the broker acknowledged them (:meth:`mark_delivered`), so
delivery is at-least-once; ``SortEvent.id`` lets a consumer drop the rare duplicate.

A row whose payload cannot be turned back into a :class:`SortEvent` (disk corruption, a
hand-edited database, an event written by an incompatible version) is never silently
dropped and never blocks the queue: it is moved to the ``corrupt`` table, logged as an error
with its sequence number and the reason, and counted in :meth:`corrupt_count`.

A write that SQLite refuses (disk or ``max_bytes`` full, database locked by another process,
I/O error) raises :class:`OutboxWriteError` after rolling back, so the file stays intact;
:class:`~smartbin.device.comms.spool.EventSpool` holds such events in memory meanwhile.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from smartbin.device.events import SortEvent
from smartbin.device.labels import MATERIAL_CLASSES, UNKNOWN
from smartbin.errors import SmartbinError

log = logging.getLogger(__name__)

#: Every decision the bin can make; counts always carry all of them (0 when never seen).
DECISIONS: tuple[str, ...] = ("organic", *MATERIAL_CLASSES, UNKNOWN)

#: The file name used when :class:`Outbox` is given a directory.
STATE_FILE = "state.db"

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    payload  TEXT NOT NULL,
    added    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (
    decision TEXT PRIMARY KEY,
    n        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS corrupt (
    seq      INTEGER PRIMARY KEY,
    payload  TEXT,
    error    TEXT NOT NULL,
    moved    TEXT NOT NULL
);
"""


class OutboxWriteError(Exception):
    """SQLite refused to store an event (full, locked, I/O error); nothing was written.

    Not a :class:`SmartbinError`: it is a runtime condition the bin rides out, not bad input.
    """


@dataclass(frozen=True)
class CorruptRow:
    """A quarantined outbox row: kept for a human to inspect, never sent."""

    seq: int
    payload: str | None
    error: str
    moved: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Outbox:
    """Durable FIFO of :class:`SortEvent` plus persisted per-decision counts.

    ``path`` is the database file, or a directory in which ``state.db`` is used. Thread-safe:
    one connection guarded by a lock (SQLite writes are serialised anyway, and the bin writes a
    few events per minute at most). ``max_bytes`` caps the database file (``PRAGMA
    max_page_count``) so a backlog can never fill an SD card; ``busy_timeout_s`` is how long a
    write waits for another process's lock before :class:`OutboxWriteError`.
    """

    def __init__(
        self, path: str | Path, *, max_bytes: int | None = None, busy_timeout_s: float = 2.0
    ) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / STATE_FILE
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
            # what the code says it is.
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SmartbinError(
                    f"{path}: outbox schema version {version} is newer than this smartbin "
                    f"({SCHEMA_VERSION}); refusing to touch it"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if max_bytes is not None:
                page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
                used = int(self._db.execute("PRAGMA page_count").fetchone()[0])
                # Never below what the file already holds: SQLite would ignore it anyway.
                self._db.execute(f"PRAGMA max_page_count={max(used, max_bytes // page, 1)}")
        except sqlite3.DatabaseError as exc:
            raise SmartbinError(f"{path}: cannot open the outbox database: {exc}") from exc
        except OSError as exc:
            raise SmartbinError(f"{path}: cannot create the outbox: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------

    def add(self, event: SortEvent) -> int:
        """Persist ``event`` and count it, atomically; returns its sequence number.

        Adding an event whose ``id`` is still pending is a no-op (returns the existing seq), so
        a retry after an uncertain failure cannot count an item twice. Raises
        :class:`OutboxWriteError` (rolled back, nothing stored) when SQLite refuses the write.
        """
        payload = json.dumps(event.to_payload(), separators=(",", ":"), sort_keys=True)
        try:
            return self._add(event, payload)
        except sqlite3.Error as exc:
            raise OutboxWriteError(f"{self.path}: cannot store event {event.id}: {exc}") from exc

    def _add(self, event: SortEvent, payload: str) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO events (event_id, payload, added) VALUES (?, ?, ?)",
                    (event.id, payload, _now()),
                )
                if cur.rowcount == 1:
                    seq = int(cur.lastrowid)
                    self._db.execute(
                        "INSERT INTO counts (decision, n) VALUES (?, 1) "
                        "ON CONFLICT(decision) DO UPDATE SET n = n + 1",
                        (event.decision,),
                    )
                else:
                    seq = int(
                        self._db.execute(
                            "SELECT seq FROM events WHERE event_id = ?", (event.id,)
                        ).fetchone()[0]
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return seq

    def mark_delivered(self, seq: int) -> None:
        """Forget the event: the broker acknowledged it. Unknown ``seq`` is a no-op."""
        with self._lock:
            self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))

    def reset_counts(self) -> None:
        """Set every count back to 0 (persisted). Pending events stay pending."""
        with self._lock:
            self._db.execute("DELETE FROM counts")

    # -- reading ---------------------------------------------------------------------------

    def pending(self, limit: int = 100) -> list[tuple[int, SortEvent]]:
        """Up to ``limit`` undelivered events, oldest first, as ``(seq, event)``.

        Corrupt rows met on the way are quarantined (see the module docstring) and skipped.
        """
        if limit <= 0:
            return []
        result: list[tuple[int, SortEvent]] = []
        with self._lock:
            last_seq = 0
            while len(result) < limit:
                rows = self._db.execute(
                    "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (last_seq, limit - len(result)),
                ).fetchall()
                if not rows:
                    break
                for seq, payload in rows:
                    last_seq = seq
                    try:
                        result.append((seq, _decode(payload)))
                    except ValueError as exc:
                        self._quarantine(seq, payload, str(exc))
        return result

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def __len__(self) -> int:
        return self.pending_count()

    def counts(self) -> dict[str, int]:
        """Items seen per decision since the last reset; every decision key is present."""
        result = dict.fromkeys(DECISIONS, 0)
        with self._lock:
            for decision, n in self._db.execute("SELECT decision, n FROM counts"):
                result[decision] = int(n)
        return result

    def corrupt_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM corrupt").fetchone()[0])

    def corrupt_rows(self) -> list[CorruptRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload, error, moved FROM corrupt ORDER BY seq"
            ).fetchall()
        return [CorruptRow(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _quarantine(self, seq: int, payload: object, error: str) -> None:
        text = payload if isinstance(payload, str) else repr(payload)
        log.error(
            "outbox %s: event seq %d is corrupt (%s); moved to the 'corrupt' table, not sent",
            self.path,
            seq,
            error,
        )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO corrupt (seq, payload, error, moved) VALUES (?, ?, ?, ?)",
                (seq, text, error, _now()),
            )
            self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Undo the open transaction; SQLite may already have rolled it back by itself
        (after SQLITE_FULL or an I/O error), which must not hide the original error."""
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.debug("outbox %s: rollback: %s", self.path, exc)


def _decode(payload: object) -> SortEvent:
    """A stored payload back to a SortEvent; ValueError saying why not."""
    if not isinstance(payload, str):
        raise ValueError(f"payload is {type(payload).__name__}, not text")
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"payload is a JSON {type(data).__name__}, not an object")
    try:
        event = SortEvent.from_payload(data)
    except TypeError as exc:
        raise ValueError(f"payload does not match SortEvent: {exc}") from exc
    if not isinstance(event.decision, str) or not isinstance(event.id, str):
        raise ValueError("payload has a non-text decision or id")
    return event
