"""Pytest fixtures: a real mosquitto broker on 127.0.0.1 and a collecting MQTT subscriber.

The project tests against a real broker, never a mock: each test gets its own ``mosquitto``
process on a free port in a tmp dir (config, log and persistence files live there). A
missing ``mosquitto`` binary is an error, not a skip: CI installs it and a silently skipped
transport test would hide exactly the failures these tests exist for.

Fixtures:

* ``broker``: a running anonymous broker (persistence off).
* ``broker_factory(**options)``: more brokers: ``persistence=True`` (sessions and retained
  messages survive :meth:`Broker.stop`/:meth:`Broker.start`), ``users={"name": "pw"}``
  (password file made by ``mosquitto_passwd -b``, anonymous refused), ``tls=True`` (a CA and a
  server certificate for 127.0.0.1 generated with ``openssl``; ``broker.ca_file``),
  ``config_text=lambda broker: ...`` (your own mosquitto.conf, e.g. a shipped example with
  its port and paths rewritten to ``broker.port`` and ``broker.workdir``).
* ``subscriber_factory(broker, topics=("#",), **options)``: a paho client that records every
  message; ``wait_for(topic, n, timeout)`` blocks until ``n`` messages arrived on a topic.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from smartbin.device.comms.mqtt import disable_nagle

HOST = "127.0.0.1"


def _find(binary: str, fallback: str) -> str:
    path = shutil.which(binary) or (fallback if Path(fallback).exists() else None)
    if path is None:
        raise RuntimeError(
            f"{binary} not found on PATH or at {fallback}: the MQTT tests need a real broker "
            "(apt install mosquitto mosquitto-clients)"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [_find("openssl", "/usr/bin/openssl"), *args], cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_test_pki(folder: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (EC keys: fast to make)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=smartbin test CA", cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={HOST}",
        cwd=folder,
    )  # fmt: skip
    (folder / "san.ext").write_text(f"subjectAltName=IP:{HOST},DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
        cwd=folder,
    )  # fmt: skip
    return {
        "ca_file": folder / "ca.crt",
        "cert_file": folder / "server.crt",
        "key_file": folder / "server.key",
    }


class Broker:
    """One mosquitto process; :meth:`stop` and :meth:`start` again reuse the same port."""

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        tls: bool = False,
        config_text: Callable[[Broker], str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.persistence = persistence
        self.users = dict(users or {})
        self.tls = tls
        self.config_text = config_text
        self.ca_file: Path | None = None
        self.log_file = workdir / "mosquitto.log"
        self.conf_file = workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        """Generate the config; ``config_text(self)`` replaces it (the password file ``passwd``
        and the ``pki/`` folder are still made in the work dir for it to point at)."""
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name}"  # no privilege drop as root
        lines = [
            f"listener {self.port} {HOST}",
            f"log_dest file {self.log_file}",
            "log_type all",
            "connection_messages true",
            "set_tcp_nodelay true",  # as the shipped examples and the demo broker
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        if self.users:
            password_file = self.workdir / "passwd"
            password_file.touch(mode=0o600)
            passwd = _find("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
            for name, password in self.users.items():
                subprocess.run(
                    [passwd, "-b", str(password_file), name, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            pki = make_test_pki(self.workdir / "pki")
            self.ca_file = pki["ca_file"]
            lines += [
                f"cafile {pki['ca_file']}",
                f"certfile {pki['cert_file']}",
                f"keyfile {pki['key_file']}",
            ]
        body = "\n".join(lines) if self.config_text is None else self.config_text(self)
        self.conf_file.write_text(f"{user}\n{body}\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        binary = _find("mosquitto", "/usr/sbin/mosquitto")
        self._proc = subprocess.Popen(
            [binary, "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                stderr = (
                    self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                )
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode} on port {self.port}: "
                    f"{stderr.strip()}\n{self.log_text()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {HOST}:{self.port} within {timeout}s")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): clients see the connection drop; persistence is saved."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def settings_kwargs(self) -> dict[str, Any]:
        """Fields for ``MqttSettings`` pointing at this broker (fast reconnects for tests)."""
        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "reconnect_min_delay_s": 1,
            "reconnect_max_delay_s": 2,
        }
        if self.tls:
            kwargs.update(tls=True, ca_file=str(self.ca_file))
        return kwargs


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client recording every message it receives, thread-safely, in arrival order."""

    def __init__(
        self,
        broker: Broker,
        topics: tuple[str, ...] | list[str] = ("#",),
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.broker = broker
        self.topics = list(topics)
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=clean_session,
        )
        if username:
            self.client.username_pw_set(username, password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.ca_file))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_socket_open = disable_nagle  # acks at once, as the dashboard does
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise AssertionError(f"subscriber could not subscribe to {self.topics} in {timeout}s")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if not reason_code.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        with self._cond:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain), message.qos)
            )
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, n: int = 1, timeout: float = 5.0) -> list[Received]:
        """The messages on ``topic`` once at least ``n`` arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self.messages if m.topic == topic]
                if len(got) >= n:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise AssertionError(
                        f"got {len(got)} of {n} message(s) on {topic!r} in {timeout}s; "
                        f"topics seen: {seen}"
                    )
                self._cond.wait(remaining)

    def wait_until(
        self, topic: str, predicate: Callable[[Received], bool], timeout: float = 5.0
    ) -> Received:
        """The first message on ``topic`` satisfying ``predicate``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if m.topic == topic and predicate(m):
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [m.payload[:200] for m in self.messages if m.topic == topic]
                    raise AssertionError(f"no matching message on {topic!r} in {timeout}s: {got}")
                self._cond.wait(remaining)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5.0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    brokers: list[Broker] = []

    def make(**options: Any) -> Broker:
        broker = Broker(tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory()


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    subscribers: list[Subscriber] = []

    def make(broker: Broker, topics: tuple[str, ...] | list[str] = ("#",), **kw: Any) -> Subscriber:
        subscriber = Subscriber(broker, topics, **kw)
        subscribers.append(subscriber)
        return subscriber

    yield make
    for subscriber in subscribers:
        subscriber.close()


def first_occurrences(ids: list[str]) -> list[str]:
    """``ids`` without repeats, in order of first arrival.

    Delivery is at-least-once: a broker that dies between forwarding an event and acknowledging
    it to the bin gets the same event id again on reconnect. Order and completeness are judged
    on first arrivals; the number of repeats is checked separately.
    """
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]
