"""Subcommands of this part (registered into the `smartbin` command)."""

from __future__ import annotations

import argparse

RUN_DESCRIPTION = """\
Run the bin: read frames from the configured source, notice each item that lands in the
bin, classify it (organic, or the recyclable material) and report it over MQTT.

Every event is stored in an on-disk outbox (state_dir/state.db) before it is sent,
so a broker that is down, a power cut or a crash loses nothing: the bin delivers the
backlog when it can. Under systemd (Type=notify) it reports READY and pings the watchdog.

A file or folder source with loop = false is replayed once: the bin exits 0 when the last
item has been reported and the broker has acknowledged every event (drain_timeout_s).
SIGTERM / Ctrl-C stop cleanly: the current item is finished, the outbox flushed as far as
possible, status goes "offline".

Exit codes: 0 done, 1 runtime failure (the source or the pipeline died), 2 bad config or
model bundle (one line naming the key and the file).
"""

RUN_EPILOG = """\
minimal config:
  bin_id = "bin-01"
  [source]
  kind = "opencv"     # picamera2 | opencv | folder
  uri = "clip.mp4"    # device index, URL, file or folder (relative to the config)
  loop = false
  [mqtt]
  host = "127.0.0.1"
  port = 1883

every key is documented in firmware_config/smartbin.toml.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this part's subcommands; heavy imports happen inside each command's function."""
    run = sub.add_parser(
        "run",
        help="run the bin daemon (camera -> classifier -> MQTT)",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--config",
        "-c",
        required=True,
        metavar="FILE",
        help="the bin's TOML config (e.g. /etc/smartbin/smartbin.toml)",
    )
    run.add_argument(
        "--log-level",
        metavar="LEVEL",
        default=None,
        help="DEBUG, INFO, WARNING, ERROR (default: [logging] level in the config, else INFO)",
    )
    run.add_argument(
        "--check",
        action="store_true",
        help="validate the config and load the model bundle, print a summary, then exit "
        "(0 = ready to run, 2 = what is wrong)",
    )
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from smartbin.device.config import apply_log_level, load_config

    config = load_config(args.config)
    apply_log_level(config, args.log_level)
    if args.check:
        return _check(config)
    from smartbin.device.daemon import Daemon
    from smartbin.device.logsetup import setup_logging

    setup_logging(config.logging.level, config.logging.json)
    return Daemon(config).run()


def _check(config) -> int:  # noqa: ANN001 - BinConfig, imported lazily
    """Load the bundle the way the daemon will; print what would run."""
    from smartbin.device.classifier import Classifier
    from smartbin.device.reload import ModelManager

    manager = ModelManager(config.model, config.threads, config.edgetpu)
    classifier: Classifier = manager.load_initial()
    bundle = classifier.bundle
    threshold = (
        config.unknown_threshold
        if config.unknown_threshold is not None
        else bundle.unknown_threshold
    )
    source = config.source
    print(f"config      {config.config_file}: OK")
    print(f"bin_id      {config.bin_id}")
    print(
        f"model       {bundle.folder} (version {bundle.model_version}, {classifier.runtime}, "
        f"{'Edge TPU' if classifier.on_edgetpu else 'CPU'})"
    )
    print(f"threshold   unknown below {threshold:.2f}")
    print(f"source      {source.kind} {source.uri} (loop={str(source.loop).lower()})")
    print(f"mqtt        {config.mqtt.host}:{config.mqtt.port}")
    print(f"state_dir   {config.state_dir}")
    return 0
