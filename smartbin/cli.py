"""The ``smartbin`` command: one subcommand per job.

Each part of the repository registers its own subcommands (``register(subparsers)``) and
imports its heavy dependencies only when the subcommand runs, so ``smartbin run`` on a bin
never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from smartbin import __version__
from smartbin.errors import SmartbinError


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2 (argparse's own code for usage errors)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from smartbin.benchmarks import cli as bench_cli
    from smartbin.convert import cli as convert_cli
    from smartbin.dashboard import cli as dashboard_cli
    from smartbin.device import cli as device_cli
    from smartbin.device import demo_cli
    from smartbin.train import cli as train_cli

    parser = _Parser(
        prog="smartbin",
        description="Smart waste bin: train, convert and evaluate the classifier, "
        "and run the bin daemon.",
    )
    parser.add_argument("--version", action="version", version=f"smartbin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (train_cli, convert_cli, device_cli, demo_cli, bench_cli, dashboard_cli):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # TensorFlow logs a page of INFO and WARNING lines on every conversion (SavedModel
        # assets, loading, MLIR passes) that bury the report; errors still show, and -v keeps
        # them all. Set before any subcommand imports TensorFlow.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except SmartbinError as exc:
        print(f"smartbin {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
