"""Home Assistant discovery: the pure payloads, and their retained publication on a real broker."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures_broker import Broker, Subscriber

from smartbin.device.comms.commands import parse_command
from smartbin.device.comms.discovery import (
    HEALTH_SENSORS,
    discovery_configs,
    discovery_messages,
    node_id,
)
from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
from smartbin.device.comms.outbox import DECISIONS, Outbox
from smartbin.device.comms.topics import Topics

BIN = "kitchen.bin 1"
TOPICS = Topics.for_bin("smartbin/{bin_id}/", BIN)


def configs() -> list[tuple[str, dict]]:
    return discovery_configs(bin_id=BIN, topics=TOPICS, sw_version="0.1.0 (model m-3)")


def test_one_total_increasing_sensor_per_decision() -> None:
    counts = {
        payload["value_template"]: payload
        for topic, payload in configs()
        if topic.split("/")[3].startswith("count_")
    }
    assert len(counts) == len(DECISIONS)
    for decision in DECISIONS:
        payload = counts[f"{{{{ value_json.{decision} }}}}"]
        assert payload["state_topic"] == TOPICS.counts
        assert payload["state_class"] == "total_increasing"


def test_every_config_has_identity_device_and_availability() -> None:
    all_configs = configs()
    node = node_id(BIN)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", node) and node == "kitchen_bin_1"
    unique_ids = [payload["unique_id"] for _, payload in all_configs]
    assert len(set(unique_ids)) == len(all_configs)
    for topic, payload in all_configs:
        prefix, component, topic_node, object_id, last = topic.split("/")
        assert (prefix, topic_node, last) == ("homeassistant", node, "config")
        assert component in {"sensor", "button", "camera"}
        assert payload["object_id"] == payload["unique_id"] == f"smartbin_{node}_{object_id}"
        assert payload["availability_topic"] == TOPICS.status
        assert payload["device"] == {
            "identifiers": [BIN],
            "name": f"smartbin {BIN}",
            "model": "smartbin waste classifier",
            "manufacturer": "smartbin",
            "sw_version": "0.1.0 (model m-3)",
        }
        assert None not in payload.values()


def test_last_event_health_and_command_entities() -> None:
    by_object = {topic.split("/")[3]: payload for topic, payload in configs()}
    assert by_object["last_decision"]["state_topic"] == TOPICS.last_event
    assert by_object["last_decision"]["json_attributes_topic"] == TOPICS.last_event
    assert "confidence" in by_object["last_confidence"]["value_template"]
    assert by_object["last_sorted"]["device_class"] == "timestamp"
    for sensor in HEALTH_SENSORS:
        payload = by_object[sensor.key]
        assert payload["state_topic"] == TOPICS.health
        assert sensor.key in payload["value_template"]
        assert payload["entity_category"] == "diagnostic"
    for cmd in ("reset_counts", "reload_model", "snapshot"):
        assert by_object[f"button_{cmd}"]["command_topic"] == TOPICS.cmd
        # The button sends a command the bin accepts.
        assert parse_command(by_object[f"button_{cmd}"]["payload_press"]).name == cmd
    assert by_object["snapshot"]["topic"] == TOPICS.snapshot


def test_messages_are_json_of_the_configs_with_a_custom_prefix() -> None:
    messages = discovery_messages(bin_id=BIN, topics=TOPICS, discovery_prefix="ha/", sw_version="x")
    assert len(messages) == len(configs())
    for topic, payload in messages:
        assert topic.startswith("ha/") and "//" not in topic
        assert json.loads(payload)["device"]["sw_version"] == "x"


# -- on a real broker ----------------------------------------------------------------------


@pytest.fixture
def start_publisher(tmp_path: Path) -> Iterator[Callable[..., MqttPublisher]]:
    started: list[MqttPublisher] = []

    def start(broker: Broker, **kwargs: object) -> MqttPublisher:
        settings = MqttSettings(**(broker.settings_kwargs() | kwargs))
        outbox = Outbox(tmp_path / f"state{len(started)}.db")
        publisher = MqttPublisher(settings, "bin9", outbox, lambda: "m-9")
        started.append(publisher)
        publisher.start()
        assert publisher.wait_ready(5), publisher.last_error
        return publisher

    yield start
    for publisher in started:
        publisher.stop(2)
        publisher.outbox.close()


def n_configs() -> int:
    return len(discovery_configs(bin_id="bin9", topics=TOPICS, sw_version=""))


def config_messages(sub: Subscriber) -> list:
    with sub._cond:
        return [m for m in sub.messages if m.topic.endswith("/config")]


def wait_configs(sub: Subscriber, n: int, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while len(got := config_messages(sub)) < n:
        assert time.monotonic() < deadline, f"{len(got)} of {n} discovery configs arrived"
        time.sleep(0.05)
    return got


def test_configs_are_retained_and_resent_when_home_assistant_comes_online(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    start_publisher: Callable[..., MqttPublisher],
) -> None:
    live = subscriber_factory(broker, ["homeassistant/#"])
    start_publisher(broker)
    first = wait_configs(live, n_configs())
    expected_topics = {t for t, _ in discovery_configs(bin_id="bin9", topics=TOPICS, sw_version="")}
    assert {m.topic for m in first} == expected_topics
    assert all(json.loads(m.payload)["device"]["sw_version"].endswith("(model m-9)") for m in first)

    late = subscriber_factory(broker, ["homeassistant/+/bin9/+/config"])
    retained = wait_configs(late, n_configs())
    assert all(m.retain for m in retained)
    assert {m.topic for m in retained} == expected_topics

    # Home Assistant restarts: its birth message makes the bin announce itself again.
    live.publish("homeassistant/status", "online")
    again = wait_configs(live, 2 * n_configs())[n_configs() :]
    assert {m.topic for m in again} == expected_topics
    # Anything else on that topic is not a birth message.
    late.publish("homeassistant/status", "offline")
    time.sleep(0.5)
    assert len(config_messages(live)) == 2 * n_configs()


def test_discovery_can_be_switched_off(
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    start_publisher: Callable[..., MqttPublisher],
) -> None:
    live = subscriber_factory(broker, ["homeassistant/#", "smartbin/bin9/#"])
    publisher = start_publisher(broker, discovery=False)
    # Discovery goes out before the counts on connect: once the counts are here, it would be.
    live.wait_for(publisher.topics.counts)
    live.publish("homeassistant/status", "online")
    ping = json.dumps({"cmd": "ping"})
    live.publish(publisher.topics.cmd, ping)  # the reply comes after any discovery would
    live.wait_for(publisher.topics.cmd_result)
    assert config_messages(live) == []
