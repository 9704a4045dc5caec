"""An embedded MQTT broker (amqtt, pure Python) for the demo and for development.

Why: the demo must run on a fresh machine where nobody has installed mosquitto (no apt, no
root). amqtt runs inside this process, on an asyncio loop in a background thread.

**Not for production.** It listens without passwords, ACL or TLS, keeps nothing across
restarts and is far slower than mosquitto. A real bin reports to mosquitto (see
``firmware_config/mosquitto/``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import Future
from typing import Any

from smartbin.errors import SmartbinError

log = logging.getLogger(__name__)

#: amqtt logs every packet at INFO/DEBUG; the demo only wants its warnings.
_CHATTY_LOGGERS = ("amqtt", "transitions")


def port_is_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it), for a throw-away broker."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt's configuration: one anonymous TCP listener, no $SYS topics."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


class EmbeddedBroker:
    """amqtt on ``host:port`` in a background thread. ``start()`` returns once it listens."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def start(self, timeout: float = 10.0) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise SmartbinError(
                f"the embedded MQTT broker needs amqtt ({exc}); install smartbin[device] "
                "or use mosquitto"
            ) from None
        if port_is_open(self.host, self.port):
            raise SmartbinError(f"cannot start a broker on {self.host}:{self.port}: port in use")
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="embedded-broker", daemon=True
        )
        self._thread.start()

        async def create_and_start() -> None:
            # Built inside the loop's thread: amqtt binds its futures to the running loop.
            self._broker = Broker(broker_config(self.host, self.port))
            await self._broker.start()  # returns once the listener is bound

        started: Future[None] = asyncio.run_coroutine_threadsafe(create_and_start(), self._loop)
        try:
            started.result(timeout)
        except Exception as exc:  # amqtt raises its own errors (BrokerError, OSError, ...)
            self.stop()
            raise SmartbinError(
                f"the embedded MQTT broker did not start on {self.host}:{self.port}: {exc}"
            ) from None
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", self.host, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread, broker = self._loop, self._thread, self._broker
        self._loop = self._thread = self._broker = None
        if loop is None:
            return
        if broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout)
            except Exception as exc:  # shutting down: report, never raise
                log.warning("embedded MQTT broker: shutdown: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
