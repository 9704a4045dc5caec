"""The bin's MQTT topic tree, derived from one prefix (default ``smartbin/<bin_id>/``).

One place for the names, so the publisher, Home Assistant discovery and the tests cannot
drift apart::

    <prefix>status      "online" / "offline", retained (offline is also the last will)
    <prefix>event       one JSON SortEvent per item, QoS 1, not retained
    <prefix>last_event  the latest delivered SortEvent, retained (Home Assistant state)
    <prefix>counts      {"organic": n, "cardboard": n, ..., "unknown": n}, retained
    <prefix>health      JSON health report, retained
    <prefix>cmd         commands in (JSON), see smartbin.device.comms.commands
    <prefix>cmd/result  command replies (JSON)
    <prefix>snapshot    JPEG bytes answering the "snapshot" command
"""

from __future__ import annotations

from dataclasses import dataclass

from smartbin.errors import ConfigError

_FORBIDDEN = ("+", "#", "\0")


def check_topic_part(value: str, what: str) -> None:
    """Refuse MQTT wildcards and NUL in a name used inside a topic (ConfigError names it)."""
    bad = [c for c in _FORBIDDEN if c in value]
    if bad:
        raise ConfigError(f"{what}: {value!r} contains {bad[0]!r}, not allowed in an MQTT topic")


@dataclass(frozen=True)
class Topics:
    prefix: str
    snapshot: str

    @classmethod
    def for_bin(cls, template: str, bin_id: str, snapshot_topic: str = "") -> Topics:
        """``template`` may contain ``{bin_id}``; a trailing ``/`` is added when missing."""
        check_topic_part(bin_id, "bin_id")
        if not bin_id or "/" in bin_id:
            raise ConfigError(f"bin_id: {bin_id!r} must be non-empty and contain no '/'")
        try:
            prefix = template.format(bin_id=bin_id)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"mqtt.topic_prefix: {template!r} is not a valid template "
                f"(only {{bin_id}} may be used): {exc}"
            ) from exc
        check_topic_part(prefix, "mqtt.topic_prefix")
        if not prefix.strip("/"):
            raise ConfigError(f"mqtt.topic_prefix: {template!r} gives an empty prefix")
        if not prefix.endswith("/"):
            prefix += "/"
        if snapshot_topic:
            check_topic_part(snapshot_topic, "mqtt.snapshot_topic")
        return cls(prefix=prefix, snapshot=snapshot_topic or prefix + "snapshot")

    @property
    def status(self) -> str:
        return self.prefix + "status"

    @property
    def event(self) -> str:
        return self.prefix + "event"

    @property
    def last_event(self) -> str:
        return self.prefix + "last_event"

    @property
    def counts(self) -> str:
        return self.prefix + "counts"

    @property
    def health(self) -> str:
        return self.prefix + "health"

    @property
    def cmd(self) -> str:
        return self.prefix + "cmd"

    @property
    def cmd_result(self) -> str:
        return self.prefix + "cmd/result"
