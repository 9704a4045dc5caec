"""Commands sent to the bin on ``<prefix>cmd``: parsing and replies, as pure functions.

Wire format (JSON object, UTF-8)::

    {"cmd": "reset_counts" | "reload_model" | "snapshot" | "ping", "id": "abc"}

``id`` is optional (a string or an integer) and is echoed back. No other keys are accepted:
a typo such as ``{"cmd": "ping", "ide": 1}`` is reported instead of silently ignored.
Every command gets exactly one reply on ``<prefix>cmd/result``::

    {"id": "abc", "cmd": "ping", "ok": true, "result": ...}
    {"id": "abc", "cmd": "pnig", "ok": false, "error": "unknown command 'pnig' (known: ...)"}

A payload that fails to parse changes nothing; the reply carries whatever ``id``/``cmd`` could
still be read from it (``null`` otherwise) so the sender can match it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

COMMANDS: tuple[str, ...] = ("reset_counts", "reload_model", "snapshot", "ping")
_ALLOWED_KEYS = frozenset({"cmd", "id"})
#: Commands are tiny; anything bigger is a mistake (or an attack) and is not parsed.
MAX_PAYLOAD_BYTES = 4096

CommandId = str | int | None


@dataclass(frozen=True)
class Command:
    name: str
    id: CommandId = None


class CommandError(ValueError):
    """A command that cannot be run; ``id``/``cmd`` are what could be read, for the reply."""

    def __init__(self, message: str, *, id: CommandId = None, cmd: str | None = None) -> None:
        super().__init__(message)
        self.id = id
        self.cmd = cmd


def parse_command(payload: bytes | str) -> Command:
    """Validate one command payload; raises :class:`CommandError` saying what is wrong."""
    if isinstance(payload, bytes):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CommandError(f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(f"payload is not UTF-8: {exc}") from exc
    else:
        text = payload
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"payload is not JSON: {exc}") from exc
    except RecursionError:  # "[[[[...": a few KB can nest deeper than the parser goes
        raise CommandError("payload is nested too deeply to be a command") from None
    if not isinstance(data, dict):
        raise CommandError(f"payload must be a JSON object, got {type(data).__name__}")

    raw_id = data.get("id")
    # bool is an int subclass; true/false as an id is almost certainly a mistake.
    id_ok = raw_id is None or (isinstance(raw_id, str | int) and not isinstance(raw_id, bool))
    cmd_id: CommandId = raw_id if id_ok else None
    raw_cmd = data.get("cmd")
    cmd_name = raw_cmd if isinstance(raw_cmd, str) else None

    if not id_ok:
        raise CommandError(
            f"'id' must be a string or an integer, got {type(raw_id).__name__}", cmd=cmd_name
        )
    if "cmd" not in data:
        raise CommandError("missing 'cmd'", id=cmd_id)
    if cmd_name is None:
        raise CommandError(f"'cmd' must be a string, got {type(raw_cmd).__name__}", id=cmd_id)
    extra = sorted(set(data) - _ALLOWED_KEYS)
    if extra:
        raise CommandError(
            f"unexpected key(s) {', '.join(map(repr, extra))}; a command has only 'cmd' and 'id'",
            id=cmd_id,
            cmd=cmd_name,
        )
    if cmd_name not in COMMANDS:
        raise CommandError(
            f"unknown command {cmd_name!r} (known: {', '.join(COMMANDS)})", id=cmd_id, cmd=cmd_name
        )
    return Command(name=cmd_name, id=cmd_id)


def ok_reply(command: Command, result: Any) -> bytes:
    return _encode({"id": command.id, "cmd": command.name, "ok": True, "result": result})


def error_reply(message: str, *, id: CommandId = None, cmd: str | None = None) -> bytes:
    return _encode({"id": id, "cmd": cmd, "ok": False, "error": message})


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode("utf-8")
