"""Who may drive the bin, and what it gives away: TLS with a CA the test makes, passwords
never in clear nor in logs, commands only on the bin's own topic and without paths, the model's
hash checked on the very bytes that are loaded.

Broker-side access control (the example ACL: another bin or a dashboard cannot reset counts)
is tested with the shipped broker configs in test_firmware_config.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_broker import Broker, Subscriber, make_test_pki
from test_daemon import write_config

from smartbin.device.bundle import default_bundle_path, load_bundle
from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
from smartbin.device.comms.outbox import Outbox
from smartbin.device.events import SortEvent
from smartbin.device.reload import ModelManager, pinned_bundle
from smartbin.errors import BundleError, ConfigError

BIN = "bin-01"
PREFIX = f"smartbin/{BIN}/"
PASSWORD = "Tr0ub4dor-and-3-horses"  # noqa: S105 - a test secret, looked for in the logs


def make_event(i: int = 1) -> SortEvent:
    return SortEvent(
        bin_id=BIN,
        decision="metal",
        confidence=0.9,
        organic_prob=0.1,
        material_probs={"metal": 0.9},
        model_version="m",
        inference_ms=1.0,
        id=f"sec{i:03d}",
    )


def smartbin_run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smartbin", "run", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def with_mqtt(config: Path, lines: str, logging_table: str = "") -> None:
    """Add ``lines`` to the [mqtt] table of a config written by test_daemon.write_config."""
    text = config.read_text().replace("[mqtt]\n", f"[mqtt]\n{lines}\n", 1)
    config.write_text(text + logging_table)


# -- TLS and passwords -------------------------------------------------------------------------


def test_tls_with_password_end_to_end_and_no_secret_anywhere(
    tmp_path, broker_factory, subscriber_factory, daemons, clip, tiny_bundle
) -> None:
    clip_path, shown = clip
    broker = broker_factory(users={BIN: PASSWORD, "watcher": "w"}, tls=True)
    sub = subscriber_factory(broker, [PREFIX + "event"], username="watcher", password="w")
    config = write_config(tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle)
    with_mqtt(
        config,
        f'tls = true\nca_file = "{broker.ca_file}"\nusername = "{BIN}"\npassword = "{PASSWORD}"',
        '[logging]\nlevel = "DEBUG"\n',  # the most talkative the bin gets
    )
    check = smartbin_run(config, "--check")
    assert check.returncode == 0, check.stderr
    daemon = daemons(config)
    assert daemon.wait(90) == 0, daemon.log()[-3000:]
    assert len(sub.wait_for(PREFIX + "event", shown, timeout=10)) == shown

    log = daemon.log()
    assert "DEBUG" in log and "MQTT: connected" in log
    for place, text in {"log": log, "--check": check.stdout + check.stderr}.items():
        assert PASSWORD not in text, f"the password is in the {place}"
    for path in (tmp_path / "state").iterdir():  # nor in the state the bin keeps
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_broker_certificate_from_another_ca_is_refused(
    tmp_path: Path,
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    broker = broker_factory(tls=True)
    sub = subscriber_factory(broker, [PREFIX + "event"])
    other_ca = make_test_pki(tmp_path / "other-pki")["ca_file"]
    outbox = Outbox(tmp_path / "impostor.db")
    kwargs = broker.settings_kwargs() | {"ca_file": str(other_ca)}
    publisher = MqttPublisher(MqttSettings(**kwargs), BIN, outbox)
    publisher.submit(make_event(1))
    publisher.start()
    try:
        deadline = time.monotonic() + 4
        while publisher.last_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not publisher.connected and publisher.last_error is not None
        assert len(outbox) == 1  # kept for a broker it can trust
        assert sub.on(PREFIX + "event") == []
    finally:
        publisher.stop(1.0)
        outbox.close()
    # The same bin with the right CA gets through (so the refusal above was the certificate).
    good = Outbox(tmp_path / "good.db")
    trusted = MqttPublisher(MqttSettings(**broker.settings_kwargs()), BIN, good)
    trusted.submit(make_event(2))
    trusted.start()
    try:
        assert sub.wait_for(PREFIX + "event")[0].json()["id"] == "sec002"
    finally:
        trusted.stop(2.0)
        good.close()


def test_credentials_over_plain_tcp_are_refused_unless_allowed(
    tmp_path, broker_factory, clip, tiny_bundle
) -> None:
    clip_path, _ = clip
    broker = broker_factory(users={BIN: PASSWORD})
    config = write_config(tmp_path, port=broker.port, clip=clip_path, model=tiny_bundle)
    with_mqtt(config, f'username = "{BIN}"\npassword = "{PASSWORD}"')
    result = smartbin_run(config)  # the daemon itself, not only --check
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "mqtt.username" in lines[0] and "allow_insecure_credentials" in lines[0]
    assert "plain TCP" in lines[0] and PASSWORD not in result.stderr + result.stdout
    assert "New client connected" not in broker.log_text()  # it never even connected

    with pytest.raises(ConfigError, match="plain TCP"):
        MqttSettings(username="u", password="p").validate()
    assert PASSWORD not in repr(MqttSettings(username="u", password=PASSWORD))

    with_mqtt(config, "allow_insecure_credentials = true")  # e.g. a broker on the same host
    allowed = smartbin_run(config, "--check")
    assert allowed.returncode == 0, allowed.stderr


# -- commands ------------------------------------------------------------------------------------


@pytest.fixture
def running_bin(tmp_path: Path, broker: Broker) -> tuple[MqttPublisher, list[str]]:
    calls: list[str] = []
    outbox = Outbox(tmp_path / "state" / "state.db")

    def reload() -> str:
        calls.append("reload")
        return "reloaded"

    def snapshot() -> bytes:
        calls.append("snapshot")
        return b"\xff\xd8 a jpeg \xff\xd9"

    publisher = MqttPublisher(
        MqttSettings(**broker.settings_kwargs()),
        BIN,
        outbox,
        on_reload_model=reload,
        on_snapshot=snapshot,
    )
    for i in range(3):
        publisher.submit(make_event(i))
    publisher.start()
    assert publisher.wait_ready(5) and publisher.drain(5)
    yield publisher, calls
    publisher.stop(2.0)
    outbox.close()


def bin_replies_of(messages: list) -> list[dict]:
    """Replies the bin sent (the test's own publishes to cmd/result have no 'ok')."""
    replies = [m.json() for m in messages if m.payload.startswith(b"{")]
    return [r for r in replies if "ok" in r]


def bin_replies(sub: Subscriber) -> list[dict]:
    return bin_replies_of(sub.on(PREFIX + "cmd/result"))


def test_commands_are_taken_only_on_the_bins_own_topic(
    broker: Broker, subscriber_factory: Callable[..., Subscriber], running_bin
) -> None:
    publisher, _ = running_bin
    sub = subscriber_factory(broker, [PREFIX + "cmd/result", PREFIX + "counts"])
    reset = json.dumps({"cmd": "reset_counts", "id": "x"})
    for topic in (
        "smartbin/bin-02/cmd",  # another bin's
        "smartbin/bin-01/cmd/extra",
        "smartbin/bin-01/cmd/result",
        "smartbin/bin-01/CMD",
        "smartbin/bin-01/cmd/",
        "smartbin//cmd",
        "bin-01/cmd",
        "homeassistant/status",
    ):
        sub.publish(topic, reset)
    sub.publish(PREFIX + "cmd", json.dumps({"cmd": "ping", "id": "fence"}))
    sub.wait_until(PREFIX + "cmd/result", lambda m: b'"fence"' in m.payload, timeout=10)
    assert [r["id"] for r in bin_replies(sub)] == ["fence"]  # only the ping was heard
    assert sum(publisher.outbox.counts().values()) == 3  # nothing was reset

    sub.publish(PREFIX + "cmd", reset)  # the same command on its own topic works
    sub.wait_until(
        PREFIX + "cmd/result",
        lambda m: any(r["id"] == "x" and r["ok"] for r in bin_replies_of([m])),
        timeout=10,
    )
    assert sum(publisher.outbox.counts().values()) == 0


def files_outside_the_broker(folder: Path) -> set[Path]:
    return {
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).parts[0].startswith("broker")
    }


