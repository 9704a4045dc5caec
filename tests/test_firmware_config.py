"""What goes on the bin (firmware_config/) and the demo, checked for real.

* ``install.sh``: shellcheck-clean; staged into a temporary root (``--root``: files written
  for real, the commands that change the system printed instead) twice, with the same result.
* ``smartbin.service``: the items the issue lists, and ``systemd-analyze verify`` clean.
* The mosquitto examples: started with a real mosquitto; the ACL keeps each bin to its own
  topics, dashboards read-only, anonymous clients out.
* ``smartbin demo``: the whole main job with the embedded Python broker (no mosquitto on
  PATH) and with mosquitto.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fixtures_broker import Broker, Subscriber, free_port

from smartbin.device.comms.mqtt import MqttPublisher, MqttSettings
from smartbin.device.comms.outbox import Outbox
from smartbin.device.events import SortEvent

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware_config"
INSTALL = FIRMWARE / "install.sh"
EXAMPLES = FIRMWARE / "mosquitto"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: apt install {name} (scripts/setup.sh dev does)")
    return path


# -- install.sh ------------------------------------------------------------------------------


def test_shell_scripts_are_shellcheck_clean() -> None:
    scripts = [INSTALL, ROOT / "scripts" / "demo.sh", ROOT / "scripts" / "setup.sh"]
    result = subprocess.run(
        [_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def install(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under ``root`` -> (mode, sha256 of a file's content or '' for a folder)."""
    found = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(root))] = (oct(path.stat().st_mode & 0o7777), digest)
    return found


def test_install_stages_everything_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = install("--root", root, "--coral")
    assert first.returncode == 0, first.stderr
    assert "running:" not in first.stdout  # --root never touches the system itself
    staged = tree(root)
    unit = (root / "etc/systemd/system/smartbin.service").read_text()
    assert unit == (FIRMWARE / "smartbin.service").read_text()  # default prefix and config
    config = root / "etc/smartbin/smartbin.toml"
    assert config.read_bytes() == (FIRMWARE / "smartbin.toml").read_bytes()
    assert staged["etc/smartbin/smartbin.toml"][0] == "0o640"
    assert staged["var/lib/smartbin"][0] == "0o750"
    rule = (root / "etc/udev/rules.d/71-smartbin-coral.rules").read_text()
    for vendor, product in (("1a6e", "089a"), ("18d1", "9302")):
        assert re.search(
            rf'ATTRS{{idVendor}}=="{vendor}", ATTRS{{idProduct}}=="{product}".*GROUP="plugdev"',
            rule,
        ), rule
    apt_list = (root / "etc/apt/sources.list.d/coral-edgetpu.list").read_text()
    assert "signed-by=/usr/share/keyrings/coral-edgetpu-archive-keyring.gpg" in apt_list
    assert "coral-edgetpu-stable main" in apt_list
    said = first.stdout
    for command in (
        "--system-site-packages /opt/smartbin/.venv",
        f"pip install --quiet {ROOT}[device,pi]",
        "apt-get install -y libedgetpu1-std",
        "systemctl daemon-reload",
        "systemctl enable --now smartbin",
    ):
        assert re.search(rf"^install.sh: would run: .*{re.escape(command)}", said, re.M), command
    if subprocess.run(["id", "-u", "smartbin"], capture_output=True).returncode != 0:
        assert "would run: useradd --system" in said
        assert "usermod -aG video smartbin" in said and "usermod -aG plugdev smartbin" in said

    second = install("--root", root, "--coral")
    assert second.returncode == 0, second.stderr
    assert tree(root) == staged
    assert not re.search(r"^install.sh: (wrote|created)", second.stdout, re.M), second.stdout
    assert "daemon-reload" not in second.stdout  # the unit did not change


