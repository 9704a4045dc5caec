"""What the bins publish, parsed and checked before anything reaches the history.

Why by hand and not with ``jsonschema``: the dashboard's runtime stays within the ``device``
extra. The JSON Schemas in ``firmware_config/schema/`` are the published contract (for Home
Assistant, Grafana, Node-RED users); tests check both the daemon's real payloads against the
schemas and this parser against the same payloads, so the two cannot drift apart.

Every parser raises :class:`PayloadError` with a message naming what is wrong; the ingest
logs it and skips the message (junk never reaches the store and never stops the dashboard).
The parsers are lenient where the contract allows growth (unknown extra keys in an event or
a health report are kept, not refused) and strict where a wrong value would mislead (a
count that is not a whole number, an event without an ``id``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Payloads larger than this are not parsed (events are ~400 bytes; health ~1 KB).
MAX_JSON_BYTES = 64 * 1024
#: Decisions and bin ids are short names; anything else is junk or an attack on the page.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

STATUSES = ("online", "offline")


class PayloadError(ValueError):
    """A message that does not follow the bins' payload contract."""


@dataclass(frozen=True)
class Event:
    """One sort event as stored: the fields the dashboard shows, plus the payload as sent."""

    id: str
    bin_id: str
    ts: str
    ts_epoch: float
    decision: str
    confidence: float | None
    model_version: str | None
    payload: dict[str, Any]


def load_json(payload: bytes) -> Any:
    """Bytes -> JSON value; PayloadError for oversize, non-UTF-8 or non-JSON payloads."""
    if len(payload) > MAX_JSON_BYTES:
        raise PayloadError(f"payload is {len(payload)} bytes, more than {MAX_JSON_BYTES}")
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from None
    except RecursionError:  # "[[[[...": 64 KB can nest deeper than the parser goes
        raise PayloadError("payload is nested too deeply to be a bin's message") from None


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python writes them, browsers refuse them): junk."""
    raise PayloadError(f"payload is not JSON: {name} is not a JSON number")


def _object(payload: bytes, what: str) -> dict[str, Any]:
    data = load_json(payload)
    if not isinstance(data, dict):
        raise PayloadError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_timestamp(text: Any) -> float:
    """ISO-8601 with a time zone (the bins send UTC, ``...Z``) -> seconds since the epoch."""
    if not isinstance(text, str) or not text:
        raise PayloadError(f"'ts' must be an ISO-8601 time, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError(f"'ts' is not an ISO-8601 time: {text[:64]!r}") from None
    if moment.tzinfo is None:
        raise PayloadError(f"'ts' has no time zone: {text!r}")
    try:  # year 1 or 9999 with an offset falls off the calendar when moved to UTC
        return moment.astimezone(UTC).timestamp()
    except (OverflowError, ValueError):
        raise PayloadError(f"'ts' is out of range: {text!r}") from None


def parse_event(payload: bytes) -> Event:
    """A ``<prefix>event`` (or ``last_event``) payload."""
    data = _object(payload, "event")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not _ID.match(event_id):
        raise PayloadError(f"event 'id' must be a short text id, got {event_id!r}")
    decision = data.get("decision")
    if not isinstance(decision, str) or not _NAME.match(decision):
        raise PayloadError(f"event {event_id}: 'decision' must be a short name, got {decision!r}")
    bin_id = data.get("bin_id")
    if not isinstance(bin_id, str) or not bin_id:
        raise PayloadError(f"event {event_id}: 'bin_id' must be a non-empty text")
    ts_epoch = parse_timestamp(data.get("ts"))
    confidence = data.get("confidence")
    if confidence is not None and not (_number(confidence) and 0 <= confidence <= 1):
        raise PayloadError(f"event {event_id}: 'confidence' must be in [0, 1], got {confidence!r}")
    model_version = data.get("model_version")
    return Event(
        id=event_id,
        bin_id=bin_id,
        ts=data["ts"],
        ts_epoch=ts_epoch,
        decision=decision,
        confidence=float(confidence) if confidence is not None else None,
        model_version=model_version if isinstance(model_version, str) else None,
        payload=data,
    )


def parse_counts(payload: bytes) -> dict[str, int]:
    """A ``<prefix>counts`` payload: decision -> whole number >= 0."""
    data = _object(payload, "counts")
    counts: dict[str, int] = {}
    for key, value in data.items():
        if not _NAME.match(key):
            raise PayloadError(f"counts: {key!r} is not a decision name")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PayloadError(f"counts: {key!r} must be a whole number >= 0, got {value!r}")
        counts[key] = value
    return counts


def parse_status(payload: bytes) -> str:
    """A ``<prefix>status`` payload: ``online`` or ``offline`` (the last will)."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text not in STATUSES:
        raise PayloadError(f"status must be 'online' or 'offline', got {text[:40]!r}")
    return text


def parse_health(payload: bytes) -> dict[str, Any]:
    """A ``<prefix>health`` payload: a JSON object; the figures shown must be numbers."""
    data = _object(payload, "health")
    if "ts" in data:
        parse_timestamp(data["ts"])
    for key in ("uptime_s", "fps", "inference_ms", "outbox_pending", "cpu_temp_c"):
        value = data.get(key)
        if value is not None and not _number(value):
            raise PayloadError(f"health: {key!r} must be a number or null, got {value!r}")
    return data


def parse_cmd_result(payload: bytes) -> dict[str, Any]:
    """A ``<prefix>cmd/result`` payload: ``{"id", "cmd", "ok", "result" | "error"}``."""
    data = _object(payload, "cmd/result")
    if not isinstance(data.get("ok"), bool):
        raise PayloadError(f"cmd/result: 'ok' must be true or false, got {data.get('ok')!r}")
    if not data["ok"] and not isinstance(data.get("error"), str):
        raise PayloadError("cmd/result: a failed command needs an 'error' text")
    return data


def valid_bin_id(bin_id: str) -> bool:
    """A bin id as the bins allow it (any text without ``/``, wildcards or control
    characters), of a sane length."""
    return 0 < len(bin_id) <= 128 and not any(c in "/+#" or ord(c) < 32 for c in bin_id)
