"""MQTT transport of the bin: events from the outbox to the broker, in order, at least once.

How delivery works, and why:

* :meth:`MqttPublisher.submit` writes the event to the :class:`~.outbox.Outbox` first (fsync'ed),
  so an event exists on disk before any network I/O; a crash or a dead broker cannot lose it.
* One delivery thread publishes pending events **one at a time** with QoS 1 to
  ``<prefix>event`` and deletes an event from the outbox only after the broker's PUBACK for
  exactly that message (``on_publish`` with its mid). One in flight keeps the order strict
  even across reconnects: paho keeps an unacknowledged QoS 1 message and re-sends it (DUP) on
  the next connection, so the thread simply keeps waiting for the same mid.
* paho's network thread (``loop_start`` + ``connect_async``) reconnects with exponential
  back-off (``reconnect_delay_set``), also when the broker is down at start-up.
* The last will is ``status`` = ``offline`` (retained, QoS 1); on every (re)connect the bin
  publishes ``status`` = ``online``, the counts, the last event, the discovery configs and
  subscribes to ``cmd`` and ``<discovery_prefix>/status``; a clean :meth:`stop` publishes
  ``offline`` itself (a clean disconnect does not fire the will).
* State topics (``counts``, ``last_event``, ``health``, discovery) are retained **QoS 0** on
  purpose: they are re-published on every connect, and a QoS 1 copy queued while the link was
  down would be re-sent by paho *after* the fresh one and overwrite the retained value with a
  stale one.
* Protocol default is MQTT 3.1.1 (every broker speaks it); ``protocol = "5"`` is supported.
  The session is clean: commands sent while the bin was offline are not run later.

Commands (``<prefix>cmd``, see :mod:`.commands`) run on their own thread so that a slow model
reload never stalls the network loop; ``reset_counts`` and ``ping`` are handled here,
``reload_model`` and ``snapshot`` by callables the daemon registers. Only the bin's own
``cmd`` topic is subscribed; commands carry no paths or other arguments.

When the outbox database refuses writes (full, locked), events wait in a bounded memory
spool (:mod:`.spool`) and the delivery thread stores them once it can; database errors
never stop the delivery thread, they are logged once and reported in ``health``.

Credentials are never sent in clear: a username/password without ``tls = true`` is refused
at start unless ``allow_insecure_credentials = true`` says the link is trusted (a broker on
the same host); the password is never logged or shown in a message.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

import smartbin
from smartbin.device.comms.commands import (
    Command,
    CommandError,
    error_reply,
    ok_reply,
    parse_command,
)
from smartbin.device.comms.discovery import discovery_messages
from smartbin.device.comms.outbox import Outbox
from smartbin.device.comms.spool import DEFAULT_CAPACITY, EventSpool
from smartbin.device.comms.topics import Topics, check_topic_part
from smartbin.device.events import SortEvent, utc_now_iso
from smartbin.errors import ConfigError, SmartbinError

log = logging.getLogger(__name__)

PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


class _QuietPahoFilter(logging.Filter):
    """Drop paho's per-retry "Client is not connected" ERROR: while the broker is down it
    repeats on every reconnect attempt; the publisher logs the outage itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_log = logging.getLogger(__name__ + ".paho")
_paho_log.addFilter(_QuietPahoFilter())


