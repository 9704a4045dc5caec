"""Subcommands for trying the bin without a bin: ``demo``, ``watch`` and ``broker``.

Registered into the ``smartbin`` command next to ``run``; each imports its dependencies only
when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from pathlib import Path

from smartbin.argtypes import float_between, int_at_least

DEMO_DESCRIPTION = """\
Run the main job on this machine: start an MQTT broker on HOST:PORT (mosquitto when it is
on PATH, else the embedded Python broker; a broker already listening there is used as it
is), run the bin daemon on the sample clip with the shipped model (firmware_config/demo.toml),
print each event and counts update as it arrives, and end with a summary.

Exit 0 when the clip ended, the daemon finished cleanly and every event it produced was
delivered; 1 otherwise; 2 for a bad config.
"""


def _broker_address(text: str) -> tuple[str, int]:
    from smartbin.device.watch import parse_broker

    try:
        return parse_broker(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    port = int_at_least(1)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {port}")
    return port


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``, ``watch`` and ``broker``."""
    demo = sub.add_parser(
        "demo",
        help="run the bin on the sample clip against a local broker and show what it reports",
        description=DEMO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--config",
        type=Path,
        default=Path("firmware_config/demo.toml"),
        help="the demo's bin config; its [mqtt] host/port and state_dir are replaced "
        "(default: %(default)s)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="broker address (default %(default)s)")
    demo.add_argument("--port", type=_port, default=1883, help="broker port (default 1883)")
    demo.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "embedded", "external"),
        default="auto",
        help="auto (default): a broker listening on HOST:PORT, else mosquitto, else embedded",
    )
    demo.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the daemon's log level (default WARNING: the watcher's lines only)",
    )
    demo.set_defaults(func=_demo)

    watch = sub.add_parser(
        "watch",
        help="print the sort events, counts and status that bins publish over MQTT",
        description="Subscribe to PREFIX{event,counts,status} and print one line per message; "
        "Ctrl-C (or --count/--timeout) ends with a summary. Password: --password or the "
        "SMARTBIN_MQTT_PASSWORD environment variable.",
    )
    watch.add_argument(
        "--broker",
        type=_broker_address,
        default=("127.0.0.1", 1883),
        metavar="HOST[:PORT]",
        help="the MQTT broker (default 127.0.0.1:1883)",
    )
    watch.add_argument("--prefix", default="smartbin/+/", help="topic prefix (default %(default)s)")
    watch.add_argument("--username", default="")
    watch.add_argument("--password", default=None)
    watch.add_argument("--ca-file", default="", help="TLS: the broker's CA certificate")
    watch.add_argument(
        "--count", type=int_at_least(1), default=0, help="stop after N distinct events"
    )
    watch.add_argument(
        "--timeout",
        type=float_between(0.0, 1e6),
        default=0.0,
        help="stop after S seconds (with --count: fail when N events did not arrive by then)",
    )
    watch.set_defaults(func=_watch)

    broker = sub.add_parser(
        "broker",
        help="run the embedded Python MQTT broker (demo and development only)",
        description="An anonymous MQTT broker (amqtt) in the foreground until Ctrl-C. For the "
        "demo and development only: no passwords, ACL or TLS, nothing kept across restarts. "
        "A bin in service reports to mosquitto (firmware_config/mosquitto/).",
    )
    broker.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    broker.add_argument("--port", type=_port, default=1883, help="port (default 1883)")
    broker.set_defaults(func=_broker)


def _demo(args: argparse.Namespace) -> int:
    from smartbin.device.demo import run_demo

    return run_demo(
        args.config, host=args.host, port=args.port, broker=args.broker, log_level=args.log_level
    )


def _watch(args: argparse.Namespace) -> int:
    from smartbin.device.watch import Watcher, watch

    password = args.password
    if password is None:
        password = os.environ.get("SMARTBIN_MQTT_PASSWORD", "")
    host, port = args.broker
    watcher = Watcher(
        host,
        port,
        prefix=args.prefix,
        username=args.username,
        password=password,
        ca_file=args.ca_file,
    )
    return watch(watcher, count=args.count, timeout=args.timeout)


def _broker(args: argparse.Namespace) -> int:
    from smartbin.device.broker import EmbeddedBroker

    with EmbeddedBroker(args.host, args.port):
        print(
            f"embedded MQTT broker on {args.host}:{args.port} (demo only); Ctrl-C stops it",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0
