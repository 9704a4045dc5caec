"""Watch bins over MQTT: one line per sort event, per counts update and per status change.

Why: a person checking a bin (or the demo) wants to see what it reports as it happens, and
``mosquitto_sub`` is not installed everywhere (it comes with ``mosquitto-clients``). The
:class:`Watcher` also keeps a tally for a closing summary: events per decision, the bins'
own counts, repeats (delivery is at-least-once; a repeat has the same ``id``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from smartbin.errors import SmartbinError

#: A subscription pattern for the bins' topic prefix (the default ``smartbin/{bin_id}/``).
DEFAULT_PREFIX = "smartbin/+/"


@dataclass
class Tally:
    """What the watcher has seen, per bin (the topic prefix, e.g. ``smartbin/demo``)."""

    event_ids: list[str] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)
    repeats: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    statuses: dict[str, list[str]] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return len(self.event_ids)


def _bin_of(topic: str) -> str:
    return topic.rsplit("/", 1)[0]


def format_counts(counts: dict[str, int]) -> str:
    """``cardboard=1 plastic=2 (total 3)``: the non-zero entries, sorted."""
    nonzero = " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
    return f"{nonzero or 'all zero'} (total {sum(counts.values())})"


class Watcher:
    """A paho client on ``prefix`` + ``event`` / ``counts`` / ``status``, printing to ``out``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = DEFAULT_PREFIX,
        out: TextIO | None = None,
        username: str = "",
        password: str = "",
        ca_file: str = "",
    ) -> None:
        import paho.mqtt.client as mqtt

        self.host, self.port = host, port
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.out = out or sys.stdout
        self.tally = Tally()
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"smartbin-watch-{uuid.uuid4().hex[:8]}",
        )
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message

    # -- connection ----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; SmartbinError (one line) when the broker cannot be used."""
        where = f"MQTT broker {self.host}:{self.port}"
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise SmartbinError(f"{where}: cannot connect ({exc})") from None
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            reason = self._refused or f"no subscription within {timeout:g} s"
            raise SmartbinError(f"{where}: {reason}")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            self._refused = f"connection refused ({reason_code})"
            return
        client.subscribe([(self.prefix + leaf, 1) for leaf in ("event", "counts", "status")])

    # -- messages ------------------------------------------------------------------------

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        topic, payload = message.topic, bytes(message.payload)
        leaf, bin_name = topic.rsplit("/", 1)[-1], _bin_of(topic)
        with self._cond:
            if leaf == "event":
                line = self._event(bin_name, payload)
            elif leaf == "counts":
                line = self._counts(bin_name, payload)
            else:
                status = payload.decode(errors="replace")
                self.tally.statuses.setdefault(bin_name, []).append(status)
                line = f"status  {status}" + (" (retained)" if message.retain else "")
            self._print(f"{bin_name}  {line}")
            self._cond.notify_all()

    def _event(self, bin_name: str, payload: bytes) -> str:
        try:
            event = json.loads(payload)
            event_id, decision = str(event["id"]), str(event["decision"])
            confidence = float(event.get("confidence", 0.0))
        except (ValueError, KeyError, TypeError) as exc:
            return f"event   unreadable payload ({exc}): {payload[:80]!r}"
        if event_id in self.tally.event_ids:
            self.tally.repeats += 1
            return f"event   {decision} id={event_id} (repeat: at-least-once delivery)"
        self.tally.event_ids.append(event_id)
        self.tally.decisions[decision] += 1
        extra = ""
        if isinstance(event.get("inference_ms"), int | float):
            extra = f"  inference {event['inference_ms']:.1f} ms"
        return f"event   {decision:<10} {confidence:.2f}  id={event_id}{extra}"

    def _counts(self, bin_name: str, payload: bytes) -> str:
        try:
            counts = {str(k): int(v) for k, v in json.loads(payload).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            return f"counts  unreadable payload ({exc}): {payload[:80]!r}"
        self.tally.counts[bin_name] = counts
        return f"counts  {format_counts(counts)}"

    def _print(self, line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        print(f"{stamp}  {line}", file=self.out, flush=True)

    # -- waiting and the summary ---------------------------------------------------------

    def wait_for_offline(self, bin_name: str, timeout: float) -> bool:
        """True once ``bin_name`` said ``offline`` after ``online`` (its orderly end: the
        bin sends ``offline`` after its outbox is flushed, so its events came before)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                statuses = self.tally.statuses.get(bin_name, [])
                if "online" in statuses and "offline" in statuses[statuses.index("online") :]:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def wait_for_events(self, n: int, timeout: float) -> bool:
        """True once ``n`` distinct events arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.tally.delivered < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def summary(self) -> list[str]:
        """Closing lines: events per decision, repeats, each bin's last counts."""
        with self._cond:
            tally = self.tally
            per_decision = ", ".join(f"{k} {v}" for k, v in sorted(tally.decisions.items()))
            lines = [
                f"events delivered  {tally.delivered} distinct"
                + (f" (+{tally.repeats} repeats)" if tally.repeats else ""),
                f"per decision      {per_decision or '-'}",
            ]
            for bin_name, counts in sorted(tally.counts.items()):
                lines.append(f"counts {bin_name}  {format_counts(counts)}")
            return lines


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ValueError names the problem."""
    host, port = text.strip(), default_port
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        host = inner
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"'{text}' is not HOST:PORT")
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, port_text = host.split(":")
        port = int(port_text)
    if not host:
        raise ValueError(f"'{text}' has no host")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range 1..65535")
    return host, port


def watch(watcher: Watcher, count: int = 0, timeout: float = 0.0) -> int:
    """Print messages until Ctrl-C, ``count`` distinct events, or ``timeout`` seconds; then
    the summary. Exit code 0, or 1 when ``count`` events did not arrive in time."""
    watcher.start()
    reached = True
    try:
        if count:
            reached = watcher.wait_for_events(count, timeout or float("inf"))
        elif timeout:
            time.sleep(timeout)
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
    print("summary", file=watcher.out)
    for line in watcher.summary():
        print(f"  {line}", file=watcher.out)
    if not reached:
        print(f"  fewer than {count} events within {timeout:g} s", file=watcher.out)
    watcher.out.flush()
    return 0 if reached else 1