def test_install_keeps_an_edited_config_and_follows_prefix_and_flags(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert install("--root", root, "--no-enable").returncode == 0
    config = root / "etc/smartbin/smartbin.toml"
    config.write_text('bin_id = "edited"\n')
    other = tmp_path / "other.toml"
    other.write_text('bin_id = "other"\n')

    again = install("--root", root, "--prefix", "/srv/sb", "--config", other, "--no-enable")
    assert again.returncode == 0, again.stderr
    assert config.read_text() == 'bin_id = "edited"\n'  # never overwritten
    assert "kept: /etc/smartbin/smartbin.toml" in again.stdout
    unit = (root / "etc/systemd/system/smartbin.service").read_text()
    assert re.search(
        r"^ExecStart=/srv/sb/\.venv/bin/smartbin run --config /etc/smartbin/smartbin.toml$",
        unit,
        re.M,
    )
    assert "/opt/smartbin" not in unit
    assert "would run: systemctl daemon-reload" in again.stdout
    assert "would run: systemctl enable" not in again.stdout  # --no-enable
    assert not (root / "etc/udev").exists()  # no --coral, no rule


def test_install_dry_run_writes_nothing_and_bad_arguments_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "never"
    dry = install("--dry-run", "--root", root, "--coral")
    assert dry.returncode == 0, dry.stderr
    assert not root.exists()
    assert "would write: /etc/systemd/system/smartbin.service" in dry.stdout
    assert "would write: /etc/udev/rules.d/71-smartbin-coral.rules" in dry.stdout

    assert install("--help").returncode == 0
    for args, message in (
        (["--bogus"], "unknown argument '--bogus'"),
        (["--prefix", "relative/dir", "--dry-run"], "--prefix must be an absolute path"),
        (["--config", tmp_path / "missing.toml", "--dry-run"], "--config: no such file"),
    ):
        bad = install(*args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


# -- smartbin.service --------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_service_unit_has_the_watchdog_restart_user_state_and_hardening() -> None:
    unit = unit_settings((FIRMWARE / "smartbin.service").read_text())
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "User": "smartbin",
        "SupplementaryGroups": "video",
        "StateDirectory": "smartbin",
        "WorkingDirectory": "/var/lib/smartbin",
        "ReadWritePaths": "/var/lib/smartbin",
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "PrivateTmp": "true",
        "ProtectHome": "true",
        "ExecStart": "/opt/smartbin/.venv/bin/smartbin run --config /etc/smartbin/smartbin.toml",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], (key, unit.get(key))
    assert int(unit["WatchdogSec"][0]) > 0 and int(unit["RestartSec"][0]) > 0
    # The camera is a device: nothing may hide /dev from the service.
    assert "PrivateDevices" not in unit and "DevicePolicy" not in unit


def test_service_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    # The only change: ExecStart must name an existing executable here (systemd-analyze checks
    # it); the real one exists on the bin after install.sh.
    text = (FIRMWARE / "smartbin.service").read_text()
    real = "ExecStart=/opt/smartbin/.venv/bin/smartbin "
    assert text.count(real) == 1
    copy = tmp_path / "smartbin.service"
    copy.write_text(text.replace(real, f"ExecStart={sys.executable} -m smartbin "))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


# -- the mosquitto examples and the ACL ------------------------------------------------------


def example_config(name: str) -> Callable[[Broker], str]:
    """A shipped broker example with its port and system paths moved into the test's dir."""

    def rewrite(broker: Broker) -> str:
        acl = broker.workdir / "smartbin.acl"
        shutil.copy(EXAMPLES / "smartbin.acl", acl)
        text = (EXAMPLES / name).read_text()
        text = re.sub(r"^listener \d+$", f"listener {broker.port} 127.0.0.1", text, flags=re.M)
        for old, new in {
            "/etc/mosquitto/certs/": f"{broker.workdir}/pki/",
            "/etc/mosquitto/passwd": f"{broker.workdir}/passwd",
            "/etc/mosquitto/smartbin.acl": str(acl),
            "/var/lib/mosquitto/": f"{broker.workdir}/",
            "log_dest syslog": f"log_dest file {broker.log_file}",
        }.items():
            text = text.replace(old, new)
        live = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in live if "/etc/" in line or "/var/" in line], live
        return text

    return rewrite


def make_event(bin_id: str, event_id: str, decision: str = "glass") -> SortEvent:
    return SortEvent(
        bin_id=bin_id,
        decision=decision,
        confidence=0.9,
        organic_prob=0.05,
        material_probs={"glass": 0.9, "plastic": 0.1},
        model_version="m-1",
        inference_ms=20.0,
        id=event_id,
    )


@pytest.fixture
def bin_factory(tmp_path: Path) -> Iterator[Callable[..., MqttPublisher]]:
    """A started bin publisher (the daemon's real MQTT side) for ``bin_id`` on a broker."""
    publishers: list[MqttPublisher] = []

    def make(broker: Broker, bin_id: str, **settings: Any) -> MqttPublisher:
        outbox = Outbox(tmp_path / f"{bin_id}-{len(publishers)}.db")
        publisher = MqttPublisher(
            MqttSettings(**(broker.settings_kwargs() | settings)), bin_id, outbox, lambda: "m-1"
        )
        publishers.append(publisher)
        publisher.start()
        assert publisher.wait_ready(5), publisher.last_error
        return publisher

    yield make
    for publisher in publishers:
        publisher.stop(timeout=2.0)
        publisher.outbox.close()


def login(name: str, password: str, tls: bool) -> dict[str, Any]:
    extra = {} if tls else {"allow_insecure_credentials": True}  # plain TCP: explicit
    return {"username": name, "password": password, **extra}


