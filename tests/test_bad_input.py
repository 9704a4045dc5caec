"""Bad input: arbitrary command payloads and config values, broken pictures, junk on MQTT.

The rule under test everywhere: bad input gets a clear error (or is skipped with a reason
in the log) and never a traceback, a dead thread or a crashed bin.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fixtures_broker import Broker, Subscriber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from smartbin.benchmarks.clips import clip_frames, synthetic_bin_background
from smartbin.device.bundle import load_bundle
from smartbin.device.classifier import Classifier
from smartbin.device.comms.commands import COMMANDS, MAX_PAYLOAD_BYTES, CommandError, parse_command
from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
from smartbin.device.comms.outbox import Outbox
from smartbin.device.config import BinConfig, load_config
from smartbin.device.pipeline import SortingPipeline
from smartbin.device.preprocess import load_image_rgb
from smartbin.device.sources.base import SourceSettings
from smartbin.device.sources.folder import FolderSource
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
    | st.integers(1, MAX_PAYLOAD_BYTES // 2).map(lambda n: b'{"cmd": ' + b"[" * n)
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


# -- broken pictures through the whole bin -----------------------------------------------------


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb, a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def write_frames_with_junk(folder: Path) -> int:
    """Two items on a bin floor as PNG frames, with bad files between them; returns 2."""
    folder.mkdir(parents=True)
    items = [load_image_rgb(DATA / "glass" / "glass100.jpg")]
    items.append(load_image_rgb(DATA / "paper" / "paper101.jpg"))
    frames = list(clip_frames(items, synthetic_bin_background(), fps=10))
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"f{i:04d}.png")
    (folder / "f0006a_empty.jpg").write_bytes(b"")
    good = (DATA / "glass" / "glass100.jpg").read_bytes()
    (folder / "f0007a_truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "f0008a_huge.png").write_bytes(bomb_png(30000, 30000))
    (folder / "f0009a_notes.txt").write_text("not a picture")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "f0010a_tiny.png")
    Image.fromarray(np.zeros((20, 2000, 3), np.uint8)).save(folder / "f0011a_strip.png")
    # Handled, not skipped: the same empty-bin view as greyscale and as RGBA.
    Image.fromarray(frames[12]).convert("L").save(folder / "f0012a_grey.png")
    Image.fromarray(frames[13]).convert("RGBA").save(folder / "f0013a_rgba.png")
    return 2


def test_broken_images_pass_through_the_whole_bin_with_reasons(
    tmp_path, broker, subscriber_factory, daemons, tiny_bundle
) -> None:
    shown = write_frames_with_junk(tmp_path / "frames")
    config = tmp_path / "bin.toml"
    config.write_text(
        f'bin_id = "{BIN}"\nmodel = "{tiny_bundle}"\nstate_dir = "state"\n'
        '[source]\nkind = "folder"\nuri = "frames"\nloop = false\nrealtime = false\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
    )
    sub = subscriber_factory(broker, [PREFIX + "event"])
    daemon = daemons(config)
    assert daemon.wait(90) == 0, daemon.log()[-3000:]
    log = daemon.log()
    assert len(sub.on(PREFIX + "event")) == shown, log[-3000:]
    assert re.search(r"skipping image \S+f0006a_empty.jpg: not an image", log)
    assert re.search(r"skipping image \S+f0007a_truncated.jpg: cannot decode", log)
    assert re.search(r"skipping image \S+f0008a_huge.png: too large to decode", log)
    assert "frame skipped: frame is 4x4" in log  # the first bad frame is logged
    assert "Traceback" not in log and "notes.txt" not in log
    late = subscriber_factory(broker, [PREFIX + "health"])  # the retained final report
    health = late.wait_for(PREFIX + "health")[-1].json()
    assert health["bad_frames"] == 2 and health["items"] == shown
    assert health["classify_errors"] == 0


@pytest.fixture(scope="module")
def classifier(tiny_bundle: Path) -> Classifier:
    return Classifier(load_bundle(tiny_bundle))


def test_bad_frames_are_skipped_or_converted_never_fatal(
    classifier: Classifier, caplog: pytest.LogCaptureFixture
) -> None:
    events: list = []
    pipeline = SortingPipeline(classifier, events.append, bin_id=BIN)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    refused = [
        None,
        "a string",
        [[1, 2, 3]],
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((48, 64, 3), np.float32),
        np.zeros((48, 64, 2), np.uint8),
        np.zeros((2, 48, 64, 3), np.uint8),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((10000, 20, 3), np.uint8),
    ]
    converted = [
        frame[:, :, 0],  # greyscale
        np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)]),  # RGBA
        frame.astype(np.uint16) * 257,  # 16-bit
        np.asfortranarray(frame),  # not C-contiguous
        rng.integers(0, 255, (480, 640, 3), dtype=np.uint8),  # another size
    ]
    caplog.set_level(logging.WARNING)
    for bad in refused:
        assert pipeline.process(bad) is None
    assert pipeline.bad_frames == len(refused) and pipeline.frames_processed == 0
    assert "frame skipped" in caplog.text
    for good in converted:
        pipeline.process(good)
    assert pipeline.frames_processed == len(converted) and pipeline.bad_frames == len(refused)
    assert pipeline.classify_errors == 0


def test_sixteen_bit_and_odd_mode_images_from_a_folder_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.full((40, 50), 40000, np.uint16)).save(folder / "a16.png")
    Image.new("P", (50, 40), 3).save(folder / "b_palette.png")
    Image.new("CMYK", (50, 40), (0, 0, 0, 0)).save(folder / "c_cmyk.jpg")
    Image.new("1", (50, 40), 1).save(folder / "d_bilevel.png")
    source = FolderSource(SourceSettings(kind="folder", uri=str(folder), realtime=False))
    frames = [source.read() for _ in range(4)]
    assert source.read() is None and source.skipped == []
    assert all(f.shape == (40, 50, 3) and f.dtype == np.uint8 for f in frames)
    # 16-bit grey is scaled, not clipped: 40000 / 65535 of full scale is 156 in 8 bits.
    assert np.all(frames[0] == 40000 >> 8)


# -- junk on the command topic ------------------------------------------------------------------


def test_junk_commands_are_answered_and_change_nothing(
    tmp_path: Path,
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cmd, result = PREFIX + "cmd", PREFIX + "cmd/result"
    sub = subscriber_factory(broker, [result, PREFIX + "counts"])
    # Junk retained on the command topic before the bin ever connects.
    sub.publish(cmd, b"\xff\xfe\x00\x81 not even text", retain=True)
    outbox = Outbox(tmp_path / "state.db")
    settings = MqttSettings(**broker.settings_kwargs())
    publisher = MqttPublisher(settings, BIN, outbox)
    publisher.submit(make_event())
    caplog.set_level(logging.WARNING)
    publisher.start()
    try:
        assert publisher.wait_ready(5)
        first = sub.wait_for(result, 1)[0].json()
        assert first["ok"] is False and "retained" in first["error"]
        sub.publish(cmd, b"", retain=True)  # clear it (an empty retained message deletes it)
        sub.wait_for(result, 2)  # the empty message itself is not JSON: one more error reply

        junk = [
            b"\xc3\x28\xa0\xa1",  # not UTF-8
            b'{"cmd": "reset_counts", "pad": "' + b"x" * 1_000_000 + b'"}',  # 1 MB
            b"\x00" * 10,
            b"[" * 4000,  # nested deeper than the JSON parser goes (RecursionError)
            b'{"cmd": "reset_counts", "id": {"nested": true}}',
        ]
        for payload in junk:
            sub.publish(cmd, payload)
        replies = sub.wait_for(result, 2 + len(junk), timeout=10)[2:]
        assert all(r.json()["ok"] is False and r.json()["error"] for r in replies)
        errors = [r.json()["error"] for r in replies]
        assert "UTF-8" in errors[0] and "bytes" in errors[1] and "deeply" in errors[3]
        assert max(len(r.payload) for r in replies) < 2000  # never echoes the junk back

        sub.publish(cmd, b'{"cmd": "ping", "id": 1}')  # still listening
        pong = sub.wait_for(result, 3 + len(junk), timeout=10)[-1].json()
        assert pong["ok"] is True and pong["id"] == 1
        assert outbox.counts()["glass"] == 1  # nothing was reset
        assert publisher.connected
        assert len(caplog.text) < 20_000  # the log got a line per command, not the payloads
    finally:
        publisher.stop(2.0)
        outbox.close()


def make_event():  # noqa: ANN201
    from smartbin.device.events import SortEvent

    return SortEvent(
        bin_id=BIN,
        decision="glass",
        confidence=0.9,
        organic_prob=0.1,
        material_probs={"glass": 0.9},
        model_version="m",
        inference_ms=1.0,
    )
