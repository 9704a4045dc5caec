"""Bad input: arbitrary command payloads and config values, broken pictures, junk on MQTT.

The rule under test everywhere: bad input gets a clear error (or is skipped with a reason
in the log) and never a traceback, a dead thread or a crashed bin.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_daemon import DaemonProcess, daemons  # noqa: F401 - fixture

from smartbin.device.comms.commands import COMMANDS, MAX_PAYLOAD_BYTES, CommandError, parse_command
from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
from smartbin.device.comms.outbox import Outbox
from smartbin.device.config import BinConfig, load_config
from smartbin.errors import ConfigError

DATA = Path(__file__).parent / "data" / "trashnet"
BIN = "bin-bad"
PREFIX = f"smartbin/{BIN}/"

# -- commands: arbitrary payloads --------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
COMMAND_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "cmd": st.sampled_from(COMMANDS) | JSON,
        "id": JSON,
        "path": st.just("../../etc/passwd") | st.text(max_size=10),
    },
)
PAYLOADS = (
    st.binary(max_size=300)
    | st.binary(min_size=MAX_PAYLOAD_BYTES - 2, max_size=MAX_PAYLOAD_BYTES + 2)
    | JSON.map(lambda v: json.dumps(v).encode())
    | COMMAND_LIKE.map(lambda v: json.dumps(v).encode())
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


@given(PAYLOADS)
@settings(max_examples=400, deadline=None)
def test_parse_command_gives_a_command_or_a_clear_error(payload: bytes) -> None:
    try:
        command = parse_command(payload)
    except CommandError as exc:
        assert str(exc)  # a message, for the error reply
        assert exc.cmd is None or isinstance(exc.cmd, str)
        assert exc.id is None or (isinstance(exc.id, str | int) and not isinstance(exc.id, bool))
        return
    assert command.name in COMMANDS
    assert set(json.loads(payload)) <= {"cmd", "id"}  # nothing else (no paths) gets through


@pytest.fixture(scope="module")
def offline_publisher(tmp_path_factory: pytest.TempPathFactory) -> MqttPublisher:
    """A real publisher, never connected: replies are built but go nowhere."""
    outbox = Outbox(tmp_path_factory.mktemp("cmd") / "state.db")
    return MqttPublisher(
        MqttSettings(),
        BIN,
        outbox,
        on_reload_model=lambda: "reloaded",
        on_snapshot=lambda: b"\xff\xd8jpeg",
    )


@given(payload=PAYLOADS)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_command_handler_always_replies_with_json(
    offline_publisher: MqttPublisher, payload: bytes
) -> None:
    reply = json.loads(offline_publisher.handle_command(payload))
    assert set(reply) >= {"id", "cmd", "ok"}
    assert isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert isinstance(reply["error"], str) and reply["error"]


# -- config: arbitrary values ------------------------------------------------------------------


def toml_value(value: object) -> str:
    """Python -> TOML text for the values the strategies make."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
SCALAR = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | TEXT
    | st.sampled_from(["0", "default", "opencv", "folder", "picamera2", "3.1.1", "5", "/dev/null"])
)
VALUE = SCALAR | st.lists(SCALAR, max_size=4) | st.dictionaries(TEXT, SCALAR, max_size=3)

TABLE_KEYS = {
    "": ["bin_id", "model", "threads", "edgetpu", "unknown_threshold", "state_dir",
         "watch_model", "watch_interval_s", "drain_timeout_s", "stop_timeout_s",
         "outbox_max_mb", "outbox_memory_events", "typo_key"],
    "source": ["kind", "uri", "loop", "fps", "realtime", "width", "height",
               "reopen_initial_s", "reopen_max_s", "folder_fps", "prot"],
    "presence": ["roi", "grid_width", "diff_threshold", "min_area", "motion_area",
                 "stable_frames", "frames_to_classify", "empty_frames", "learning_rate",
                 "warmup_frames", "absorb_frames"],
    "mqtt": ["host", "port", "protocol", "topic_prefix", "client_id", "keepalive", "username",
             "password", "tls", "ca_file", "cert_file", "key_file", "tls_insecure",
             "allow_insecure_credentials", "discovery", "discovery_prefix",
             "health_interval_s", "snapshot_topic", "reconnect_min_delay_s",
             "reconnect_max_delay_s"],
    "health": ["interval_s"],
    "logging": ["level", "json"],
}  # fmt: skip


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    """A TOML document of known (and a few misspelt) keys with arbitrary values."""
    tables: dict[str, dict[str, object]] = {"": {}}
    if draw(st.booleans()):
        tables[""]["bin_id"] = draw(st.just("bin-01") | TEXT)
    for _ in range(draw(st.integers(1, 6))):
        table = draw(st.sampled_from(sorted(TABLE_KEYS)))
        key = draw(st.sampled_from(TABLE_KEYS[table]))
        tables.setdefault(table, {})[key] = draw(VALUE)
    lines = [f"{k} = {toml_value(v)}" for k, v in tables.pop("").items()]
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def check_loads_or_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bin.toml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path, env={"STATE_DIRECTORY": folder})
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message  # names the file...
            assert "\n" not in message.strip() or "invalid TOML" in message
            return
        assert isinstance(config, BinConfig)
        # What the daemon builds from it must not find a problem the loader let through.
        with Outbox(Path(folder) / "state.db") as outbox:
            MqttPublisher(config.mqtt, config.bin_id, outbox)
    for number in (config.watch_interval_s, config.drain_timeout_s, config.health.interval_s):
        assert math.isfinite(number) and number > 0


@given(config_documents())
@settings(max_examples=400, deadline=None)
def test_config_loader_gives_a_config_or_one_clear_error(text: str) -> None:
    check_loads_or_config_error(text)


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@settings(max_examples=200, deadline=None)
def test_config_loader_on_arbitrary_text(text: str) -> None:
    check_loads_or_config_error(text.replace("\x00", ""))


def test_config_errors_never_show_a_password(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_text('bin_id = "b1"\n[mqtt]\nusername = "u"\npassword = 918273645\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"STATE_DIRECTORY": str(tmp_path)})
    assert "mqtt.password" in str(err.value) and "918273645" not in str(err.value)
