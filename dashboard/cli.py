"""``smartbin dashboard``: the fleet dashboard's command line (see :mod:`.service`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from smartbin.argtypes import float_between

DESCRIPTION = """\
Subscribe to every bin's topics on the MQTT broker (PREFIX#, default smartbin/+/#), keep the
history in SQLite (it survives restarts) and serve a page at http://LISTEN/: counts per bin and
for the fleet, the share of each material, recent events, bins online/offline, sorts over time
and a CSV export (/export.csv). JSON API: /api/state, /api/events, /api/series.

The password is read from --password-file (first line) or the SMARTBIN_MQTT_PASSWORD
environment variable; credentials need TLS (--tls or --tls-ca) unless
--allow-insecure-credentials says the link is trusted. There is no login on the page: listen
on 127.0.0.1 (default) or a trusted network only.
"""


def _default_db() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "smartbin" / "dashboard.db"


def _broker(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT or [IPv6]:PORT (the same parser as ``smartbin watch``)."""
    from smartbin.device.watch import parse_broker

    try:
        return parse_broker(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen(text: str) -> tuple[str, int]:
    """HOST:PORT where port 0 means "any free port" (the log line says which)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (port 0..65535), got {text!r}")
    return host.strip("[]"), int(port_text)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``dashboard``."""
    p = sub.add_parser(
        "dashboard",
        help="web page of the fleet: counts, material share, events, bins online/offline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--broker",
        type=_broker,
        default=("127.0.0.1", 1883),
        metavar="HOST[:PORT]",
        help="the MQTT broker (default 127.0.0.1:1883; 8883 is not implied by --tls)",
    )
    p.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="where the page is served (default 127.0.0.1:8080; port 0: any free port)",
    )
    p.add_argument("--db", type=Path, default=None, help=f"history file (default {_default_db()})")
    p.add_argument(
        "--prefix", default="smartbin/+/", help="bins' topic prefix, '+' (or {bin_id}) = bin id"
    )
    p.add_argument("--client-id", default=None, help="MQTT client id (default per host)")
    p.add_argument("--username", default="")
    p.add_argument("--password-file", type=Path, default=None, metavar="FILE")
    p.add_argument("--tls", action="store_true", help="TLS with the system's CA store")
    p.add_argument("--tls-ca", default="", metavar="FILE", help="TLS with this CA certificate")
    p.add_argument(
        "--allow-insecure-credentials",
        action="store_true",
        help="send the username/password without TLS (a broker on a trusted link only)",
    )
    p.add_argument(
        "--stale-after",
        type=float_between(0.0, 1e7),
        default=300.0,
        metavar="S",
        help="show an 'online' bin as 'silent' after S seconds without news (0: never; "
        "default 300)",
    )
    p.add_argument(
        "--keep-days",
        type=float_between(0.0, 1e5),
        default=365.0,
        metavar="D",
        help="forget events older than D days (0: keep all; default 365)",
    )
    p.set_defaults(func=_dashboard)


def _password(args: argparse.Namespace) -> str:
    from smartbin.errors import ConfigError

    if args.password_file is None:
        return os.environ.get("SMARTBIN_MQTT_PASSWORD", "")
    try:
        lines = args.password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--password-file {args.password_file}: cannot read it ({exc})") from None
    if not lines or not lines[0]:
        raise ConfigError(f"--password-file {args.password_file}: the first line is empty")
    return lines[0]


def _dashboard(args: argparse.Namespace) -> int:
    from smartbin.dashboard.service import DashboardOptions, run_dashboard
    from smartbin.device.comms.mqtt import MqttSettings
    from smartbin.errors import ConfigError

    host, port = args.broker
    password = _password(args)
    if password and not args.username:
        raise ConfigError("--password-file / SMARTBIN_MQTT_PASSWORD given without --username")
    settings = MqttSettings(
        host=host,
        port=port,
        username=args.username,
        password=password if args.username else "",
        tls=bool(args.tls or args.tls_ca),
        ca_file=args.tls_ca,
        allow_insecure_credentials=args.allow_insecure_credentials,
        reconnect_min_delay_s=1,
        reconnect_max_delay_s=30,
    )
    options = DashboardOptions(
        mqtt=settings,
        db=args.db or _default_db(),
        listen_host=args.listen[0],
        listen_port=args.listen[1],
        prefix=args.prefix,
        client_id=args.client_id,
        stale_after_s=args.stale_after,
        keep_days=args.keep_days,
    )
    return run_dashboard(options)