@pytest.mark.parametrize(
    ("name", "users", "tls"),
    [
        ("mosquitto-plain.conf", False, False),
        ("mosquitto-password.conf", True, False),
        ("mosquitto-tls.conf", True, True),
    ],
)
def test_shipped_broker_examples_work_with_the_bin_and_home_assistant(
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
    bin_factory: Callable[..., MqttPublisher],
    name: str,
    users: bool,
    tls: bool,
) -> None:
    accounts = {"bin7": "bin-pw", "homeassistant": "ha-pw"} if users else None
    broker = broker_factory(users=accounts, tls=tls, config_text=example_config(name))
    ha_login = {"username": "homeassistant", "password": "ha-pw"} if users else {}
    ha = subscriber_factory(broker, ["smartbin/#", "homeassistant/+/+/+/config"], **ha_login)
    bin7 = bin_factory(broker, "bin7", **(login("bin7", "bin-pw", tls) if users else {}))
    bin7.submit(make_event("bin7", "ev005"))
    assert ha.wait_for("smartbin/bin7/event")[0].json()["id"] == "ev005"
    ha.wait_until("smartbin/bin7/counts", lambda m: sum(m.json().values()) == 1)
    ha.wait_for("homeassistant/sensor/bin7/count_organic/config")  # discovery allowed by ACL
    ha.publish("smartbin/bin7/cmd", b'{"cmd": "ping", "id": "ha"}')  # HA may send commands
    assert ha.wait_for("smartbin/bin7/cmd/result")[0].json()["ok"] is True


def connect_result(broker: Broker, username: str | None = None, password: str = "") -> str:
    """How the broker answers a CONNECT: 'Success' or the refusal reason."""
    answered = threading.Event()
    outcome: list[str] = []
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    if username is not None:
        client.username_pw_set(username, password)
    if broker.tls:
        client.tls_set(ca_certs=str(broker.ca_file))

    def on_connect(client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        outcome.append(str(reason_code))
        answered.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert answered.wait(5), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0]


@pytest.mark.parametrize(
    ("name", "tls"), [("mosquitto-password.conf", False), ("mosquitto-tls.conf", True)]
)
def test_acl_keeps_each_bin_to_its_own_topics_and_dashboards_read_only(
    broker_factory: Callable[..., Broker],
    subscriber_factory: Callable[..., Subscriber],
    bin_factory: Callable[..., MqttPublisher],
    name: str,
    tls: bool,
) -> None:
    accounts = {"bin7": "pw7", "bin8": "pw8", "homeassistant": "ha-pw", "dashboard": "db-pw"}
    broker = broker_factory(users=accounts, tls=tls, config_text=example_config(name))
    assert connect_result(broker) == "Not authorized"  # anonymous
    assert connect_result(broker, "bin7", "wrong") == "Not authorized"
    assert connect_result(broker, "dashboard", "db-pw") == "Success"

    dashboard = subscriber_factory(broker, ["smartbin/#"], username="dashboard", password="db-pw")
    bin7 = bin_factory(broker, "bin7", **login("bin7", "pw7", tls))
    bin8 = bin_factory(broker, "bin8", **login("bin8", "pw8", tls))
    bin7.submit(make_event("bin7", "b7-1"))
    bin8.submit(make_event("bin8", "b8-1"))
    assert dashboard.wait_for("smartbin/bin7/event")[0].json()["id"] == "b7-1"  # own topics
    dashboard.wait_until("smartbin/bin8/counts", lambda m: sum(m.json().values()) == 1)

    # bin7's credentials (say, stolen from bin7) used against bin8's topics: dropped by the
    # broker. A message on bin7's own topic, sent after them by the same client, shows when
    # they would have arrived (one client's messages are delivered in order).
    rogue = subscriber_factory(broker, ["smartbin/bin7/cmd"], username="bin7", password="pw7")
    rogue.publish("smartbin/bin8/event", json.dumps(make_event("bin8", "fake").to_payload()))
    rogue.publish("smartbin/bin8/counts", b'{"glass": 99}', retain=True)
    rogue.publish("smartbin/bin8/cmd", b'{"cmd": "reset_counts", "id": "rogue"}')
    rogue.publish("smartbin/bin7/status", b"marker")
    dashboard.wait_until("smartbin/bin7/status", lambda m: m.payload == b"marker")
    assert [m.json()["id"] for m in dashboard.on("smartbin/bin8/event")] == ["b8-1"]
    bin8_counts = [m.json() for m in dashboard.on("smartbin/bin8/counts")]
    assert sum(bin8_counts[-1].values()) == 1 and all(c["glass"] != 99 for c in bin8_counts)

    # The dashboard reads everything but may publish nothing: its reset_counts never reaches
    # bin7, while Home Assistant's command after it does.
    dashboard.publish("smartbin/bin7/cmd", b'{"cmd": "reset_counts", "id": "dash"}')
    dashboard.publish("smartbin/bin7/event", b'{"id": "dash-fake", "decision": "glass"}')
    ha = subscriber_factory(
        broker, ["smartbin/bin7/cmd/result"], username="homeassistant", password="ha-pw"
    )
    ha.publish("smartbin/bin7/cmd", b'{"cmd": "ping", "id": "ha"}')
    dashboard.wait_until("smartbin/bin7/cmd/result", lambda m: m.json()["id"] == "ha")
    results = [m.json()["id"] for m in dashboard.on("smartbin/bin7/cmd/result")]
    assert "dash" not in results and "rogue" not in results, results
    events = [m.json()["id"] for m in dashboard.on("smartbin/bin7/event")]
    assert events == ["b7-1"], events
    assert sum(dashboard.on("smartbin/bin7/counts")[-1].json().values()) == 1  # not reset
    assert all(m.json()["id"] != "rogue" for m in dashboard.on("smartbin/bin8/cmd/result"))


