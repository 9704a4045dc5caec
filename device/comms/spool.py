"""Events the outbox cannot store right now, held in memory until it can.

Why: the outbox database can refuse writes for a while (the SD card or ``outbox_max_mb`` is
full, another process holds a lock, an I/O error). The bin must keep sorting meanwhile and
must not lose the items it sees. :class:`EventSpool` sits in front of the
:class:`~.outbox.Outbox`:

* while the outbox accepts writes, :meth:`add` writes straight through (durable at once);
* after a refused write, events queue in memory **in order** (never written around the
  queue, so the outbox keeps the order the items were seen in), and the pipeline thread no
  longer touches the database: it cannot stall for SQLite's busy timeout on every item;
* :meth:`flush`, called by the delivery thread, writes the queue back once the database
  takes writes again, oldest first;
* the queue is bounded (``capacity`` events): past it the oldest held event is given up,
  logged at ERROR **with its whole payload** (the log is the last record of it) and counted
  in :attr:`not_stored`. Memory stays bounded however long the outage lasts.

Held events live in RAM only: a power cut during an outage loses them (the log lines
remain). The state is reported in the health message (``outbox_error``, ``outbox_held``,
``events_not_stored``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter, deque

from smartbin.device.comms.outbox import Outbox, OutboxWriteError
from smartbin.device.events import SortEvent

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000  # about 5 MB of events; days of sorting for a kitchen bin


class EventSpool:
    """The outbox plus a bounded, ordered in-memory queue for refused writes. Thread-safe."""

    def __init__(self, outbox: Outbox, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"spool capacity must be >= 1, got {capacity}")
        self.outbox = outbox
        self.capacity = capacity
        self._held: deque[SortEvent] = deque()
        self._lock = threading.Lock()  # guards _held, error, not_stored
        self._writing = threading.Lock()  # one writer at a time: keeps the order on disk
        self.error: str | None = None
        self.not_stored = 0

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def add(self, event: SortEvent) -> int | None:
        """Store ``event``: in the outbox (returns its seq) or, when that fails or events are
        already waiting, in memory (returns None). Never raises for a database problem."""
        with self._lock:
            queue_first = bool(self._held) or self.error is not None
        # Writing directly needs the writer lock; a flush in progress (which may wait on a
        # locked database) means: queue behind it instead of waiting.
        if not queue_first and self._writing.acquire(blocking=False):
            try:
                return self.outbox.add(event)
            except OutboxWriteError as exc:
                self._set_error(str(exc))
            finally:
                self._writing.release()
        self._hold(event)
        return None

    def flush(self) -> bool:
        """Write held events to the outbox, oldest first; True when none are left held."""
        with self._writing:
            while True:
                with self._lock:
                    if not self._held:
                        break
                    event = self._held[0]
                try:
                    self.outbox.add(event)  # an id already stored is a no-op: safe to retry
                except OutboxWriteError as exc:
                    self._set_error(str(exc))
                    return False
                with self._lock:
                    if self._held and self._held[0] is event:
                        self._held.popleft()
            with self._lock:
                recovered, self.error = self.error, None
        if recovered is not None:
            log.warning("outbox writable again; the events held in memory are stored")
        return True

    def held_events(self) -> list[SortEvent]:
        """A copy of the events held in memory, oldest first."""
        with self._lock:
            return list(self._held)

    def counts(self) -> dict[str, int]:
        """The outbox's counts plus the held events (seen, just not on disk yet)."""
        counts = self.outbox.counts()
        with self._lock:
            extra = Counter(e.decision for e in self._held)
        for decision, n in extra.items():
            counts[decision] = counts.get(decision, 0) + n
        return counts

    def pending_count(self) -> int:
        """Events not yet acknowledged by the broker: in the outbox and held in memory."""
        held = self.held
        try:
            return self.outbox.pending_count() + held
        except sqlite3.Error:
            return held

    def report(self) -> dict[str, object]:
        """Figures for the health message."""
        with self._lock:
            return {
                "outbox_error": self.error,
                "outbox_held": len(self._held),
                "events_not_stored": self.not_stored,
            }

    # -- internals -------------------------------------------------------------------------

    def _hold(self, event: SortEvent) -> None:
        with self._lock:
            self._held.append(event)
            dropped = self._held.popleft() if len(self._held) > self.capacity else None
            if dropped is not None:
                self.not_stored += 1
        if dropped is not None:
            log.error(
                "outbox unavailable and %d events already held in memory: event %s given "
                "up; payload=%s",
                self.capacity,
                dropped.id,
                json.dumps(dropped.to_payload(), separators=(",", ":")),
            )

    def _set_error(self, message: str) -> None:
        with self._lock:
            first = self.error is None
            self.error = message
            held = len(self._held)
        if first:
            log.error(
                "outbox cannot store events (%s); holding up to %d in memory (%d held)",
                message,
                self.capacity,
                held,
            )
