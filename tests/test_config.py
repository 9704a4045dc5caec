"""The bin's TOML config: one typed model, and one clear line for every mistake."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smartbin.device.config import BinConfig, load_config
from smartbin.errors import ConfigError

MINIMAL = """\
bin_id = "bin-01"
[source]
kind = "opencv"        # picamera2 | opencv | folder
uri = "clip.mp4"       # device index, URL, file or folder
loop = false           # when a file/folder source ends: exit 0 after the outbox is drained
[mqtt]
host = "127.0.0.1"
port = 1883
"""


def write(folder: Path, text: str, name: str = "bin.toml", clip: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if clip:
        (folder / "clip.mp4").write_bytes(b"not decoded by the config loader")
    path = folder / name
    path.write_text(text)
    return path


#: An edit that adds lines right after bin_id (so before the first table).
TOP = ('bin_id = "bin-01"', 'bin_id = "b"\n')


def error_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_config_as_in_the_issue(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert isinstance(config, BinConfig)
    assert config.bin_id == "bin-01"
    assert config.model == "default"
    assert config.source.kind == "opencv"
    assert config.source.uri == str(tmp_path / "clip.mp4")  # relative to the config file
    assert config.source.loop is False
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", 1883)
    assert config.state_dir == Path("/var/lib/smartbin")
    assert config.edgetpu is True and config.threads is None and config.unknown_threshold is None
    assert config.config_file == tmp_path / "bin.toml"


def test_every_table_and_relative_paths(tmp_path: Path) -> None:
    bundle = tmp_path / "models" / "v2"
    bundle.mkdir(parents=True)
    (tmp_path / "ca.crt").write_text("x")
    text = (
        MINIMAL.replace("port = 1883", 'port = 8883\ntls = true\nca_file = "ca.crt"')
        + """
