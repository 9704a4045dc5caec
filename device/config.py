"""The bin's configuration: one TOML file, validated at start into one typed model.

Why strict: a bin runs unattended, so a typo (``prot = 1883``) or a wrong type
(``port = "1883"``) must stop it at start with one line naming the key *and* the file,
not be silently ignored until the bin misbehaves in a kitchen. One generic validator
(:func:`build_dataclass`) turns any TOML table into any settings dataclass, so the tables
owned by other modules (``[source]``, ``[presence]``, ``[mqtt]``) are checked the same way
as ours, from their type hints alone.

Paths (the model, the state folder, TLS files, a video file or image folder) are resolved
against the config file's folder, so a config and its clip can travel together.

Example: ``firmware_config/smartbin.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from smartbin.device.comms.mqtt import MqttSettings
from smartbin.device.comms.outbox import STATE_FILE
from smartbin.device.presence import PresenceSettings
from smartbin.device.sources.base import SourceSettings
from smartbin.errors import ConfigError

try:  # Python 3.11+; Raspberry Pi OS bookworm ships 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

T = TypeVar("T")

DEFAULT_STATE_DIR = "/var/lib/smartbin"
#: What bin ids may contain: they become MQTT topic levels and Home Assistant object ids.
BIN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Keys whose values never appear in an error message (a typo must not print a password).
SECRET_KEY = re.compile(r"(password|passwd|secret|token)$", re.IGNORECASE)


@dataclass
class HealthSettings:
    """``[health]``: how often the bin publishes its health report (retained)."""

    interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ConfigError(f"health.interval_s: must be > 0, got {self.interval_s}")


@dataclass
class LoggingSettings:
    """``[logging]``: level, and JSON lines instead of ``key=value`` lines (log shippers)."""

    level: str = "INFO"
    json: bool = False

    def __post_init__(self) -> None:
        self.level = self.level.upper()
        if self.level not in LOG_LEVELS:
            raise ConfigError(
                f"logging.level: '{self.level}' is not one of {', '.join(LOG_LEVELS)}"
            )


@dataclass
class BinConfig:
    """Everything the daemon needs, typed and checked. Build it with :func:`load_config`."""

    bin_id: str
    #: A bundle folder (or its bundle.json), or "default" = the bundle shipped in the package.
    model: str = "default"
    threads: int | None = None
    #: Use the bundle's Edge TPU model when a Coral is present (falls back to CPU otherwise).
    edgetpu: bool = True
    #: None = the threshold written in the bundle.
    unknown_threshold: float | None = None
    #: Outbox database and other state. Absent: $STATE_DIRECTORY (systemd), /var/lib/smartbin
    #: if writable, else $XDG_STATE_HOME/smartbin (~/.local/state/smartbin).
    state_dir: Path = field(default_factory=lambda: Path(DEFAULT_STATE_DIR))
    #: Reload when the bundle's files change (a new model copied in place).
    watch_model: bool = False
    watch_interval_s: float = 3.0
    #: A file/folder source that ends: wait at most this long for the broker to take the outbox.
    drain_timeout_s: float = 60.0
    #: SIGTERM: how long to keep flushing the outbox before going offline anyway.
    stop_timeout_s: float = 10.0
    #: Largest size of the outbox database in MB (None = as large as the disk allows).
    outbox_max_mb: float | None = None
    #: Events held in memory while the outbox cannot be written (full, locked).
    outbox_memory_events: int = 10_000
    source: SourceSettings = field(default_factory=SourceSettings)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    #: The file this came from (not a TOML key).
    config_file: Path = field(default=Path("."), metadata={"toml": False})

    def __post_init__(self) -> None:
        if not BIN_ID_PATTERN.match(self.bin_id):
            raise ConfigError(
                f"bin_id: {self.bin_id!r} must be 1-64 letters, digits, '-' or '_' "
                "(it is used in MQTT topics), starting with a letter or digit"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {self.threads}")
        if self.unknown_threshold is not None and not 0.0 <= self.unknown_threshold <= 1.0:
            raise ConfigError(f"unknown_threshold: must be in [0, 1], got {self.unknown_threshold}")
        for name in ("watch_interval_s", "drain_timeout_s", "stop_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.outbox_max_mb is not None and self.outbox_max_mb <= 0:
            raise ConfigError(f"outbox_max_mb: must be > 0, got {self.outbox_max_mb}")
        if self.outbox_memory_events < 1:
            raise ConfigError(
                f"outbox_memory_events: must be >= 1, got {self.outbox_memory_events}"
            )

    @property
    def outbox_path(self) -> Path:
        """The outbox database (events not yet acknowledged, and the counts)."""
        return self.state_dir / STATE_FILE

    @property
    def outbox_max_bytes(self) -> int | None:
        return None if self.outbox_max_mb is None else int(self.outbox_max_mb * 1024 * 1024)


# -- the generic validator ---------------------------------------------------------------


class _Mismatch(Exception):
    """A value that does not fit a type hint; carries what was expected."""


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return "array"
    if origin is dict or hint is dict:
        return "table"
    if hint is Path:
        return "path (string)"
    if dataclasses.is_dataclass(hint):
        return "table"
    return getattr(hint, "__name__", str(hint))


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _coerce(value: Any, hint: Any, key: str, ctx: _Context) -> Any:
    """``value`` as the type ``hint`` asks for, or :class:`_Mismatch`."""
    if hint is Any or hint is object:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        expected = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, ctx)
            except _Mismatch as exc:
                expected.append(str(exc))
        raise _Mismatch(" or ".join(expected))
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch(_type_name(hint))
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch("nothing")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _Mismatch("table")
        return build_dataclass(hint, value, ctx, section=key)  # type: ignore[arg-type]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("boolean (true/false)")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch("integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # TOML allows inf and nan; no setting means them
                raise _Mismatch("finite number")
            return float(value)
        raise _Mismatch("number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("string")
    if hint is Path:
        if isinstance(value, str) and value and "\0" not in value:
            return ctx.resolve(value)
        raise _Mismatch("path (non-empty string)")
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list):
            raise _Mismatch("array")
        args = typing.get_args(hint)
        item_hint = args[0] if args else Any
        items = [_coerce(v, item_hint, f"{key}[{i}]", ctx) for i, v in enumerate(value)]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Mismatch("table")
        return dict(value)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch(_type_name(hint))
    return value  # a hint we do not understand: let the dataclass judge


@dataclass
class _Context:
    """Where the values come from, for messages and for resolving relative paths."""

    file: Path

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")


_BRACKET_KEY = re.compile(r"^\[([\w.]+)\]\s+(\w+):\s*")


def _reword(message: str) -> str:
    """``[source] kind: ...`` (another module's style) -> ``source.kind: ...``."""
    return _BRACKET_KEY.sub(lambda m: f"{m.group(1)}.{m.group(2)}: ", message, count=1)


def build_dataclass(cls: type[T], table: Any, ctx: _Context, section: str = "") -> T:
    """Build ``cls`` from a TOML table, checking keys and types against its type hints.

    Unknown key, wrong type, missing required key, or a value the dataclass itself refuses
    (its ``__post_init__``) -> :class:`ConfigError` naming the dotted key and the file.
    """
    if not isinstance(table, dict):
        raise ctx.error(section, f"expected a table, got {_toml_type(table)}")
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.metadata.get("toml", True)
    }
    dotted = (lambda k: f"{section}.{k}") if section else (lambda k: k)
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join(fields)
            raise ctx.error(dotted(key), f"unknown key{hint}; known keys: {known}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            no_default = f.default is dataclasses.MISSING
            if no_default and f.default_factory is dataclasses.MISSING:
                raise ctx.error(dotted(name), "missing (required)")
            continue
        value = table[name]
        try:
            kwargs[name] = _coerce(value, hints[name], dotted(name), ctx)
        except _Mismatch as exc:
            shown = "(hidden)" if SECRET_KEY.search(name) else repr(value)
            raise ctx.error(
                dotted(name), f"expected {exc}, got {_toml_type(value)} {shown}"
            ) from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith(str(ctx.file)):
            raise
        raise ctx.error("", _reword(message)) from None
    except (ValueError, TypeError) as exc:
        raise ctx.error(section, str(exc)) from None


# -- loading -----------------------------------------------------------------------------


def _check_source(config: BinConfig, ctx: _Context) -> None:
    """A video file or image folder is resolved against the config and must exist.

    Camera indexes, URLs, /dev nodes and GStreamer pipelines are left alone: a camera may
    appear after boot, and the capture thread retries those with back-off.
    """
    source = config.source
    uri = source.uri
    if source.kind not in ("opencv", "folder") or not isinstance(uri, str):
        return
    if uri.strip().isdigit() or "://" in uri or "!" in uri or uri.startswith("/dev/"):
        return
    path = ctx.resolve(uri)
    if not path.exists():
        what = "image folder" if source.kind == "folder" else "video file"
        raise ctx.error("source.uri", f"no such {what}: {path}")
    source.uri = str(path)


#: [mqtt] keys that name files the bin must read (TLS material, password file).
_MQTT_FILE_KEY = re.compile(
    r"(^|_)(ca|ca_certs|cafile|cert|certfile|certificate|key|keyfile|file)$"
)


def _check_mqtt_files(config: BinConfig, ctx: _Context) -> None:
    mqtt = config.mqtt
    for f in dataclasses.fields(mqtt):  # type: ignore[arg-type]
        value = getattr(mqtt, f.name)
        if not value or not (isinstance(value, Path) or _MQTT_FILE_KEY.search(f.name)):
            continue
        if not isinstance(value, str | Path):
            continue
        path = ctx.resolve(str(value))
        if not path.is_file():
            raise ctx.error(f"mqtt.{f.name}", f"no such file: {path}")
        setattr(mqtt, f.name, type(value)(path) if isinstance(value, Path) else str(path))


def _check_model(config: BinConfig, ctx: _Context) -> None:
    if config.model == "default":
        return
    path = ctx.resolve(config.model)
    if not path.exists():
        raise ctx.error("model", f"no such bundle folder: {path}")
    config.model = str(path)


def default_state_dir(env: typing.Mapping[str, str]) -> Path:
    """Where state goes when the config names no ``state_dir``.

    systemd's StateDirectory= first (several folders are ':'-separated; the first is ours),
    then /var/lib/smartbin when this user may write there, else the user's XDG state folder,
    so that a bin started by hand without root still keeps its outbox somewhere durable.
    """
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    system = Path(DEFAULT_STATE_DIR)
    if os.access(system if system.exists() else system.parent, os.W_OK):
        return system
    xdg = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/state")
    return Path(xdg) / "smartbin"


def load_config(path: str | Path, env: typing.Mapping[str, str] | None = None) -> BinConfig:
    """Read, validate and resolve a config file; every problem is one :class:`ConfigError`."""
    env = os.environ if env is None else env
    file = Path(path).expanduser().absolute()
    if not file.is_file():
        raise ConfigError(f"{file}: no such config file")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    ctx = _Context(file)
    if "state_dir" not in data:
        data["state_dir"] = str(default_state_dir(env))
    config = build_dataclass(BinConfig, data, ctx)
    config.config_file = file
    _check_model(config, ctx)
    _check_source(config, ctx)
    _check_mqtt_files(config, ctx)
    _sync_health_interval(config, data)
    try:
        config.mqtt.validate()
    except ConfigError as exc:
        raise ctx.error("", str(exc)) from None
    return config


def _sync_health_interval(config: BinConfig, data: dict[str, Any]) -> None:
    """``[health] interval_s`` and ``[mqtt] health_interval_s`` are one setting; the
    publisher sends the report. Setting both, differently, is a mistake worth refusing."""
    in_health = "interval_s" in data.get("health", {})
    in_mqtt = "health_interval_s" in data.get("mqtt", {})
    if in_health and in_mqtt and config.health.interval_s != config.mqtt.health_interval_s:
        raise ConfigError(
            f"{config.config_file}: health.interval_s ({config.health.interval_s}) and "
            f"mqtt.health_interval_s ({config.mqtt.health_interval_s}) disagree; set one"
        )
    if in_mqtt and not in_health:
        config.health.interval_s = float(config.mqtt.health_interval_s)
    else:
        config.mqtt.health_interval_s = config.health.interval_s


def apply_log_level(config: BinConfig, level: str | None) -> None:
    """``--log-level`` beats the file; validated the same way."""
    if level is None:
        return
    if level.upper() not in LOG_LEVELS:
        raise ConfigError(f"--log-level: '{level}' is not one of {', '.join(LOG_LEVELS)}")
    config.logging.level = level.upper()
