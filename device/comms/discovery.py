"""Home Assistant MQTT discovery payloads, as pure functions.

Home Assistant creates entities from retained JSON configs on
``<discovery_prefix>/<component>/<node_id>/<object_id>/config``. The bin announces:

* one ``sensor`` per decision count (``state_class: total_increasing``, so a ``reset_counts``
  is seen as a meter reset, not a negative delta) read from the retained ``counts`` topic;
* ``last decision`` / ``last confidence`` / ``last sorted`` sensors from the retained
  ``last_event`` topic (the whole event is exposed as attributes of ``last decision``);
* diagnostic health sensors from the retained ``health`` topic (keys in :data:`HEALTH_SENSORS`;
  a key the daemon does not report shows as *unknown*, not as an error);
* ``button`` entities that send ``reset_counts`` / ``reload_model`` / ``snapshot`` commands and a
  ``camera`` entity showing the JPEG published on the snapshot topic.

Every entity shares one ``device`` block (identifiers ``[bin_id]``) and uses the bin's status
topic as ``availability_topic``, so the last will ("offline") greys them all out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from smartbin.device.comms.outbox import DECISIONS
from smartbin.device.comms.topics import Topics

MANUFACTURER = "smartbin"
MODEL = "smartbin waste classifier"

_ICONS = {
    "organic": "mdi:leaf",
    "cardboard": "mdi:package-variant",
    "glass": "mdi:bottle-wine",
    "metal": "mdi:silverware-fork-knife",
    "paper": "mdi:newspaper",
    "plastic": "mdi:bottle-soda",
    "trash": "mdi:trash-can",
    "unknown": "mdi:help-circle",
}


@dataclass(frozen=True)
class HealthSensor:
    key: str
    name: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    icon: str | None = None


#: Keys of the health JSON that get a sensor. ``outbox_pending``/``outbox_corrupt`` are added
#: by the publisher itself; the others are for the daemon to report.
HEALTH_SENSORS: tuple[HealthSensor, ...] = (
    HealthSensor("outbox_pending", "Events waiting", "events", icon="mdi:tray-full"),
    HealthSensor("outbox_corrupt", "Corrupt events", "events", icon="mdi:alert"),
    HealthSensor("uptime_s", "Uptime", "s", "duration", "total_increasing"),
    HealthSensor("inference_ms", "Inference time", "ms", "duration"),
    HealthSensor("fps", "Frames per second", "fps", icon="mdi:camera-timer"),
    HealthSensor("cpu_temp_c", "CPU temperature", "°C", "temperature"),
)

#: Commands that get a Home Assistant button.
BUTTONS: tuple[tuple[str, str, str], ...] = (
    ("reset_counts", "Reset counts", "mdi:counter"),
    ("reload_model", "Reload model", "mdi:reload"),
    ("snapshot", "Take snapshot", "mdi:camera"),
)


def node_id(bin_id: str) -> str:
    """``bin_id`` made safe for a discovery topic level (Home Assistant allows [a-zA-Z0-9_-])."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", bin_id)


def device_block(bin_id: str, sw_version: str) -> dict[str, Any]:
    return {
        "identifiers": [bin_id],
        "name": f"smartbin {bin_id}",
        "model": MODEL,
        "manufacturer": MANUFACTURER,
        "sw_version": sw_version,
    }


def config_topic(discovery_prefix: str, component: str, bin_id: str, object_id: str) -> str:
    return f"{discovery_prefix.rstrip('/')}/{component}/{node_id(bin_id)}/{object_id}/config"


def _get(key: str) -> str:
    """A template that renders ``None`` (HA: state unknown) when the key is missing."""
    return f"{{{{ value_json.get('{key}') }}}}"


def discovery_configs(
    *,
    bin_id: str,
    topics: Topics,
    discovery_prefix: str = "homeassistant",
    sw_version: str,
) -> list[tuple[str, dict[str, Any]]]:
    """All discovery configs for one bin as ``(config topic, payload dict)``."""
    node = node_id(bin_id)
    device = device_block(bin_id, sw_version)
    common = {
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": {"name": "smartbin", "sw_version": sw_version},
    }
    configs: list[tuple[str, dict[str, Any]]] = []

    def add(component: str, object_id: str, name: str, **fields: Any) -> None:
        unique = f"smartbin_{node}_{object_id}"
        payload = {"name": name, "unique_id": unique, "object_id": unique, **fields, **common}
        configs.append(
            (
                config_topic(discovery_prefix, component, bin_id, object_id),
                {k: v for k, v in payload.items() if v is not None},
            )
        )

    for decision in DECISIONS:
        add(
            "sensor",
            f"count_{decision}",
            f"{decision.capitalize()} items",
            state_topic=topics.counts,
            value_template=f"{{{{ value_json.{decision} }}}}",
            state_class="total_increasing",
            unit_of_measurement="items",
            icon=_ICONS.get(decision),
        )
    add(
        "sensor",
        "last_decision",
        "Last decision",
        state_topic=topics.last_event,
        value_template="{{ value_json.decision }}",
        json_attributes_topic=topics.last_event,
        icon="mdi:delete-variant",
    )
    add(
        "sensor",
        "last_confidence",
        "Last confidence",
        state_topic=topics.last_event,
        value_template="{{ (value_json.confidence * 100) | round(1) }}",
        unit_of_measurement="%",
        state_class="measurement",
        icon="mdi:gauge",
    )
    add(
        "sensor",
        "last_sorted",
        "Last sorted",
        state_topic=topics.last_event,
        value_template="{{ value_json.ts }}",
        device_class="timestamp",
    )
    for sensor in HEALTH_SENSORS:
        add(
            "sensor",
            sensor.key,
            sensor.name,
            state_topic=topics.health,
            value_template=_get(sensor.key),
            unit_of_measurement=sensor.unit,
            device_class=sensor.device_class,
            state_class=sensor.state_class,
            icon=sensor.icon,
            entity_category="diagnostic",
        )
    for cmd, name, icon in BUTTONS:
        add(
            "button",
            f"button_{cmd}",
            name,
            command_topic=topics.cmd,
            payload_press=json.dumps({"cmd": cmd, "id": "homeassistant"}),
            icon=icon,
            entity_category="config",
        )
    add("camera", "snapshot", "Snapshot", topic=topics.snapshot)
    return configs


def discovery_messages(
    *,
    bin_id: str,
    topics: Topics,
    discovery_prefix: str = "homeassistant",
    sw_version: str,
) -> list[tuple[str, bytes]]:
    """The configs encoded for publishing (retained) as ``(topic, JSON bytes)``."""
    return [
        (topic, json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        for topic, payload in discovery_configs(
            bin_id=bin_id, topics=topics, discovery_prefix=discovery_prefix, sw_version=sw_version
        )
    ]
