"""MqttPublisher against a real mosquitto: ordered QoS 1 delivery, outages, commands, will."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_broker import Broker, Subscriber, first_occurrences

from smartbin.device.comms.commands import (
    Command,
    CommandError,
    error_reply,
    ok_reply,
    parse_command,
)
from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
from smartbin.device.comms.outbox import DECISIONS, Outbox
from smartbin.device.events import SortEvent
from smartbin.errors import ConfigError, SmartbinError

BIN = "bin7"
PREFIX = f"smartbin/{BIN}/"
EVENT = PREFIX + "event"
COUNTS = PREFIX + "counts"
STATUS = PREFIX + "status"
CMD = PREFIX + "cmd"
RESULT = PREFIX + "cmd/result"


def make_event(i: int, decision: str | None = None) -> SortEvent:
    return SortEvent(
        bin_id=BIN,
        decision=decision or DECISIONS[i % len(DECISIONS)],
        confidence=0.9,
        organic_prob=0.05,
        material_probs={"glass": 0.9, "plastic": 0.1},
        model_version="m-1",
        inference_ms=20.0,
        id=f"ev{i:03d}",
    )


def expected_counts(events: list[SortEvent]) -> dict[str, int]:
    counts = dict.fromkeys(DECISIONS, 0)
    for e in events:
        counts[e.decision] += 1
    return counts


@pytest.fixture
def publisher_factory(tmp_path: Path) -> Iterator[Callable[..., MqttPublisher]]:
    publishers: list[MqttPublisher] = []

    def make(
        broker: Broker, *, start: bool = True, wait: bool = True, **kwargs: Any
    ) -> MqttPublisher:
        handlers = {k: kwargs.pop(k) for k in ("on_reload_model", "on_snapshot") if k in kwargs}
        settings = MqttSettings(**(broker.settings_kwargs() | kwargs))
        outbox = Outbox(tmp_path / f"state{len(publishers)}.db")
        publisher = MqttPublisher(settings, BIN, outbox, lambda: "m-1", **handlers)
        publishers.append(publisher)
        if start:
            publisher.start()
            # Ready = subscribed to commands, so a test's command cannot arrive too early.
            assert not wait or publisher.wait_ready(5), publisher.last_error
        return publisher

    yield make
    for publisher in publishers:
        publisher.stop(timeout=2.0)
        publisher.outbox.close()


def wait_connected(publisher: MqttPublisher, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not publisher.connected:
        assert time.monotonic() < deadline, f"not connected: {publisher.last_error}"
        time.sleep(0.05)


def test_delivers_events_in_order_with_qos1_and_retained_counts(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    sub = subscriber_factory(broker, [PREFIX + "#"])
    publisher = publisher_factory(broker)
    events = [make_event(i) for i in range(30)]
    for e in events:
        publisher.submit(e)

    got = sub.wait_for(EVENT, len(events), timeout=10)
    assert [SortEvent.from_payload(m.json()) for m in got] == events
    assert all(m.qos == 1 and not m.retain for m in got)
    assert publisher.drain(5)
    assert len(publisher.outbox) == 0
    assert sub.wait_for(STATUS)[0].payload == b"online"

    # Counts go out on connect and after every delivered event; once the live subscriber has
    # all of them, the broker has stored the final state as retained...
    final = sub.wait_for(COUNTS, 1 + len(events))
    assert len(final) == 1 + len(events) and final[-1].json() == expected_counts(events)
    sub.wait_until(PREFIX + "last_event", lambda m: m.json()["id"] == events[-1].id)
    # ...and a newcomer gets exactly that: counts of every decision, the last event, online.
    late = subscriber_factory(broker, [PREFIX + "#"])
    counts = late.wait_for(COUNTS)
    assert len(counts) == 1 and counts[0].retain
    assert counts[0].json() == expected_counts(events)
    last = late.wait_for(PREFIX + "last_event")
    assert len(last) == 1 and last[0].retain and last[0].json()["id"] == events[-1].id
    assert late.wait_for(STATUS)[-1].payload == b"online"


def test_broker_down_and_up_mid_run_loses_nothing_and_keeps_order(
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    # Persistence keeps the subscriber's session across the restart, so what the bin sends
    # before the subscriber has reconnected is queued for it instead of being missed.
    broker = broker_factory(persistence=True)
    sub = subscriber_factory(broker, [EVENT], client_id="test-sub-persistent", clean_session=False)
    publisher = publisher_factory(broker)
    wait_connected(publisher)

    events = [make_event(i) for i in range(60)]
    for e in events[:40]:
        publisher.submit(e)
    sub.wait_for(EVENT, 5, timeout=10)
    broker.stop()  # mid-run: some of the 40 are still in the outbox
    for e in events[40:]:
        publisher.submit(e)  # while the broker is down
    time.sleep(0.5)
    assert not publisher.connected
    assert len(publisher.outbox) > 0
    broker.start()

    # Wait for the last event itself: at-least-once may deliver a duplicate first, so a count
    # of messages alone can be reached before every event arrived.
    sub.wait_until(EVENT, lambda m: m.json()["id"] == events[-1].id, timeout=20)
    ids = [m.json()["id"] for m in sub.on(EVENT)]
    assert first_occurrences(ids) == [e.id for e in events]
    assert len(ids) - len(set(ids)) <= 2, f"unexpected duplicates: {ids}"
    assert publisher.drain(5)
    assert publisher.outbox.counts() == expected_counts(events)


def test_events_submitted_before_the_broker_exists_are_delivered(
    tmp_path: Path,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    broker = Broker(tmp_path / "late-broker")  # configured, not started
    publisher = publisher_factory(broker, wait=False)
    events = [make_event(i) for i in range(5)]
    for e in events:
        publisher.submit(e)
    time.sleep(1.0)
    assert len(publisher.outbox) == 5
    broker.start()
    try:
        assert publisher.drain(10)
        # Delivered before a subscriber could subscribe: the last event is retained.
        late = subscriber_factory(broker, [PREFIX + "last_event"])
        late.wait_until(PREFIX + "last_event", lambda m: m.json()["id"] == events[-1].id)
    finally:
        publisher.stop(2)
        broker.stop()


def test_ping_and_reset_counts(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    publisher = publisher_factory(broker)
    sub = subscriber_factory(broker, [PREFIX + "#"])
    events = [make_event(i, "glass") for i in range(3)]
    for e in events:
        publisher.submit(e)
    assert publisher.drain(5)

    sub.publish(CMD, json.dumps({"cmd": "ping", "id": "p-1"}))
    reply = sub.wait_for(RESULT)[0].json()
    assert reply["id"] == "p-1" and reply["cmd"] == "ping" and reply["ok"] is True
    assert reply["result"]["pong"] is True and reply["result"]["model_version"] == "m-1"

    sub.publish(CMD, json.dumps({"cmd": "reset_counts", "id": 2}))
    reply = sub.wait_for(RESULT, 2)[1].json()
    assert reply == {
        "id": 2,
        "cmd": "reset_counts",
        "ok": True,
        "result": dict.fromkeys(DECISIONS, 0),
    }
    assert publisher.outbox.counts() == dict.fromkeys(DECISIONS, 0)
    # The reply went out after the counts on the same connection: the retained copy is fresh.
    late = subscriber_factory(broker, [COUNTS])
    retained = late.wait_for(COUNTS)[0]
    assert retained.retain and retained.json() == dict.fromkeys(DECISIONS, 0)

    publisher.submit(make_event(99, "metal"))
    expected = dict.fromkeys(DECISIONS, 0) | {"metal": 1}
    late.wait_until(COUNTS, lambda m: m.json() == expected)


@pytest.mark.parametrize(
    ("payload", "reply_id", "reply_cmd", "error_part"),
    [
        (b"{not json", None, None, "not JSON"),
        (b"[1, 2]", None, None, "JSON object"),
        (b'{"cmd": "explode", "id": "x1"}', "x1", "explode", "unknown command"),
        (b'{"cmd": 5, "id": "x2"}', "x2", None, "'cmd' must be a string"),
        (b'{"cmd": "reset_counts", "id": [1]}', None, "reset_counts", "'id' must be"),
        (b'{"cmd": "reset_counts", "id": "x3", "all": true}', "x3", "reset_counts", "unexpected"),
        (b'{"id": "x4"}', "x4", None, "missing 'cmd'"),
        (b"\xff\xfe", None, None, "not UTF-8"),
    ],
)
def test_bad_commands_get_an_error_and_change_nothing(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
    payload: bytes,
    reply_id: Any,
    reply_cmd: str | None,
    error_part: str,
) -> None:
    publisher = publisher_factory(broker)
    sub = subscriber_factory(broker, [PREFIX + "#"])
    publisher.submit(make_event(1, "paper"))
    assert publisher.drain(5)
    before = publisher.outbox.counts()

    sub.publish(CMD, payload)
    reply = sub.wait_for(RESULT)[0].json()
    assert reply["ok"] is False
    assert reply["id"] == reply_id and reply["cmd"] == reply_cmd
    assert error_part in reply["error"]
    assert publisher.outbox.counts() == before == expected_counts([make_event(1, "paper")])
    # The bin still works afterwards.
    sub.publish(CMD, b'{"cmd": "ping"}')
    assert sub.wait_for(RESULT, 2)[1].json()["ok"] is True


def test_a_retained_command_is_not_run(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    sub = subscriber_factory(broker, [RESULT])
    sub.publish(CMD, b'{"cmd": "reset_counts", "id": "stale"}', retain=True)
    publisher = publisher_factory(broker, start=False)
    publisher.submit(make_event(1, "organic"))
    publisher.start()
    reply = sub.wait_for(RESULT)[0].json()
    assert reply["ok"] is False and "retained" in reply["error"]
    assert publisher.outbox.counts()["organic"] == 1


def test_reload_model_and_snapshot_use_the_daemons_handlers(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    calls: list[str] = []
    frames: list[bytes | None] = [b"\xff\xd8fake-jpeg\xff\xd9", None]

    def reload_model() -> str:
        calls.append("reload")
        if len(calls) > 1:
            raise SmartbinError("bundle /models/x: sha256 mismatch")
        return "loaded m-2"

    publisher_factory(broker, on_reload_model=reload_model, on_snapshot=lambda: frames.pop(0))
    sub = subscriber_factory(broker, [PREFIX + "#"])
    for i, cmd in enumerate(["reload_model", "reload_model", "snapshot", "snapshot"]):
        sub.publish(CMD, json.dumps({"cmd": cmd, "id": i}))
    replies = [m.json() for m in sub.wait_for(RESULT, 4)]
    assert replies[0]["ok"] and replies[0]["result"]["message"] == "loaded m-2"
    assert not replies[1]["ok"] and "sha256 mismatch" in replies[1]["error"]
    assert replies[2]["ok"] and replies[2]["result"]["bytes"] == len(b"\xff\xd8fake-jpeg\xff\xd9")
    assert not replies[3]["ok"] and "no camera frame" in replies[3]["error"]
    assert [r["id"] for r in replies] == [0, 1, 2, 3]
    assert sub.wait_for(PREFIX + "snapshot")[0].payload == b"\xff\xd8fake-jpeg\xff\xd9"
    assert calls == ["reload", "reload"]

    # Without handlers these commands are refused, not crashed on.
    bare = publisher_factory(broker, client_id="bare", topic_prefix="smartbin/{bin_id}-bare/")
    wait_connected(bare)
    sub2 = subscriber_factory(broker, [bare.topics.cmd_result])
    sub2.publish(bare.topics.cmd, b'{"cmd": "snapshot"}')
    assert "not supported" in sub2.wait_for(bare.topics.cmd_result)[0].json()["error"]


def test_last_will_offline_on_abrupt_death(
    broker: Broker, subscriber_factory: Callable[..., Subscriber], tmp_path: Path
) -> None:
    sub = subscriber_factory(broker, [STATUS])
    script = textwrap.dedent(
        f"""
        import time
        from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
        from smartbin.device.comms.outbox import Outbox
        p = MqttPublisher(MqttSettings(host="127.0.0.1", port={broker.port}), {BIN!r},
                          Outbox({str(tmp_path / "will.db")!r}))
        p.start()
        while not p.connected:
            time.sleep(0.05)
        print("connected", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"connected"
        assert sub.wait_for(STATUS)[0].payload == b"online"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    status = sub.wait_for(STATUS, 2)
    assert status[1].payload == b"offline"
    late = subscriber_factory(broker, [STATUS])
    retained = late.wait_for(STATUS)[0]
    assert retained.retain and retained.payload == b"offline"


def test_clean_stop_publishes_offline(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    publisher = publisher_factory(broker)
    sub = subscriber_factory(broker, [STATUS, EVENT])
    assert sub.wait_for(STATUS)[-1].payload == b"online"
    publisher.submit(make_event(1))
    publisher.stop(timeout=5)
    assert sub.wait_for(EVENT)[0].json()["id"] == "ev001"  # flushed before going offline
    assert sub.wait_for(STATUS, 2)[-1].payload == b"offline"
    assert len(publisher.outbox) == 0


def test_mqtt5_protocol_delivers(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    sub = subscriber_factory(broker, [EVENT])
    publisher = publisher_factory(broker, protocol="5")
    events = [make_event(i) for i in range(5)]
    for e in events:
        publisher.submit(e)
    assert [m.json()["id"] for m in sub.wait_for(EVENT, 5)] == [e.id for e in events]


def test_password_auth(
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(users={"bin": "s3cret", "watcher": "w"})
    sub = subscriber_factory(broker, [EVENT], username="watcher", password="w")

    # Plain TCP on loopback: credentials in clear must be allowed explicitly.
    plain = {"allow_insecure_credentials": True}
    wrong = publisher_factory(
        broker, username="bin", password="nope", client_id="wrong", wait=False, **plain
    )
    wrong.submit(make_event(1))
    deadline = time.monotonic() + 5
    while wrong.last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wrong.last_error is not None and "refused" in wrong.last_error
    assert not wrong.connected and len(wrong.outbox) == 1  # kept, not dropped

    right = publisher_factory(broker, username="bin", password="s3cret", **plain)
    right.submit(make_event(2))
    assert sub.wait_for(EVENT)[0].json()["id"] == "ev002"


def test_tls_with_ca_file(
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(tls=True)
    sub = subscriber_factory(broker, [EVENT])
    publisher = publisher_factory(broker)
    publisher.submit(make_event(3))
    assert sub.wait_for(EVENT)[0].json()["id"] == "ev003"


def nagle_disabled(publisher: MqttPublisher) -> bool:
    sock = publisher._client.socket()
    assert sock is not None, "not connected"
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_packets_go_out_without_nagle_delay(
    tls: bool,
    broker_factory: Callable[..., Broker],
    publisher_factory: Callable[..., MqttPublisher],
) -> None:
    """With Nagle's algorithm on, an event's PUBLISH waited for the broker's delayed ack of
    the previous retained counts: 10-17 ms per event on a local broker (see disable_nagle)."""
    publisher = publisher_factory(broker_factory(tls=tls))
    assert nagle_disabled(publisher)
    publisher.submit(make_event(4))
    assert publisher.drain(5)


def test_settings_errors_name_the_key_and_file(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "s.db")
    missing = tmp_path / "nowhere" / "ca.crt"
    cases = [
        (MqttSettings(tls=True, ca_file=str(missing)), str(missing)),
        (MqttSettings(tls=True, cert_file=str(missing)), "mqtt.cert_file"),
        (MqttSettings(ca_file=str(missing)), "mqtt.tls is false"),
        (MqttSettings(protocol="3"), "mqtt.protocol"),
        (MqttSettings(port=0), "mqtt.port"),
        (MqttSettings(topic_prefix="bins/+/"), "mqtt.topic_prefix"),
        (MqttSettings(topic_prefix="bins/{bid}/"), "mqtt.topic_prefix"),
    ]
    for settings, part in cases:
        with pytest.raises(ConfigError, match=part.replace(".", r"\.")):
            MqttPublisher(settings, BIN, outbox)
    with pytest.raises(ConfigError, match="bin_id"):
        MqttPublisher(MqttSettings(), "a/b", outbox)


def test_parse_command_is_pure_and_strict() -> None:
    assert parse_command(b'{"cmd": "ping"}') == Command("ping", None)
    assert parse_command('{"cmd": "snapshot", "id": 7}') == Command("snapshot", 7)
    with pytest.raises(CommandError) as err:
        parse_command(b'{"cmd": "ping", "id": true}')
    assert err.value.cmd == "ping" and err.value.id is None and "'id'" in str(err.value)
    with pytest.raises(CommandError, match="bytes"):
        parse_command(b'{"cmd": "ping", "pad": "' + b"x" * 5000 + b'"}')
    reply = json.loads(ok_reply(Command("ping", "a"), {"pong": True}))
    assert reply == {"id": "a", "cmd": "ping", "ok": True, "result": {"pong": True}}
    assert json.loads(error_reply("bad", id=3, cmd="x")) == {
        "id": 3,
        "cmd": "x",
        "ok": False,
        "error": "bad",
    }
