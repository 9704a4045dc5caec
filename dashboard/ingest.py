"""The dashboard's MQTT side: subscribe to every bin's topics and keep what they say.

Why these choices:

* One paho-mqtt 2.x client on ``<prefix>#`` (default ``smartbin/+/#``, the ``+`` level is the
  bin id), QoS 1, started with ``connect_async`` + ``loop_start``: paho reconnects with
  back-off, also when the broker is down when the dashboard starts.
* A **persistent session** (``clean_session = False``, a stable client id): while the
  dashboard is down, a broker with persistence queues the QoS 1 events for it, so a restart
  does not leave a hole in the history. Run two dashboards with two client ids.
* Every payload is checked (:mod:`.payloads`); junk is logged (once a minute per topic) and
  counted, never stored, and no exception escapes into paho's network thread.
* Events are de-duplicated by ``id`` in the store (at-least-once delivery; the retained
  ``last_event`` is the same event again). A retained message replayed at subscription sets
  the bin's state but does not count as "heard from the bin now".
* The dashboard only reads: it publishes nothing (the ``dashboard`` account of
  ``firmware_config/mosquitto/smartbin.acl`` may not write).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from smartbin.dashboard import payloads
from smartbin.dashboard.store import Store
from smartbin.device.comms.mqtt import MqttSettings, disable_nagle
from smartbin.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "smartbin/+/"
#: One log line per topic and minute for junk: a misbehaving publisher cannot flood the log.
_JUNK_LOG_INTERVAL_S = 60.0
#: Topics remembered for that; forgotten all at once beyond this (junk on random topics).
_JUNK_TOPICS_MAX = 1000


def default_client_id() -> str:
    """Stable across restarts (the broker keeps the session), distinct per host."""
    return f"smartbin-dashboard-{socket.gethostname()}"[:64]


def check_prefix(prefix: str) -> list[str]:
    """The prefix's topic levels; it must hold exactly one ``+`` level (the bin id).

    ``{bin_id}`` is read as ``+``, so the bins' own ``mqtt.topic_prefix`` can be pasted."""
    prefix = prefix.replace("{bin_id}", "+")
    if not prefix.endswith("/"):
        prefix += "/"
    levels = prefix.split("/")[:-1]
    if levels.count("+") != 1 or "#" in prefix or any(not level for level in levels):
        raise ConfigError(
            f"--prefix: {prefix!r} must name the topic levels before the bin's topics, with "
            "exactly one '+' level for the bin id (e.g. smartbin/+/)"
        )
    if any("+" in level and level != "+" for level in levels):
        raise ConfigError(f"--prefix: {prefix!r}: '+' must be a whole topic level")
    return levels


