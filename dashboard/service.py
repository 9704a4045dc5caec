"""``smartbin dashboard`` as a long-running service: store + MQTT ingest + web server.

Why a separate module from the CLI: the wiring (start order, clean stop on SIGTERM/SIGINT,
periodic pruning of old history) is the same whatever parses the arguments, and tests can
drive it in-process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from smartbin.dashboard.ingest import DEFAULT_PREFIX, Ingest
from smartbin.dashboard.store import Store
from smartbin.dashboard.web import DashboardApp, make_server
from smartbin.device.comms.mqtt import MqttSettings

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 3600.0


@dataclass
class DashboardOptions:
    """Everything ``smartbin dashboard`` needs; ``keep_days`` 0 keeps history for ever."""

    mqtt: MqttSettings
    db: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    prefix: str = DEFAULT_PREFIX
    client_id: str | None = None
    stale_after_s: float = 300.0
    keep_days: float = 365.0


def run_dashboard(options: DashboardOptions, stop: threading.Event | None = None) -> int:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives; returns the exit code (0)."""
    stop = stop or threading.Event()
    store = Store(options.db)
    try:
        ingest = Ingest(store, options.mqtt, prefix=options.prefix, client_id=options.client_id)
        app = DashboardApp(store, ingest.status, stale_after_s=options.stale_after_s)
        server = make_server(options.listen_host, options.listen_port, app)
    except BaseException:
        store.close()
        raise
    host, port = server.server_address[:2]
    web = threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    ingest.start()
    web.start()
    # Tests and scripts read this line for the address when --listen asks for port 0.
    log.info("dashboard: serving http://%s:%d/ (history in %s)", host, port, store.path)
    try:
        next_prune = time.monotonic()
        while not stop.wait(1.0):
            if options.keep_days > 0 and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + _PRUNE_EVERY_S
                removed = store.prune(time.time() - options.keep_days * 86400)
                if removed:
                    log.info(
                        "dashboard: forgot %d events older than %g days", removed, options.keep_days
                    )
    finally:
        log.info("dashboard: stopping")
        server.shutdown()
        server.server_close()
        ingest.stop()
        store.close()
    return 0
