"""The ``smartbin data`` subcommand (``data report``); wired in by ``train/cli.py``.

Only argparse here: the report (matplotlib, image decoding) is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smartbin.argtypes import fraction, positive_int


def register_data(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` with its ``report`` action to the ``smartbin`` subcommands."""
    data = sub.add_parser(
        "data",
        help="inspect training data folders",
        description="Inspect class-per-folder image trees before training on them.",
    )
    # The same parser class as `sub` uses (one-line errors, exit 2) for the nested level.
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(data))
    actions.required = True
    report = actions.add_parser(
        "report",
        help="class counts, sample grids, duplicates and unreadable files",
        description=(
            "Walk the data folders (class-named folders anywhere below, e.g. cardboard/, O/, "
            "R/, trash/, dataset-resized/glass/, DATASET/TRAIN/O/), then write per data set a "
            "class-count bar chart and a thumbnail grid per class, duplicates.json, "
            "problems.json and report.json into OUTDIR."
        ),
    )
    report.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="data folder(s)")
    report.add_argument("--out", required=True, type=Path, metavar="OUTDIR", help="output folder")
    report.add_argument(
        "--no-verify",
        action="store_true",
        help="do not decode every image (faster: only hashes; broken files are not found)",
    )
    report.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.2,
        help="validation fraction for the split preview (default 0.2)",
    )
    report.add_argument("--seed", default="smartbin", help="split seed (default 'smartbin')")
    report.add_argument(
        "--grid", type=positive_int, default=4, help="thumbnails per side of a grid (default 4)"
    )
    report.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from smartbin.train.data_report import REPORT_NAME, summary_lines, write_report

    report = write_report(
        args.dirs,
        args.out,
        verify_images=not args.no_verify,
        val_fraction=args.val_fraction,
        seed=args.seed,
        grid=args.grid,
    )
    for line in summary_lines(report):
        print(line)
    print(f"report written to {args.out / REPORT_NAME} ({len(report['figures'])} figures)")
    return 0
