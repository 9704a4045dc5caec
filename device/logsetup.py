"""The daemon's log lines: one line per happening, ``key=value`` or JSON lines.

Why: journald and log shippers index lines, and a grep for ``decision=organic`` or a
``jq 'select(.event_id == ...)'`` must find the whole story of one item on one line.
Structured fields are passed as ``log.info("sort event", extra={"fields": {...}})``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FIELDS_ATTR = "fields"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a structured log call: ``log.info("msg", extra=fields(id=...))``."""
    return {FIELDS_ATTR: values}


def _logfmt_value(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text)
    return text


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=INFO logger=... msg="..." key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        parts.update(getattr(record, FIELDS_ATTR, None) or {})
        if record.exc_info:
            parts["exc"] = self.formatException(record.exc_info).replace("\n", " | ")
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in parts.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as :class:`LogfmtFormatter`."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, FIELDS_ATTR, None) or {})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, separators=(",", ":"))


def setup_logging(level: str, as_json: bool) -> None:
    """Replace whatever the CLI configured: stderr (journald adds its own timestamps)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # paho logs every packet at DEBUG; keep it at INFO unless asked otherwise.
    logging.getLogger("paho").setLevel(max(logging.INFO, root.level))