def test_command_paths_cannot_reach_the_filesystem(
    tmp_path: Path,
    broker: Broker,
    subscriber_factory: Callable[..., Subscriber],
    running_bin,
) -> None:
    publisher, calls = running_bin
    sub = subscriber_factory(broker, [PREFIX + "cmd/result", PREFIX + "snapshot"])
    before = files_outside_the_broker(tmp_path)
    attempts = [
        {"cmd": "snapshot", "path": "../../../../tmp/owned.jpg"},
        {"cmd": "snapshot", "file": "/etc/passwd"},
        {"cmd": "reload_model", "path": "/tmp/evil-bundle"},
        {"cmd": "reload_model", "bundle": "../../evil"},
        {"cmd": "../../../etc/passwd"},
        {"cmd": "snapshot", "id": "../../../etc/passwd"},  # an id is only echoed back
    ]
    for n, attempt in enumerate(attempts, 1):
        sub.publish(PREFIX + "cmd", json.dumps(attempt))
        sub.wait_for(PREFIX + "cmd/result", n, timeout=10)
    replies = bin_replies(sub)
    assert [r["ok"] for r in replies] == [False] * 5 + [True]
    assert all("unexpected key" in r["error"] for r in replies[:4])
    assert "unknown command" in replies[4]["error"]
    assert calls == ["snapshot"]  # only the harmless one ran
    assert replies[5]["result"]["topic"] == PREFIX + "snapshot"  # it goes to MQTT, not a file
    assert sub.wait_for(PREFIX + "snapshot")[0].payload.startswith(b"\xff\xd8")
    new = files_outside_the_broker(tmp_path) - before
    assert all(p.is_relative_to(tmp_path / "state") for p in new), new  # at most SQLite's own
    assert not Path("/tmp/owned.jpg").exists() and not Path("/tmp/evil-bundle").exists()


# -- the model's hash --------------------------------------------------------------------------


def test_the_bundle_hash_is_checked_before_any_model_is_loaded(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    # A perfectly loadable model, just not the one the manifest vouches for.
    shutil.copy(default_bundle_path() / "model.tflite", bundle / "model.tflite")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)
    manager = ModelManager(bundle, 1, False)
    with pytest.raises(BundleError, match="sha256"):
        manager.load_initial()
    assert manager.classifier is None

    # And no window between the check and the load: the bytes loaded are the bytes checked.
    shutil.copy(tiny_bundle / "model.tflite", bundle / "model.tflite")
    verified = load_bundle(bundle)
    shutil.copy(default_bundle_path() / "model.tflite", bundle / "model.tflite")  # swapped now
    with pytest.raises(BundleError, match="sha256"), pinned_bundle(verified):
        pass