@dataclass
class MqttSettings:
    """The ``[mqtt]`` table of the bin's config. Empty strings mean "not set" (TOML has no null).

    ``topic_prefix`` may contain ``{bin_id}``. ``client_id`` defaults to ``smartbin-<bin_id>``.
    With ``tls = true`` and no ``ca_file`` the system CA store is used; ``cert_file`` (+
    ``key_file``) enable client-certificate auth. ``tls_insecure`` skips the host-name check
    (self-signed broker reached by IP), never the certificate chain.
    ``allow_insecure_credentials`` permits a username/password over plain TCP (refused by
    default: anyone on the network path could read them).
    """

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "3.1.1"
    topic_prefix: str = "smartbin/{bin_id}/"
    client_id: str = ""
    keepalive: int = 60
    username: str = ""
    password: str = field(default="", repr=False)  # never in a repr, a log or a message
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    allow_insecure_credentials: bool = False
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    health_interval_s: float = 30.0
    snapshot_topic: str = ""
    reconnect_min_delay_s: int = 1
    reconnect_max_delay_s: int = 60

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key (files are checked to exist)."""
        if not self.host:
            raise ConfigError("mqtt.host: must not be empty")
        if not 1 <= int(self.port) <= 65535:
            raise ConfigError(f"mqtt.port: {self.port} is not a TCP port (1..65535)")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"mqtt.protocol: {self.protocol!r} is not supported (use one of "
                f"{', '.join(map(repr, PROTOCOLS))})"
            )
        if not 5 <= int(self.keepalive) <= 65535:
            raise ConfigError(f"mqtt.keepalive: {self.keepalive} must be 5..65535 seconds")
        if self.password and not self.username:
            raise ConfigError("mqtt.password: set without mqtt.username")
        if self.username and not self.tls and not self.allow_insecure_credentials:
            raise ConfigError(
                "mqtt.username: credentials would be sent over plain TCP (mqtt.tls is false); "
                "set tls = true, or allow_insecure_credentials = true if the link to "
                f"{self.host} is trusted (e.g. a broker on the same host)"
            )
        if not self.health_interval_s > 0:
            raise ConfigError(f"mqtt.health_interval_s: {self.health_interval_s} must be > 0")
        if not 1 <= int(self.reconnect_min_delay_s) <= int(self.reconnect_max_delay_s):
            raise ConfigError(
                "mqtt.reconnect_min_delay_s / reconnect_max_delay_s: need "
                f"1 <= min <= max, got {self.reconnect_min_delay_s} / {self.reconnect_max_delay_s}"
            )
        if not self.discovery_prefix.strip("/"):
            raise ConfigError("mqtt.discovery_prefix: must not be empty")
        check_topic_part(self.discovery_prefix, "mqtt.discovery_prefix")
        for key in ("host", "client_id", "username", "topic_prefix", "snapshot_topic"):
            if any(ord(c) < 32 or ord(c) == 127 for c in getattr(self, key)):
                raise ConfigError(f"mqtt.{key}: contains a control character")
        Topics.for_bin(self.topic_prefix, "bin", self.snapshot_topic)  # wildcards, template
        tls_files = {
            "ca_file": self.ca_file,
            "cert_file": self.cert_file,
            "key_file": self.key_file,
        }
        set_files = [key for key, value in tls_files.items() if value]
        if set_files and not self.tls:
            raise ConfigError(
                f"mqtt.{set_files[0]}: set but mqtt.tls is false (the connection would not be "
                "encrypted); set tls = true or remove it"
            )
        if self.key_file and not self.cert_file:
            raise ConfigError("mqtt.key_file: set without mqtt.cert_file")
        for key in set_files:
            path = Path(tls_files[key]).expanduser()
            if not path.is_file():
                raise ConfigError(f"mqtt.{key}: file not found: {path}")


def disable_nagle(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Send each MQTT packet at once (TCP_NODELAY); paho leaves Nagle's algorithm on.

    With Nagle on, a small packet written while an earlier one is unacknowledged waits for
    the broker's delayed TCP ack: every QoS 0 ``last_event``/``counts`` update held up the
    next event's PUBLISH, and delivery took 10-17 ms per event on a local broker instead of
    about 1.4 ms (``smartbin bench``, "delivery to PUBACK"). A subscriber's PUBACKs are
    held back the same way, so a broker stopped mid-stream finds more of its messages
    unacknowledged and sends them again. Set it as ``client.on_socket_open`` on every
    client; our packets are small and latency matters more than segment count.
    """
    setsockopt = getattr(sock, "setsockopt", None)  # absent on websocket wrappers
    if setsockopt is None:
        return
    try:
        setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not TCP (a Unix socket): nothing to disable
        log.debug("MQTT: TCP_NODELAY not set: %s", exc)


