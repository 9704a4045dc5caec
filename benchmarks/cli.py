"""``smartbin bench [BUNDLE]``: on-device figures as a table (and JSON), never pass/fail."""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smartbin.argtypes import non_negative_int, positive_int

DESCRIPTION = """\
Measure the bin's model and pipeline on this machine, through the real device code:

  invoke    interpreter.invoke() alone (input set once), per model variant (int8; float32
            when the bundle has one; the Edge TPU model when a Coral answers) x thread count
            x XNNPACK on/off: min, p50, p90, p99, mean, stdev, fps, load time, model size
  pipeline  a video clip through the daemon's classes (decode, presence, preprocess,
            invoke, postprocess, publish to a real MQTT broker through the SQLite outbox):
            each stage's share and pipeline / invoke (target <= 1.10), at the largest
            thread count
  memory    RSS and peak RSS of the classifier in a fresh process

It prints figures and never fails on them. --json OUT writes every figure.
"""

BENCH = "smartbin.benchmarks.bench"


def _parsed(module: str, name: str) -> Callable[[str], Any]:
    """argparse type from a ValueError-raising parser in ``module``, imported only when an
    option is given (every ``smartbin`` command builds this parser): exit 2, one line."""

    def convert(text: str) -> Any:
        parse = getattr(importlib.import_module(module), name)
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench``; the heavy imports happen only when it runs."""
    # parser_class is inherited from `sub`, so usage errors stay one line, exit 2.
    bench = sub.add_parser(
        "bench",
        help="on-device benchmarks: invoke, whole pipeline, memory",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "bundle",
        nargs="?",
        default="default",
        metavar="BUNDLE",
        help="model bundle folder (or its bundle.json); 'default' = the shipped bundle",
    )
    bench.add_argument(
        "--threads",
        type=_parsed(BENCH, "parse_threads"),
        default=None,
        metavar="N[,N...]",
        help="interpreter thread counts (default: 1, 2, 4... up to the usable CPUs, at most "
        "8, plus that count); the pipeline uses the largest",
    )
    bench.add_argument(
        "--runs",
        type=positive_int,
        default=200,
        help="timed invokes per row, and classified frames of the pipeline (default 200)",
    )
    bench.add_argument(
        "--warmup",
        type=non_negative_int,
        default=20,
        help="untimed invokes first, and untimed pipeline items covering as many frames "
        "(default 20)",
    )
    bench.add_argument(
        "--xnnpack",
        type=_parsed(BENCH, "parse_xnnpack"),
        default=(True, False),
        metavar="on,off|on|off",
        help="time invoke with XNNPACK on, off or both (default on,off); the headline row "
        "(XNNPACK on, as the bin runs) is always timed",
    )
    bench.add_argument(
        "--edgetpu",
        choices=("auto", "off"),
        default="auto",
        help="auto: also time the bundle's Edge TPU model when a Coral is present, and let "
        "the pipeline use it as the bin would; off: CPU only",
    )
    bench.add_argument("--no-pipeline", action="store_true", help="skip the pipeline part")
    bench.add_argument("--no-memory", action="store_true", help="skip the memory part")
    bench.add_argument(
        "--clip",
        type=Path,
        metavar="PATH",
        help="video for the pipeline, replayed as often as needed (default: the sample clip "
        "firmware_config/sample/demo.mp4); it must show items arriving on an empty bin",
    )
    bench.add_argument(
        "--broker",
        type=_parsed("smartbin.benchmarks.pipeline", "parse_broker"),
        metavar="HOST[:PORT]",
        help="publish to this running broker (events, and retained status/counts/last_event, "
        "go under smartbin/bench/); default: start mosquitto on a free local port, or the "
        "embedded broker without mosquitto",
    )
    bench.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    bench.add_argument(
        "--no-progress", action="store_true", help="no progress bar (for logs and scripts)"
    )
    bench.set_defaults(func=_run)


def _check_json_target(path: Path | None) -> None:
    """Refuse an unusable --json before minutes of measuring, not after."""
    if path is None:
        return
    from smartbin.errors import SmartbinError

    if path.is_dir():
        raise SmartbinError(f"--json {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SmartbinError(f"--json {path}: {parent} is not a folder")


def _write_json(path: Path, report: dict) -> None:
    import json

    from smartbin.errors import SmartbinError

    try:
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SmartbinError(f"cannot write --json {path}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace) -> int:
    from smartbin.benchmarks.bench import BenchConfig, format_bench, run_bench

    config = BenchConfig(
        bundle=args.bundle,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        xnnpack=args.xnnpack,
        edgetpu=args.edgetpu,
        pipeline=not args.no_pipeline,
        memory=not args.no_memory,
        clip=args.clip,
        broker=args.broker,
    )
    _check_json_target(args.json)
    device_log = logging.getLogger("smartbin.device")
    level = device_log.level
    if not getattr(args, "verbose", False):
        # The device code logs every model load and sort event at INFO: dozens of lines that
        # would bury the progress bar and the table. Warnings still show; -v shows it all.
        device_log.setLevel(logging.WARNING)
    try:
        report = run_bench(config, show_progress=not args.no_progress)
    finally:
        device_log.setLevel(level)
    print(format_bench(report))
    if args.json:
        _write_json(args.json, report)
    return 0
