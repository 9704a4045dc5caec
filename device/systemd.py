"""systemd's notify protocol (``sd_notify``) without libsystemd or an extra package.

Why: with ``Type=notify`` systemd knows the bin is *ready* only once the model is loaded and
the capture runs, and with ``WatchdogSec=`` it restarts a daemon whose inference loop hung
(a stuck camera driver, a deadlocked delegate) even though the process is still alive.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). Outside systemd the
variable is unset and every call is a cheap no-op, so the daemon never needs to know.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _socket_address(raw: str) -> str | bytes:
    """``@name`` -> abstract socket (leading NUL byte); anything else is a filesystem path."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Talks to systemd, or does nothing when not started by systemd.

    ``env`` defaults to ``os.environ``; tests pass their own mapping.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _socket_address(raw) if raw else None
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for; a child (e.g. a helper
        # process started by the daemon) that inherited the environment must not answer.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # systemd's advice: ping at half the timeout.
            self.watchdog_interval_s = int(usec) / 2_000_000
        self._last_ping = 0.0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_enabled(self) -> bool:
        return self.enabled and self.watchdog_interval_s is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` lines (keys upper-cased); False when not under systemd or on error.

        A failure is logged, never raised: losing systemd must not stop the bin sorting.
        """
        if self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self._address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, object] = {"READY": 1}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, object] = {"STOPPING": 1}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog when half its timeout has passed since the last ping.

        Call it often from the main loop, and only while the pipeline is alive: a loop that
        stops calling it is exactly what the watchdog exists to catch.
        """
        if not self.watchdog_enabled:
            return False
        now = time.monotonic() if now is None else now
        assert self.watchdog_interval_s is not None
        if now - self._last_ping < self.watchdog_interval_s:
            return False
        self._last_ping = now
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