class Ingest:
    """Subscribes with ``settings`` (host, port, credentials, TLS) and writes to ``store``."""

    def __init__(
        self,
        store: Store,
        settings: MqttSettings,
        *,
        prefix: str = DEFAULT_PREFIX,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings.validate()
        self.store = store
        self.settings = settings
        self.levels = check_prefix(prefix)
        self.pattern = "/".join(self.levels) + "/#"
        self.clock = clock
        self.client_id = client_id or default_client_id()
        self._lock = threading.Lock()
        self._connected = False
        self._stopping = False
        self._subscribed = threading.Event()
        self._last_error: str | None = None
        self._stats = {"messages": 0, "events": 0, "duplicates": 0, "rejected": 0}
        self._junk_logged: dict[str, float] = {}
        self._mismatch_logged: set[str] = set()
        self._client = self._make_client()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho retries until the broker is there."""
        s = self.settings
        self._client.connect_async(s.host, int(s.port), keepalive=int(s.keepalive))
        self._client.loop_start()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def status(self) -> dict[str, Any]:
        """For the page: is the dashboard connected, and what it made of the messages."""
        with self._lock:
            return {
                "address": f"{self.settings.host}:{self.settings.port}",
                "connected": self._connected,
                "last_error": self._last_error,
                **self._stats,
            }

    # -- messages --------------------------------------------------------------------------

    def split_topic(self, topic: str) -> tuple[str, str] | None:
        """``(bin_id, leaf)`` for a topic under the prefix, e.g. ``("bin-01", "cmd/result")``."""
        parts = topic.split("/")
        n = len(self.levels)
        if len(parts) <= n:
            return None
        bin_id = ""
        for want, got in zip(self.levels, parts[:n], strict=True):
            if want == "+":
                bin_id = got
            elif want != got:
                return None
        return bin_id, "/".join(parts[n:])

    def handle(self, topic: str, payload: bytes, *, retain: bool = False) -> str:
        """Parse and store one message; returns what became of it (for logs and tests):
        ``event``, ``duplicate``, ``known`` (the retained ``last_event`` of an event already
        in the history), ``status``, ``counts``, ``health``, ``cmd/result``, ``cleared``
        (an empty payload: a retained message deleted), ``ignored`` or ``rejected``.
        Never raises."""
        with self._lock:
            self._stats["messages"] += 1
        try:
            outcome = self._handle(topic, payload, retain)
        except payloads.PayloadError as exc:
            self._junk(topic, str(exc))
            return "rejected"
        except Exception:  # a store error (disk full, ...) must not kill paho's thread
            log.exception("dashboard: could not record the message on %s", topic)
            with self._lock:
                self._stats["rejected"] += 1
            return "rejected"
        if outcome in ("event", "duplicate"):
            with self._lock:
                self._stats["events" if outcome == "event" else "duplicates"] += 1
        return outcome

    def _handle(self, topic: str, payload: bytes, retain: bool) -> str:
        where = self.split_topic(topic)
        if where is None:
            return "ignored"
        bin_id, leaf = where
        if not payloads.valid_bin_id(bin_id):
            raise payloads.PayloadError(f"bin id {bin_id[:80]!r} is not usable")
        if not payload:
            # How MQTT deletes a retained message (e.g. a bin taken out of service): the
            # dashboard keeps the last state it knew rather than inventing one.
            log.debug("dashboard: retained message on %s cleared", topic)
            return "cleared"
        now = self.clock()
        live = not retain
        if leaf in ("event", "last_event"):
            event = payloads.parse_event(payload)
            if event.bin_id != bin_id and bin_id not in self._mismatch_logged:
                self._mismatch_logged.add(bin_id)
                log.warning(
                    "dashboard: events on %s say bin_id %r; they are kept under the topic's "
                    "bin %r (check the bin's mqtt.topic_prefix)",
                    topic,
                    event.bin_id,
                    bin_id,
                )
            # last_event is retained state: it may fill a gap, but it is not news by itself.
            self.store.seen(bin_id, now, live=live and leaf == "event")
            new = self.store.add_event(bin_id, event, now)
            if new:
                log.debug("dashboard: %s event %s (%s)", bin_id, event.id, event.decision)
                return "event"
            return "duplicate" if leaf == "event" else "known"
        if leaf == "status":
            self.store.set_status(bin_id, payloads.parse_status(payload), now, live=live)
            return "status"
        if leaf == "counts":
            self.store.set_counts(bin_id, payloads.parse_counts(payload), now, live=live)
            return "counts"
        if leaf == "health":
            self.store.set_health(bin_id, payloads.parse_health(payload), now, live=live)
            return "health"
        if leaf == "cmd/result":
            payloads.parse_cmd_result(payload)
            self.store.seen(bin_id, now, live=live)
            return "cmd/result"
        return "ignored"  # cmd (sent to the bin), snapshot JPEGs, anything newer

    def _junk(self, topic: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._stats["rejected"] += 1
            quiet = now - self._junk_logged.get(topic, -_JUNK_LOG_INTERVAL_S) < _JUNK_LOG_INTERVAL_S
            if not quiet:
                if len(self._junk_logged) >= _JUNK_TOPICS_MAX:
                    self._junk_logged.clear()
                self._junk_logged[topic] = now
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "dashboard: skipped a message on %s: %s", topic, reason)

    # -- paho ------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
        )
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if s.tls:
            ca_file = str(Path(s.ca_file).expanduser()) if s.ca_file else None
            try:
                client.tls_set(
                    ca_certs=ca_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"--tls-ca {s.ca_file or '(system CAs)'}: {exc}") from None
            client.tls_insecure_set(bool(s.tls_insecure))
        client.reconnect_delay_set(int(s.reconnect_min_delay_s), int(s.reconnect_max_delay_s))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = disable_nagle
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        where = f"{self.settings.host}:{self.settings.port}"
        if reason_code.is_failure:
            self._error(f"broker {where} refused the connection: {reason_code}")
            return
        log.info("dashboard: connected to %s, subscribing to %s", where, self.pattern)
        client.subscribe(self.pattern, qos=1)
        with self._lock:
            self._connected = True
            self._last_error = None

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._error(f"broker refused the subscription to {self.pattern} ({', '.join(failed)})")
            return
        # From here on no bin message is missed (tests and operators wait for this line).
        log.info("dashboard: subscribed to %s", self.pattern)
        self._subscribed.set()

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        self._error(f"cannot reach the broker at {self.settings.host}:{self.settings.port}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        with self._lock:
            was = self._connected and not self._stopping
            self._connected = False
        self._subscribed.clear()
        if was:
            self._error(f"connection to the broker lost ({reason_code}); reconnecting")

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        self.handle(message.topic, bytes(message.payload), retain=bool(message.retain))

    def _error(self, message: str) -> None:
        with self._lock:
            repeated = message == self._last_error
            self._last_error = message
        (log.debug if repeated else log.warning)("dashboard: %s", message)
