"""The JSON Schemas in firmware_config/schema/ against what the real bin publishes.

The schemas are the contract for people who build on the bins' MQTT messages (Home
Assistant, Grafana, Node-RED, the fleet dashboard). Written by hand, they drift from the code
unless a test holds them together, so the payloads checked here come from a real
``smartbin run`` (shipped model, the three-item clip) talking to a real mosquitto: events,
retained last_event/counts/status/health, command replies, and the commands that its Home
Assistant discovery buttons send. Each schema must also refuse typical wrong payloads, or
it would pass anything.
"""

from __future__ import annotations

import copy
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_daemon import BIN, PREFIX, write_config

from smartbin.dashboard import payloads as dashboard_payloads
from smartbin.device.bundle import default_bundle_path
from smartbin.device.comms.commands import COMMANDS
from smartbin.device.comms.outbox import DECISIONS
from smartbin.device.labels import MATERIAL_CLASSES
from smartbin.device.presence import PresenceState

SCHEMA_DIR = Path(__file__).parents[1] / "firmware_config" / "schema"
NAMES = ("event", "counts", "status", "health", "cmd", "cmd_result")
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        schema(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def problems(name: str, instance: Any) -> list[str]:
    """Every schema violation of ``instance``, as readable lines (empty = valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]


def test_the_folder_holds_exactly_the_documented_schemas() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(
        f"{n}.schema.json" for n in NAMES
    )


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_draft_2020_12_and_its_examples_pass(name: str) -> None:
    data = schema(name)
    assert data["$schema"] == DRAFT
    jsonschema.Draft202012Validator.check_schema(data)
    assert data.get("title") and data.get("description")
    assert data["examples"], f"{name}: the README points readers at the example"
    for example in data["examples"]:
        assert problems(name, example) == [], example


def test_names_in_the_schemas_are_the_code_s_names() -> None:
    """A new decision, material, command or presence state must reach the contract too."""
    event = schema("event")["properties"]
    assert event["decision"]["enum"] == list(DECISIONS)
    assert event["material_probs"]["required"] == list(MATERIAL_CLASSES)
    assert event["material_probs"]["propertyNames"]["enum"] == list(MATERIAL_CLASSES)
    counts = schema("counts")
    assert counts["required"] == list(DECISIONS) == counts["propertyNames"]["enum"]
    assert schema("cmd")["properties"]["cmd"]["enum"] == list(COMMANDS)
    presence = schema("health")["properties"]["presence_state"]["enum"]
    assert presence == [*(s.value for s in PresenceState), None]


def test_real_daemon_payloads_follow_the_schemas(
    tmp_path: Path,
    broker,  # noqa: ANN001 - fixtures_broker.Broker
    subscriber_factory: Callable[..., Any],
    daemons: Callable[..., Any],
    clip: tuple[Path, int],
) -> None:
    clip_path, _ = clip
    sub = subscriber_factory(broker, [PREFIX + "#", "homeassistant/#"])
    config = write_config(
        tmp_path,
        port=broker.port,
        clip=clip_path,
        model=default_bundle_path(),
        loop=True,
        realtime=True,
    )
    daemon = daemons(config)
    sub.wait_for(PREFIX + "event", 1, timeout=90)
    sub.wait_for(PREFIX + "health", 1, timeout=30)

    # Every command, one that is refused, and a payload that is not even JSON.
    sent = [
        {"cmd": "ping", "id": 1},
        {"cmd": "snapshot", "id": "s"},
        {"cmd": "reload_model", "id": "r"},
        {"cmd": "reset_counts", "id": "c"},
        {"cmd": "pnig", "id": "typo"},
    ]
    for command in sent:
        sub.publish(PREFIX + "cmd", json.dumps(command))
    sub.publish(PREFIX + "cmd", b"not json")
    replies = [m.json() for m in sub.wait_for(PREFIX + "cmd/result", len(sent) + 1, timeout=60)]
    by_id = {r["id"]: r for r in replies}
    assert [by_id[c["id"]]["ok"] for c in sent] == [True, True, True, True, False], replies
    # The reload's outcome goes into the next health report (model_reload is checked too).
    sub.wait_until(PREFIX + "health", lambda m: "model_reload" in m.json(), timeout=30)

    daemon.kill(signal.SIGTERM)
    assert daemon.wait(60) == 0, daemon.log()[-3000:]
    assert sub.on(PREFIX + "status")[-1].payload == b"offline"

    checked: dict[str, int] = {}
    buttons: set[str] = set()

    def check(name: str, topic: str, instance: Any) -> None:
        assert problems(name, instance) == [], f"{topic}: {instance}"
        checked[name] = checked.get(name, 0) + 1

    for message in sub.messages:
        topic = message.topic
        leaf = topic.removeprefix(PREFIX)
        if leaf in ("event", "last_event"):
            check("event", topic, message.json())
            assert dashboard_payloads.parse_event(message.payload).bin_id == BIN
        elif leaf == "counts":
            check("counts", topic, message.json())
            dashboard_payloads.parse_counts(message.payload)
        elif leaf == "status":
            check("status", topic, message.payload.decode("utf-8"))
            dashboard_payloads.parse_status(message.payload)
        elif leaf == "health":
            check("health", topic, message.json())
            dashboard_payloads.parse_health(message.payload)
        elif leaf == "cmd/result":
            check("cmd_result", topic, message.json())
            dashboard_payloads.parse_cmd_result(message.payload)
        elif leaf == "cmd":
            # The test's own commands: those the bin ran follow the schema, the others not.
            if message.payload != b"not json":
                command = message.json()
                assert (problems("cmd", command) == []) == (command["cmd"] in COMMANDS)
        elif topic.startswith("homeassistant/") and topic.endswith("/config"):
            press = message.json().get("payload_press")
            if press is not None:  # what Home Assistant's buttons will send to the bin
                check("cmd", topic, json.loads(press))
                buttons.add(json.loads(press)["cmd"])
    assert checked["event"] >= 2  # event + retained last_event
    assert checked["cmd_result"] == len(sent) + 1
    assert buttons == {"reset_counts", "reload_model", "snapshot"}
    assert {"counts", "status", "health"} <= set(checked)


def _event() -> dict[str, Any]:
    return copy.deepcopy(schema("event")["examples"][0])


def _health() -> dict[str, Any]:
    return copy.deepcopy(schema("health")["examples"][0])


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with the dotted ``path`` set to ``value``."""
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


_COUNTS = schema("counts")["examples"][0]
_RESULT = schema("cmd_result")["examples"]

WRONG: list[tuple[str, Any, str]] = [
    ("event", _without(_event(), "id"), "no id"),
    ("event", _with(_event(), "id", "not-hex"), "id not a hex uuid"),
    ("event", _with(_event(), "decision", "banana"), "unknown decision"),
    ("event", _with(_event(), "confidence", 1.5), "confidence above 1"),
    ("event", _with(_event(), "confidence", "0.9"), "confidence as text"),
    ("event", _with(_event(), "ts", "2026-12-04 13:56:18"), "time without zone"),
    ("event", _with(_event(), "material_probs.banana", 0.1), "unknown material"),
    ("event", _without(_event(), "material_probs"), "no material_probs"),
    ("event", _with(_event(), "frames", 0), "no frame"),
    ("event", [_event()], "a list"),
    ("counts", _with(_COUNTS, "glass", -1), "negative count"),
    ("counts", _with(_COUNTS, "glass", 1.5), "fractional count"),
    ("counts", _with(_COUNTS, "banana", 1), "unknown decision"),
    ("counts", _without(_COUNTS, "organic"), "a decision missing"),
    ("status", "Online", "capitalised"),
    ("status", "", "empty"),
    ("health", _without(_health(), "outbox_pending"), "no outbox_pending"),
    ("health", _with(_health(), "uptime_s", "20 s"), "uptime as text"),
    ("health", _with(_health(), "outbox_pending", -1), "negative backlog"),
    ("health", _with(_health(), "presence_state", "dozing"), "unknown presence state"),
    ("cmd", {"cmd": "pnig"}, "unknown command"),
    ("cmd", {"cmd": "ping", "ide": 1}, "typo in a key"),
    ("cmd", {"cmd": "ping", "id": True}, "boolean id"),
    ("cmd", {"id": 1}, "no cmd"),
    ("cmd_result", _without(_RESULT[0], "result"), "ok without result"),
    ("cmd_result", _without(_RESULT[1], "error"), "failure without error"),
    ("cmd_result", _with(_RESULT[0], "error", "x"), "ok with an error"),
    ("cmd_result", _with(_RESULT[0], "ok", "yes"), "ok as text"),
]


@pytest.mark.parametrize(
    ("name", "instance"),
    [pytest.param(n, i, id=f"{n}: {why}") for n, i, why in WRONG],
)
def test_wrong_payloads_fail(name: str, instance: Any) -> None:
    assert problems(name, instance), f"{name} accepted {instance}"