class MqttPublisher:
    """Delivers the outbox to the broker and answers commands; see the module docstring.

    ``model_version_provider`` is called whenever the model version is reported (discovery,
    ``ping``), so a reloaded model shows up without rebuilding the publisher.
    ``on_reload_model() -> str`` and ``on_snapshot() -> bytes | None`` (JPEG) are the daemon's
    handlers; either may raise :class:`SmartbinError`, which becomes an error reply.
    ``health_provider() -> dict``, if given, is published every ``health_interval_s``.
    ``held_capacity`` bounds the events held in memory while the outbox refuses writes.
    """

    _BATCH = 50

    def __init__(
        self,
        settings: MqttSettings,
        bin_id: str,
        outbox: Outbox,
        model_version_provider: Callable[[], str] = lambda: "unknown",
        *,
        on_reload_model: Callable[[], str] | None = None,
        on_snapshot: Callable[[], bytes | None] | None = None,
        health_provider: Callable[[], dict[str, Any]] | None = None,
        held_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        settings.validate()
        self.settings = settings
        self.bin_id = bin_id
        self.outbox = outbox
        self.spool = EventSpool(outbox, held_capacity)
        self.model_version_provider = model_version_provider
        self.on_reload_model = on_reload_model
        self.on_snapshot = on_snapshot
        self.health_provider = health_provider
        self.topics = Topics.for_bin(settings.topic_prefix, bin_id, settings.snapshot_topic)
        self.ha_status_topic = settings.discovery_prefix.rstrip("/") + "/status"

        self._halt = threading.Event()  # stops the delivery and command threads
        self._work = threading.Event()  # set by submit(): the outbox may have something new
        self._cond = threading.Condition()  # guards the fields below
        self._connected = False
        self._subscribed = False  # the broker acknowledged the cmd subscription
        self._subscribe_mid: int | None = None
        self._acked: set[int] = set()  # mids acknowledged while an event is awaited
        self._awaiting = False
        self._last_error: str | None = None
        self._last_event_payload: bytes | None = None
        self._unmarked: list[int] = []  # acknowledged, but the outbox refused the delete
        self._db_error: str | None = None  # last database error of the delivery thread
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._client = self._make_client()

    # -- public API ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    @property
    def ready(self) -> bool:
        """Connected and subscribed to commands (a command sent now will be answered)."""
        with self._cond:
            return self._connected and self._subscribed

    def wait_ready(self, timeout: float) -> bool:
        """Block until :attr:`ready`; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._connected and self._subscribed):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    @property
    def last_error(self) -> str | None:
        """The latest connection problem (refused, lost), for health reports; None if none."""
        with self._cond:
            return self._last_error

    def start(self) -> None:
        """Connect in the background (retrying with back-off) and start delivering."""
        if self._started:
            raise RuntimeError("MqttPublisher.start() called twice")
        self._started = True
        self._client.connect_async(
            self.settings.host, int(self.settings.port), keepalive=int(self.settings.keepalive)
        )
        self._client.loop_start()
        for target, name in ((self._deliver_loop, "deliver"), (self._command_loop, "commands")):
            thread = threading.Thread(target=target, name=f"smartbin-mqtt-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "MQTT: connecting to %s:%s as %s, topics %s*",
            self.settings.host,
            self.settings.port,
            self._client_id,
            self.topics.prefix,
        )

    def submit(self, event: SortEvent) -> int | None:
        """Persist ``event`` (counted) in the outbox, then let the delivery thread send it.

        Returns its outbox seq, or None when the outbox refused the write and the event is
        held in memory until it can be stored (see :mod:`.spool`); never raises for that.
        """
        seq = self.spool.add(event)
        self._work.set()
        return seq

    def drain(self, timeout: float) -> bool:
        """Wait until every pending event was acknowledged; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        while self.spool.pending_count() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                self._cond.wait(min(remaining, 0.2))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Try to flush the outbox within ``timeout``, publish ``offline``, disconnect.

        Whatever could not be delivered stays in the outbox for the next start.
        """
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        if self.connected and not self.drain(max(0.0, deadline - time.monotonic())):
            log.warning(
                "MQTT: %d event(s) not delivered before stop; kept in %s",
                self.spool.pending_count(),
                self.outbox.path,
            )
        self._give_up_held()
        self._halt.set()
        self._work.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self.connected:
            info = self._client.publish(self.topics.status, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: could not publish 'offline': %s", exc)
        self._client.disconnect()
        # Unacknowledged messages would keep paho's loop running after the disconnect; the
        # events among them are still in the outbox, the rest is state re-sent on connect.
        self._client.drop_out_messages()
        self._client.loop_stop()
        self._started = False
        log.info("MQTT: stopped")

    def publish_health(self, health: dict[str, Any]) -> None:
        """Publish a health report (retained) with the outbox figures added."""
        report = {"ts": utc_now_iso(), **health, **self.outbox_health()}
        payload = json.dumps(report, separators=(",", ":"), default=str)
        self._client.publish(self.topics.health, payload, qos=0, retain=True)

    def outbox_health(self) -> dict[str, Any]:
        """Outbox figures for the health report; a database that cannot even be read says so
        in ``outbox_error`` instead of breaking the report."""
        report: dict[str, Any] = {"outbox_pending": self.spool.pending_count()}
        report.update(self.spool.report())
        try:
            report["outbox_corrupt"] = self.outbox.corrupt_count()
        except sqlite3.Error as exc:
            report["outbox_corrupt"] = None
            report["outbox_error"] = report["outbox_error"] or f"{self.outbox.path}: {exc}"
        with self._cond:
            db_error = self._db_error
        if db_error and not report["outbox_error"]:
            report["outbox_error"] = db_error
        return report

    def publish_counts(self) -> None:
        try:
            counts = self.spool.counts()
        except sqlite3.Error as exc:  # the next delivered event publishes them again
            log.debug("MQTT: counts not published: %s", exc)
            return
        payload = json.dumps(counts, separators=(",", ":"), sort_keys=True)
        self._client.publish(self.topics.counts, payload, qos=0, retain=True)

    def publish_discovery(self) -> None:
        """(Re)send the Home Assistant discovery configs, if enabled."""
        if not self.settings.discovery:
            return
        messages = discovery_messages(
            bin_id=self.bin_id,
            topics=self.topics,
            discovery_prefix=self.settings.discovery_prefix,
            sw_version=self._sw_version(),
        )
        for topic, payload in messages:
            self._client.publish(topic, payload, qos=0, retain=True)
        log.debug("MQTT: published %d discovery configs", len(messages))

    # -- paho client -----------------------------------------------------------------------

    @property
    def _client_id(self) -> str:
        return self.settings.client_id or f"smartbin-{self.bin_id}"

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        protocol = PROTOCOLS[s.protocol]
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=protocol,
            clean_session=True if protocol == mqtt.MQTTv311 else None,
        )
        client.enable_logger(_paho_log)
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if s.tls:
            try:
                client.tls_set(
                    ca_certs=str(Path(s.ca_file).expanduser()) if s.ca_file else None,
                    certfile=str(Path(s.cert_file).expanduser()) if s.cert_file else None,
                    keyfile=str(Path(s.key_file).expanduser()) if s.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (ssl.SSLError, OSError) as exc:
                files = ", ".join(
                    f"{k}={v}"
                    for k, v in (
                        ("ca_file", s.ca_file),
                        ("cert_file", s.cert_file),
                        ("key_file", s.key_file),
                    )
                    if v
                )
                raise ConfigError(f"mqtt TLS files ({files or 'system CAs'}): {exc}") from exc
            client.tls_insecure_set(bool(s.tls_insecure))
        client.reconnect_delay_set(int(s.reconnect_min_delay_s), int(s.reconnect_max_delay_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_socket_open = disable_nagle
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            message = (
                f"broker {self.settings.host}:{self.settings.port} refused the connection: "
                f"{reason_code} (check mqtt.username / mqtt.password / the broker's ACL)"
            )
            self._set_error(message)
            return
        log.info("MQTT: connected to %s:%s", self.settings.host, self.settings.port)
        client.publish(self.topics.status, "online", qos=1, retain=True)
        subscriptions = [(self.topics.cmd, 1)]
        if self.settings.discovery:
            subscriptions.append((self.ha_status_topic, 1))
        _, mid = client.subscribe(subscriptions)
        with self._cond:
            self._subscribe_mid = mid
        self.publish_discovery()
        self.publish_counts()
        with self._cond:
            last_event = self._last_event_payload
        if last_event is not None:
            client.publish(self.topics.last_event, last_event, qos=0, retain=True)
        with self._cond:
            self._connected = True
            self._last_error = None
            self._cond.notify_all()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._set_error(
            f"cannot reach the broker at {self.settings.host}:{self.settings.port}; retrying"
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            self._subscribed = False
            self._cond.notify_all()
        if was_connected and not self._halt.is_set():
            self._set_error(f"connection to the broker lost ({reason_code}); reconnecting")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        with self._cond:
            if mid != self._subscribe_mid:
                return
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._set_error(
                f"broker refused the subscription to {self.topics.cmd} ({', '.join(failed)}); "
                "commands will not work (check the broker's ACL)"
            )
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        with self._cond:
            if self._awaiting:
                self._acked.add(mid)
                self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.cmd:
            if message.retain:
                # A retained command would run again on every reconnect.
                log.warning("MQTT: ignoring a retained command on %s", message.topic)
                self._reply(error_reply("retained commands are ignored; publish without retain"))
                return
            self._commands.put(("cmd", message.payload))
        elif message.topic == self.ha_status_topic and message.payload.strip() == b"online":
            self._commands.put(("discovery", b""))

    def _set_error(self, message: str) -> None:
        with self._cond:
            repeated = message == self._last_error
            self._last_error = message
        (log.debug if repeated else log.error)("MQTT: %s", message)

    # -- delivery --------------------------------------------------------------------------

    def _deliver_loop(self) -> None:
        while not self._halt.is_set():
            while not self.connected and not self._halt.is_set():
                self._store_held()  # the database may recover while the broker is away
                with self._cond:
                    if not self._connected and not self._halt.is_set():
                        self._cond.wait(1.0)
            if self._halt.is_set():
                return
            self._work.clear()  # before reading: a submit() from now on sets it again
            stored = self._store_held()
            try:
                self._retry_unmarked()
                unmarked = set(self._unmarked)
                batch = [
                    (seq, e) for seq, e in self.outbox.pending(self._BATCH) if seq not in unmarked
                ]
                self._db_ok()
            except sqlite3.Error as exc:
                self._db_trouble(exc)
                self._halt.wait(1.0)
                continue
            if not batch:
                # Held events or refused deletes: retry soon; otherwise wait for submit().
                self._work.wait(5.0 if stored and not self._unmarked else 1.0)
                continue
            for seq, event in batch:
                if not self._deliver_one(seq, event):
                    break

    def _store_held(self) -> bool:
        """Move events held in memory into the outbox; True when none are left held."""
        return self.spool.held == 0 or self.spool.flush()

    def _retry_unmarked(self) -> None:
        while self._unmarked:
            self.outbox.mark_delivered(self._unmarked[0])
            self._unmarked.pop(0)

    def _db_ok(self) -> None:
        """The delivery thread read and wrote the outbox again: clear a reported error."""
        with self._cond:
            recovered, self._db_error = self._db_error, None
        if recovered:
            log.warning("MQTT: outbox database usable again")

    def _db_trouble(self, exc: BaseException) -> None:
        message = f"{self.outbox.path}: {exc}"
        with self._cond:
            repeated = message == self._db_error
            self._db_error = message
        (log.debug if repeated else log.error)("MQTT: outbox database error: %s", message)

    def _give_up_held(self) -> None:
        """At stop: store what the memory spool still holds, or log it (last record)."""
        if self.spool.held and not self.spool.flush():
            for event in self.spool.held_events():
                log.error(
                    "MQTT: stopping with the outbox unavailable: event %s not stored; payload=%s",
                    event.id,
                    json.dumps(event.to_payload(), separators=(",", ":")),
                )

    def _deliver_one(self, seq: int, event: SortEvent) -> bool:
        """Publish one event and wait for its PUBACK; False when halted or to be retried."""
        payload = json.dumps(event.to_payload(), separators=(",", ":")).encode("utf-8")
        with self._cond:
            # Acks of earlier messages are of no interest; ours cannot arrive before publish().
            # The mid is only known once publish() returns, so record every ack from now on.
            self._acked.clear()
            self._awaiting = True
        try:
            info = self._client.publish(self.topics.event, payload, qos=1, retain=False)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # Not queued by paho (cannot happen with an unbounded queue): retry later.
                log.error(
                    "MQTT: could not queue event %s: %s", event.id, mqtt.error_string(info.rc)
                )
                self._halt.wait(1.0)
                return False
            # NO_CONN is fine: paho keeps the QoS 1 message and sends it once reconnected.
            with self._cond:
                while info.mid not in self._acked:
                    if self._halt.is_set():
                        return False
                    self._cond.wait(0.5)
        finally:
            with self._cond:
                self._awaiting = False
                self._acked.clear()
        # State first, then forget the event: once drain() sees an empty outbox, the retained
        # last_event/counts for it are on their way too.
        with self._cond:
            self._last_event_payload = payload
        self._client.publish(self.topics.last_event, payload, qos=0, retain=True)
        self.publish_counts()
        try:
            self.outbox.mark_delivered(seq)
        except sqlite3.Error as exc:  # delivered: never send it again, delete it later
            self._unmarked.append(seq)
            self._db_trouble(exc)
        with self._cond:
            self._cond.notify_all()  # drain() waiters
        log.debug("MQTT: delivered event %s (%s)", event.id, event.decision)
        return True

    # -- commands and periodic health ------------------------------------------------------

    def _command_loop(self) -> None:
        interval = float(self.settings.health_interval_s)
        next_health = time.monotonic()
        while not self._halt.is_set():
            if self.health_provider is not None and time.monotonic() >= next_health:
                next_health = time.monotonic() + interval
                if self.connected:
                    try:
                        self.publish_health(self.health_provider())
                    except Exception:
                        log.exception("MQTT: health report failed")
            try:
                kind, payload = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                if kind == "discovery":
                    log.info("MQTT: Home Assistant came online; re-sending discovery")
                    self.publish_discovery()
                    self.publish_counts()
                else:
                    self._reply(self.handle_command(payload))
            except Exception:  # this thread also sends the health reports: it must live on
                log.exception("MQTT: handling a %s message failed", kind)

    def handle_command(self, payload: bytes) -> bytes:
        """Run one command payload and return the reply; never raises."""
        try:
            command = parse_command(payload)
        except CommandError as exc:
            log.warning("MQTT: bad command %r: %s", payload[:200], exc)
            return error_reply(str(exc), id=exc.id, cmd=exc.cmd)
        except Exception as exc:  # a parser surprise is still a bad command, not a crash
            log.exception("MQTT: command payload %r could not be parsed", payload[:200])
            return error_reply(f"unreadable command ({type(exc).__name__})")
        log.info("MQTT: command %s (id %r)", command.name, command.id)
        try:
            result = self._run(command)
        except SmartbinError as exc:
            return error_reply(str(exc), id=command.id, cmd=command.name)
        except Exception as exc:  # a handler bug must not kill the command thread
            log.exception("MQTT: command %s failed", command.name)
            return error_reply(f"{type(exc).__name__}: {exc}", id=command.id, cmd=command.name)
        return ok_reply(command, result)

    def _run(self, command: Command) -> Any:
        if command.name == "ping":
            return {
                "pong": True,
                "bin_id": self.bin_id,
                "model_version": self.model_version_provider(),
                "outbox_pending": self.spool.pending_count(),
                "ts": utc_now_iso(),
            }
        if command.name == "reset_counts":
            try:
                self.outbox.reset_counts()
            except sqlite3.Error as exc:
                raise SmartbinError(f"counts not reset, the outbox is unavailable: {exc}") from exc
            self.publish_counts()
            return self.spool.counts()
        if command.name == "reload_model":
            if self.on_reload_model is None:
                raise SmartbinError("reload_model is not supported by this bin (no handler)")
            message = self.on_reload_model()
            self.publish_discovery()  # sw_version carries the model version
            return {"message": message, "model_version": self.model_version_provider()}
        if command.name == "snapshot":
            if self.on_snapshot is None:
                raise SmartbinError("snapshot is not supported by this bin (no camera)")
            jpeg = self.on_snapshot()
            if not jpeg:
                raise SmartbinError("no camera frame available for a snapshot")
            if not isinstance(jpeg, bytes | bytearray):
                raise SmartbinError(f"snapshot handler returned {type(jpeg).__name__}, not bytes")
            self._client.publish(self.topics.snapshot, bytes(jpeg), qos=0, retain=False)
            return {"topic": self.topics.snapshot, "bytes": len(jpeg)}
        raise SmartbinError(f"command {command.name!r} has no handler")  # parse_command guards

    def _reply(self, payload: bytes) -> None:
        self._client.publish(self.topics.cmd_result, payload, qos=1, retain=False)

    def _sw_version(self) -> str:
        try:
            model = self.model_version_provider()
        except Exception as exc:  # discovery must still go out
            model = f"unknown ({exc})"
        return f"{smartbin.__version__} (model {model})"
