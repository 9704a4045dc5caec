"""`smartbin bench latency|memory`: print on-device figures (never a pass/fail test)."""

from __future__ import annotations

import argparse
from pathlib import Path

from smartbin.argtypes import non_negative_int, positive_int

LATENCY_DESCRIPTION = """\
Time the bin's classifier on this machine through the real device code: for each
interpreter thread count, the preprocessing of a camera-sized frame (prepare_image) and the
model inference (Classifier.classify_prepared), as mean, p50, p90 and p99 in milliseconds,
plus the frames per second of preprocessing + inference. The report names the CPU, the
board, the TFLite runtime, whether the Edge TPU was used and the model's version and size.
"""

MEMORY_DESCRIPTION = """\
Resident memory of the bin's classifier, measured in a fresh Python process that imports
only the device code: RSS and peak RSS (VmHWM) after the imports, after loading the bundle
and interpreter, and after N inferences.
"""


def _threads(text: str) -> tuple[int, ...]:
    from smartbin.benchmarks.latency import parse_threads, thread_counts

    try:
        return thread_counts(parse_threads(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _frame(text: str) -> tuple[int, int]:
    from smartbin.benchmarks.latency import parse_frame

    try:
        return parse_frame(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundle",
        nargs="?",
        default="default",
        metavar="BUNDLE",
        help="model bundle folder (or its bundle.json); 'default' = the shipped bundle",
    )
    parser.add_argument(
        "--edgetpu",
        choices=("auto", "off"),
        default="auto",
        help="auto: use the bundle's Edge TPU model when a Coral is present; off: CPU only",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (for logs and scripts)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench` with `latency` and `memory`; heavy imports happen inside each command."""
    bench = sub.add_parser(
        "bench",
        help="on-device benchmarks: classifier latency and memory",
        description="On-device benchmarks. They print figures; they never pass or fail.",
    )
    # parser_class is inherited from `sub`, so usage errors stay one line, exit 2.
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", parser_class=type(bench))
    bench_sub.required = True

    latency = bench_sub.add_parser(
        "latency",
        help="preprocess + inference latency per thread count",
        description=LATENCY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(latency)
    latency.add_argument(
        "--threads",
        type=_threads,
        default=(1, 2, 4),
        metavar="N[,N...]",
        help="interpreter thread counts to measure (default 1,2,4)",
    )
    latency.add_argument("--runs", type=positive_int, default=200, help="timed frames per count")
    latency.add_argument(
        "--warmup", type=non_negative_int, default=20, help="untimed frames first (default 20)"
    )
    latency.add_argument(
        "--image",
        type=Path,
        metavar="PATH",
        help="photo to classify, resized to the frame size (default: a synthetic frame)",
    )
    latency.add_argument(
        "--frame",
        type=_frame,
        default=(640, 480),
        metavar="WxH",
        help="camera frame size that preprocessing starts from (default 640x480)",
    )
    latency.set_defaults(func=_run_latency)

    memory = bench_sub.add_parser(
        "memory",
        help="RSS / peak RSS of the classifier in a fresh process",
        description=MEMORY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(memory)
    memory.add_argument(
        "--runs", type=positive_int, default=50, help="inferences before the last reading"
    )
    memory.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="interpreter threads (default: runtime's)",
    )
    memory.set_defaults(func=_run_memory)


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


def _run_latency(args: argparse.Namespace) -> int:
    from smartbin.benchmarks.latency import LatencyConfig, format_latency, run_latency

    config = LatencyConfig(
        bundle=args.bundle,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        image=args.image,
        frame_size=args.frame,
        edgetpu=args.edgetpu,
    )
    _check_json_target(args.json)
    report = run_latency(config, show_progress=not args.no_progress)
    print(format_latency(report))
    if args.json:
        _write_json(args.json, report)
    return 0


def _run_memory(args: argparse.Namespace) -> int:
    from smartbin.benchmarks.memory import format_memory, run_memory

    _check_json_target(args.json)
    report = run_memory(args.bundle, runs=args.runs, threads=args.threads, edgetpu=args.edgetpu)
    print(format_memory(report))
    if args.json:
        _write_json(args.json, report)
    return 0