[presence]
roi = [0.1, 0, 0.8, 1]
stable_frames = 2
[health]
interval_s = 5
[logging]
level = "debug"
json = true
"""
    )
    text = text.replace(
        'bin_id = "bin-01"',
        'bin_id = "bin-01"\nmodel = "models/v2"\nthreads = 2\nedgetpu = false\n'
        'unknown_threshold = 0.6\nstate_dir = "state"\nwatch_model = true',
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.model == str(bundle)
    assert config.state_dir == tmp_path / "state"
    assert config.threads == 2 and config.edgetpu is False and config.watch_model is True
    assert config.unknown_threshold == pytest.approx(0.6)
    assert config.mqtt.ca_file == str(tmp_path / "ca.crt") and config.mqtt.tls is True
    assert config.presence.roi == [0.1, 0.0, 0.8, 1.0] and config.presence.stable_frames == 2
    assert config.health.interval_s == 5.0 and isinstance(config.health.interval_s, float)
    assert config.mqtt.health_interval_s == 5.0  # the publisher sends the report
    assert config.logging.level == "DEBUG" and config.logging.json is True


def test_state_directory_from_systemd(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={"STATE_DIRECTORY": "/var/lib/smartbin"})
    assert config.state_dir == Path("/var/lib/smartbin")
    explicit = MINIMAL.replace('bin_id = "bin-01"', 'bin_id = "bin-01"\nstate_dir = "/tmp/x"')
    config = load_config(write(tmp_path, explicit), env={"STATE_DIRECTORY": "/var/lib/other"})
    assert config.state_dir == Path("/tmp/x")  # the file wins


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (("port = 1883", "prot = 1883"), "mqtt.prot", "unknown key (did you mean 'port'?)"),
        (("port = 1883", 'port = "1883"'), "mqtt.port", "expected integer, got string"),
        (("port = 1883", "port = 70000"), "mqtt.port", "not a TCP port"),
        (("loop = false", 'loop = "no"'), "source.loop", "expected boolean"),
        (("loop = false", "loop = false\nfsp = 3"), "source.fsp", "unknown key"),
        (('kind = "opencv"', 'kind = "webcam"'), "source.kind", "not one of"),
        (('bin_id = "bin-01"', 'bin_id = "bin/01"'), "bin_id", "MQTT topics"),
        (('bin_id = "bin-01"', 'bin_id = "bin-01"\nthreads = 1.5'), "threads", "expected integer"),
        (('bin_id = "bin-01"', 'bin_id = "b"\nmodle = "x"'), "modle", "did you mean 'model'"),
        (
            ('bin_id = "bin-01"', 'bin_id = "b"\nunknown_threshold = 2'),
            "unknown_threshold",
            "[0, 1]",
        ),
        (
            ('bin_id = "bin-01"', 'bin_id = "b"\n[presence]\nroi = [0.5, 0.5, 0.9, 0.1]'),
            "presence.roi",
            "not inside the frame",
        ),  # fmt: skip
        (
            ('bin_id = "bin-01"', 'bin_id = "b"\n[health]\ninterval_s = 0'),
            "health.interval_s",
            "> 0",
        ),
        (
            ('bin_id = "bin-01"', 'bin_id = "b"\n[logging]\nlevel = "loud"'),
            "logging.level",
            "one of",
        ),
        (('bin_id = "bin-01"', 'bin_id = "b"\nhealth = 3'), "health", "expected table"),
    ],
)
def test_bad_values_name_the_key_and_the_file(
    tmp_path: Path, edit: tuple[str, ...], key: str, words: str
) -> None:
    old, new = edit[0], "".join(edit[1:])
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    message = error_of(path)
    assert str(path) in message
    assert f"{key}:" in message
    assert words in message


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('bin_id = "bin-01"\n', ""))
    message = error_of(path)
    assert str(path) in message and "bin_id: missing (required)" in message


@pytest.mark.parametrize(
    ("edit", "key", "missing"),
    [
        (('bin_id = "bin-01"', 'bin_id = "b"\nmodel = "nope"'), "model", "nope"),
        (('uri = "clip.mp4"', 'uri = "gone.mp4"'), "source.uri", "gone.mp4"),
        (("port = 1883", 'tls = true\nca_file = "ca.pem"'), "mqtt.ca_file", "ca.pem"),
        (('kind = "opencv"', 'kind = "folder"'), "source.uri", "clip.mp4"),
    ],
)
def test_missing_files_are_named(
    tmp_path: Path, edit: tuple[str, str], key: str, missing: str
) -> None:
    path = write(tmp_path, MINIMAL.replace(*edit, 1), clip=edit[1] != 'kind = "folder"')
    message = error_of(path)
    assert str(path) in message and f"{key}:" in message
    assert str(tmp_path / missing) in message


def test_cameras_and_urls_are_not_checked_as_files(tmp_path: Path) -> None:
    for uri in ('"0"', "0", '"rtsp://cam.local/stream"', '"/dev/video3"'):
        text = MINIMAL.replace('uri = "clip.mp4"', f"uri = {uri}")
        config = load_config(write(tmp_path, text), env={})
        assert str(config.source.uri) == uri.strip('"')


def test_missing_config_file_and_bad_toml(tmp_path: Path) -> None:
    assert str(tmp_path / "absent.toml") in error_of(tmp_path / "absent.toml")
    broken = write(tmp_path, 'bin_id = "x\n')
    message = error_of(broken)
    assert str(broken) in message and "invalid TOML" in message


# -- through the command line: exit code 2 and one line ------------------------------------


def smartbin(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smartbin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (("port = 1883", "prot = 1883"), "mqtt.prot: unknown key"),
        (("port = 1883", 'port = "1883"'), "mqtt.port: expected integer"),
        (('uri = "clip.mp4"', 'uri = "gone.mp4"'), "source.uri: no such video file"),
    ],
)
def test_run_exits_2_with_one_line(tmp_path: Path, edit: tuple[str, str], words: str) -> None:
    path = write(tmp_path, MINIMAL.replace(*edit))
    result = smartbin("run", "--config", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smartbin run: error: ")
    assert str(path) in lines[0] and words in lines[0]


def test_run_missing_config_file(tmp_path: Path) -> None:
    result = smartbin("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.toml'}: no such config file" in result.stderr


def test_check_loads_the_bundle(tmp_path: Path, tiny_bundle: Path) -> None:
    text = MINIMAL.replace('bin_id = "bin-01"', f'bin_id = "bin-01"\nmodel = "{tiny_bundle}"')
    result = smartbin("run", "--config", str(write(tmp_path, text)), "--check")
    assert result.returncode == 0, result.stderr
    assert "bin-01" in result.stdout and str(tiny_bundle) in result.stdout


def test_check_refuses_a_broken_bundle(tmp_path: Path, tiny_bundle: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    with open(broken / "model.tflite", "ab") as handle:
        handle.write(b"tampered")
    text = MINIMAL.replace('bin_id = "bin-01"', 'bin_id = "bin-01"\nmodel = "broken"')
    result = smartbin("run", "--config", str(write(tmp_path, text)), "--check")
    assert result.returncode == 2
    assert "sha256" in result.stderr and str(broken / "model.tflite") in result.stderr


def test_help_is_light_and_documents_the_config() -> None:
    result = smartbin("run", "--help")
    assert result.returncode == 0
    assert "--config" in result.stdout and "--check" in result.stdout
    assert "bin_id" in result.stdout


# -- the shipped files ----------------------------------------------------------------------

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware_config"


def test_example_config_loads_and_documents_every_key() -> None:
    import dataclasses

    config = load_config(FIRMWARE / "smartbin.toml", env={})
    assert config.bin_id == "kitchen-01" and config.source.kind == "picamera2"
    text = (FIRMWARE / "smartbin.toml").read_text()
    tables = {
        "": BinConfig,
        "source": type(config.source),
        "presence": type(config.presence),
        "mqtt": type(config.mqtt),
        "health": type(config.health),
        "logging": type(config.logging),
    }
    for table, cls in tables.items():
        if table:
            section = text.split(f"\n[{table}]\n", 1)[1].split("\n[", 1)[0]
        else:
            section = text.split("\n[", 1)[0]
        for f in dataclasses.fields(cls):
            if not f.metadata.get("toml", True) or dataclasses.is_dataclass(f.type):
                continue
            if f.name in tables:
                continue
            pattern = rf"^#? ?{f.name} = "
            assert re.search(pattern, section, re.M), f"[{table}] {f.name} is not documented"


def test_demo_config_points_at_the_sample_clip() -> None:
    config = load_config(FIRMWARE / "demo.toml", env={})
    assert config.model == "default"
    assert Path(str(config.source.uri)) == FIRMWARE / "sample" / "demo.mp4"
    assert config.source.loop is False
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", 1883)


def test_default_state_dir_without_systemd_or_root(tmp_path: Path) -> None:
    from smartbin.device.config import DEFAULT_STATE_DIR, default_state_dir

    assert default_state_dir({"STATE_DIRECTORY": "/a:/b"}) == Path("/a")
    chosen = default_state_dir({"XDG_STATE_HOME": str(tmp_path)})
    if os.access(Path(DEFAULT_STATE_DIR).parent, os.W_OK):  # running as root
        assert chosen == Path(DEFAULT_STATE_DIR)
    else:
        assert chosen == tmp_path / "smartbin"