# -- the demo ----------------------------------------------------------------------------------


def fast_demo_config(tmp_path: Path) -> Path:
    """firmware_config/demo.toml as it is, but the clip replayed as fast as it decodes."""
    text = (FIRMWARE / "demo.toml").read_text()
    clip = FIRMWARE / "sample" / "demo.mp4"
    assert text.count('uri = "sample/demo.mp4"\n') == 1
    text = text.replace('uri = "sample/demo.mp4"\n', f'uri = "{clip}"\nrealtime = false\n')
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
def test_demo_runs_the_main_job_and_every_event_arrives(tmp_path: Path, broker: str) -> None:
    bin_dir = tmp_path / "bin"  # PATH: mosquitto only where this test puts it
    bin_dir.mkdir()
    if broker == "mosquitto":
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        (bin_dir / "mosquitto").symlink_to(mosquitto)
    env = os.environ | {"PATH": str(bin_dir)}
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "smartbin", "demo", "--config", str(fast_demo_config(tmp_path)),
         "--port", str(port)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    expected = "the embedded Python broker" if broker == "embedded" else "mosquitto ("
    assert out.splitlines()[0].startswith(f"broker   {expected}"), out
    events = re.findall(r"smartbin/demo  event   (\S+)\s+[\d.]+  id=(\S+)", out)
    # The sample clip shows six items (firmware_config/sample/README.md): six distinct events.
    assert len(events) == 6 and len({i for _, i in events}) == 6, out
    final_counts = [line for line in out.splitlines() if "smartbin/demo  counts" in line][-1]
    assert final_counts.endswith("(total 6)"), final_counts
    assert "produced 6 (the bin's counts), delivered 6: OK" in out
    assert "status  offline" in out


def test_watch_prints_events_and_a_summary(
    broker: Broker, bin_factory: Callable[..., MqttPublisher]
) -> None:
    bin7 = bin_factory(broker, "bin7")
    bin7.submit(make_event("bin7", "w-1", "metal"))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "smartbin", "watch", "--broker", f"127.0.0.1:{broker.port}",
         "--count", "2", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watcher.stdout is not None
    for line in watcher.stdout:  # the retained status comes once it has subscribed
        if "status  online" in line:
            break
    bin7.submit(make_event("bin7", "w-2", "paper"))
    bin7.submit(make_event("bin7", "w-3", "glass"))
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert "event   paper" in out and "event   glass" in out
    assert "events delivered  2 distinct" in out
    assert "per decision      glass 1, paper 1" in out

    bad = subprocess.run(
        [sys.executable, "-m", "smartbin", "watch", "--broker", "host:notaport"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--broker" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_broker_command_serves_mqtt_until_interrupted() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smartbin", "broker", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "embedded MQTT broker on 127.0.0.1" in proc.stdout.readline()  # listening now
        received: list[bytes] = []
        got = threading.Event()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        client.on_message = lambda c, u, m: (received.append(m.payload), got.set())
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe("smartbin/x/event", qos=1)
        client.publish("smartbin/x/event", b"retained?", qos=1, retain=True).wait_for_publish(5)
        assert got.wait(10) and received == [b"retained?"]
        client.disconnect()
        client.loop_stop()
        # A second broker on the same port is refused with one line, exit 2.
        busy = subprocess.run(
            [sys.executable, "-m", "smartbin", "demo", "--broker", "embedded", "--port",
             str(port), "--config", str(FIRMWARE / "demo.toml")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert busy.returncode == 2 and "in use" in busy.stderr, busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
