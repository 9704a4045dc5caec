"""The on-disk outbox: order, counts, crash safety, corrupt rows."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from smartbin.device.comms.outbox import DECISIONS, Outbox
from smartbin.device.events import SortEvent
from smartbin.errors import SmartbinError


def make_event(i: int, decision: str = "plastic") -> SortEvent:
    return SortEvent(
        bin_id="bin-test",
        decision=decision,
        confidence=0.5 + i % 5 / 10,
        organic_prob=0.1,
        material_probs={"plastic": 0.8, "glass": 0.2},
        model_version="test-1",
        inference_ms=12.5,
        id=f"event-{i:04d}",
    )


def test_pending_is_fifo_and_delivered_events_leave(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "state.db")
    events = [make_event(i, DECISIONS[i % len(DECISIONS)]) for i in range(20)]
    seqs = [outbox.add(e) for e in events]
    assert seqs == sorted(seqs)
    assert len(outbox) == outbox.pending_count() == 20

    pending = outbox.pending(limit=7)
    assert [e for _, e in pending] == events[:7]
    for seq, _ in pending[:3]:
        outbox.mark_delivered(seq)
    assert [e.id for _, e in outbox.pending(100)] == [e.id for e in events[3:]]
    assert len(outbox) == 17
    outbox.mark_delivered(999_999)  # unknown seq: no-op
    assert len(outbox) == 17


def test_counts_have_every_decision_and_survive_delivery_and_reopen(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)  # a directory: state.db inside it
    assert outbox.path == tmp_path / "state.db"
    assert outbox.counts() == dict.fromkeys(DECISIONS, 0)
    decisions = ["organic", "glass", "glass", "unknown", "trash", "glass"]
    for i, d in enumerate(decisions):
        outbox.add(make_event(i, d))
    for seq, _ in outbox.pending(100):
        outbox.mark_delivered(seq)  # delivery does not change the counts
    expected = dict.fromkeys(DECISIONS, 0) | {"organic": 1, "glass": 3, "unknown": 1, "trash": 1}
    assert outbox.counts() == expected
    outbox.close()

    reopened = Outbox(tmp_path / "state.db")
    assert reopened.counts() == expected
    reopened.reset_counts()
    reopened.close()
    assert Outbox(tmp_path).counts() == dict.fromkeys(DECISIONS, 0)


def test_adding_a_pending_event_twice_counts_it_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "state.db")
    event = make_event(1, "metal")
    first = outbox.add(event)
    assert outbox.add(event) == first
    assert len(outbox) == 1
    assert outbox.counts()["metal"] == 1


def test_sigkill_right_after_add_loses_nothing(tmp_path: Path) -> None:
    """A child process adds events and SIGKILLs itself: no close(), no clean shutdown."""
    db = tmp_path / "state.db"
    n = 40
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_outbox import make_event
        from smartbin.device.comms.outbox import DECISIONS, Outbox
        outbox = Outbox({str(db)!r})
        for i in range({n}):
            outbox.add(make_event(i, DECISIONS[i % len(DECISIONS)]))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()

    outbox = Outbox(db)
    pending = outbox.pending(1000)
    assert [e.id for _, e in pending] == [f"event-{i:04d}" for i in range(n)]
    expected = dict.fromkeys(DECISIONS, 0)
    for i in range(n):
        expected[DECISIONS[i % len(DECISIONS)]] += 1
    assert outbox.counts() == expected
    assert sum(outbox.counts().values()) == len(outbox)


def test_corrupt_rows_are_quarantined_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "state.db"
    outbox = Outbox(db)
    for i in range(3):
        outbox.add(make_event(i))
    # Damage the middle event and add one whose fields do not match SortEvent.
    raw = sqlite3.connect(db)
    raw.execute("UPDATE events SET payload = '{not json' WHERE event_id = 'event-0001'")
    raw.execute(
        "INSERT INTO events (event_id, payload, added) VALUES ('odd', '{\"colour\": 1}', 'now')"
    )
    raw.commit()
    raw.close()

    with caplog.at_level(logging.ERROR, logger="smartbin.device.comms.outbox"):
        pending = outbox.pending(10)
    assert [e.id for _, e in pending] == ["event-0000", "event-0002"]
    assert outbox.corrupt_count() == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("corrupt" in m for m in errors)
    rows = outbox.corrupt_rows()
    assert rows[0].payload == "{not json" and "not JSON" in rows[0].error
    assert "SortEvent" in rows[1].error
    assert len(outbox) == 2  # the corrupt ones no longer block the queue


def test_concurrent_adds_from_threads(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "state.db")

    def worker(base: int) -> None:
        for i in range(25):
            outbox.add(make_event(base + i, "paper"))

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outbox) == 100
    assert outbox.counts()["paper"] == 100
    assert len({e.id for _, e in outbox.pending(1000)}) == 100


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "state.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SmartbinError, match=r"state\.db"):
        Outbox(bad)
