"""The accuracy/speed trade-off sweep that decides the shipped default model.

For every configuration (MobileNetV2 1.0 at several input sizes, and smaller students without
pretrained weights, distilled from the best model) it runs the project's own commands —
``smartbin train``, ``smartbin convert --float-model`` — unless the bundle already exists, then
reads the float and int8 validation accuracy that ``convert`` measured into ``bundle.json`` and
times the bundle with ``smartbin bench``'s code on this machine. It writes ``sweep.json``, a
Markdown table (``sweep.md``, also spliced into the README between the sweep markers) and a
latency-vs-accuracy plot (``sweep.png``).

The sweep is resumable: a configuration whose bundle is already there is only measured, so an
interrupted sweep picks up where it stopped, and a bundle made elsewhere (e.g. on a GPU box)
can be given with ``--use NAME=BUNDLE``. Training needs ``.[train]``; measuring only
(``--no-train``) needs ``.[device]`` plus matplotlib for the plot.

    python -m smartbin.benchmarks.sweep ../shared/datasets/trashnet ../shared/datasets/garbage \\
        --work runs/sweep --use mnv2-1.0-224=default --readme README.md
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

README_BEGIN = "<!-- sweep-table:begin -->"
README_END = "<!-- sweep-table:end -->"

# The shipped default's recipe: ImageNet weights, layers up to block_5_add frozen.
_PRETRAINED = ("--cut-layer", "block_5_add", "--views", "6", "--head-epochs", "40")
_PRETRAINED_FT = ("--epochs", "30", "--patience", "6")
# Students have no pretrained weights here: trained from scratch (BatchNorm learns), soft
# targets from the teacher bundle mixed with the labels.
_STUDENT = (
    "--weights", "none", "--cut-layer", "input", "--views", "4", "--head-epochs", "0",
    "--epochs", "40", "--lr", "2e-3", "--patience", "8", "--batch-size", "64",
    "--label-smoothing", "0", "--distill-weight", "0.7",
)  # fmt: skip


@dataclass(frozen=True)
class SweepConfig:
    """One row of the table: a name and the ``smartbin train`` options that make it."""

    name: str
    kind: str  # "pretrained" or "student"
    alpha: float
    input_size: int

    def train_args(self, teacher: str) -> list[str]:
        size = ["--input-size", str(self.input_size)]
        if self.kind == "student":
            return [*size, "--alpha", str(self.alpha), *_STUDENT, "--teacher", teacher]
        return [*size, *_PRETRAINED, *_PRETRAINED_FT]


CONFIGS: tuple[SweepConfig, ...] = (
    SweepConfig("mnv2-1.0-96", "pretrained", 1.0, 96),
    SweepConfig("mnv2-1.0-128", "pretrained", 1.0, 128),
    SweepConfig("mnv2-1.0-160", "pretrained", 1.0, 160),
    SweepConfig("mnv2-1.0-224", "pretrained", 1.0, 224),
    SweepConfig("student-a0.35-128", "student", 0.35, 128),
    SweepConfig("student-a0.5-128", "student", 0.5, 128),
)

# Published figures for the same architecture (MobileNetV2 1.0, 224x224, int8 ImageNet
# classifier), quoted for comparison only: NOT measured by this project.
PUBLISHED: tuple[dict[str, str], ...] = (
    {
        "machine": "Coral USB Accelerator (USB 3.0) on a desktop Xeon",
        "latency_ms": "2.6",
        "source": "https://coral.ai/docs/edgetpu/benchmarks/ (Table 1, C++ benchmark)",
    },
    {
        "machine": "Coral Dev Board, Edge TPU",
        "latency_ms": "2.6",
        "source": "https://coral.ai/docs/edgetpu/benchmarks/ (Table 1)",
    },
    {
        "machine": "Quad Cortex-A53 @ 1.5 GHz CPU (Coral Dev Board; a Pi 3-class CPU)",
        "latency_ms": "122",
        "source": "https://coral.ai/docs/edgetpu/benchmarks/ (Table 1)",
    },
    {
        "machine": "Desktop Xeon Gold 6154 CPU",
        "latency_ms": "51",
        "source": "https://coral.ai/docs/edgetpu/benchmarks/ (Table 1)",
    },
    {
        "machine": "Raspberry Pi 4, TensorFlow Lite — MobileNetV2 SSD *detector* at 300x300, "
        "not our classifier: indicative only (no Pi 4 figure for the 224 px classifier found)",
        "latency_ms": "112.6",
        "source": "https://github.com/aallan/benchmarking-ml-on-the-edge",
    },
)

# (column title, metrics path) read from bundle.json for both float and int8.
ACCURACY_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("TrashNet material", ("per_source", "trashnet", "material")),
    ("web material", ("per_source", "garbage", "material")),
    ("organic/recyclable", ("binary",)),
)


def run_command(args: Sequence[str], log_file: Path) -> None:
    """Run one ``smartbin`` subcommand in a child process, its output kept in ``log_file``."""
    cmd = [sys.executable, "-m", "smartbin", *args]
    log.info("running: %s (log: %s)", " ".join(cmd), log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as out:
        out.write("$ smartbin " + " ".join(args) + "\n")
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"`smartbin {args[0]}` failed (exit {result.returncode}); see {log_file}"
        )


def make_bundle(
    config: SweepConfig, data: Sequence[str], work: Path, teacher: str, train: bool
) -> Path | None:
    """The configuration's bundle, trained and converted first when missing and allowed."""
    folder = work / config.name
    bundle = folder / "bundle"
    if (bundle / "bundle.json").is_file():
        return bundle
    if not train:
        log.warning("%s: no bundle in %s and --no-train given; skipped", config.name, bundle)
        return None
    run = folder / "run"
    if not (run / "model.keras").is_file():
        run_command(
            ["train", *data, "--out", str(run), *config.train_args(teacher)], folder / "train.log"
        )
    run_command(
        ["convert", str(run), "--out", str(bundle), "--float-model"], folder / "convert.log"
    )
    return bundle


def _dig(tree: dict[str, Any], path: Sequence[str]) -> float | None:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, dict):
        node = node.get("accuracy")
    return float(node) if isinstance(node, int | float) else None


def accuracy_of(manifest: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """float and int8 accuracy per column, as ``convert`` measured them on the validation split."""
    metrics = manifest.get("metrics", {})
    return {
        variant: {title: _dig(metrics.get(variant, {}), path) for title, path in ACCURACY_COLUMNS}
        for variant in ("float", "int8")
    }


def measure(bundle: Path, threads: int, runs: int) -> dict[str, Any]:
    """Bare-invoke latency (int8, and float when the bundle has it) and peak RSS."""
    from smartbin.benchmarks.bench import BenchConfig, run_bench

    report = run_bench(
        BenchConfig(bundle=bundle, threads=(threads,), runs=runs, xnnpack=(True,), pipeline=False),
        show_progress=False,
    )
    return report


def _variant_p50(report: dict[str, Any], model: str) -> float | None:
    for row in report.get("invoke_table", []):
        if row["model"] == model and row["xnnpack"] and row["available"]:
            return float(row["p50_ms"])
    return None


def _shown_path(path: Path) -> str:
    """Relative to the working directory where possible: the JSON is committed."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def row_for(config: SweepConfig, bundle: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Everything the table and the plot show about one configuration."""
    manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    model = manifest["model"]
    memory = report.get("memory") or {}
    return {
        "name": config.name,
        "kind": config.kind,
        "alpha": config.alpha,
        "input_size": config.input_size,
        "bundle": _shown_path(bundle),
        "model_version": manifest["model_version"],
        "train_command": manifest.get("training", {}).get("command"),
        "int8_size_mb": model["size_bytes"] / 1e6,
        "float_size_mb": model["float_size_bytes"] / 1e6 if "float_size_bytes" in model else None,
        "accuracy": accuracy_of(manifest),
        "validation_n": manifest.get("metrics", {}).get("n"),
        "int8_p50_ms": _variant_p50(report, "int8"),
        "float_p50_ms": _variant_p50(report, "float32"),
        "peak_rss_mib": memory.get("peak_rss_mib"),
        "rss_mib": memory.get("rss_mib"),
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _peak_range(rows: Sequence[dict[str, Any]]) -> str:
    peaks = [r["peak_rss_mib"] for r in rows if r.get("peak_rss_mib") is not None]
    if not peaks:
        return "–"
    low, high = min(peaks), max(peaks)
    return f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}–{high:.0f}"


def format_markdown(rows: Sequence[dict[str, Any]], machine: str, command: str) -> str:
    """The README table: accuracy float → int8 per column, then latency, size and memory."""
    titles = [title for title, _ in ACCURACY_COLUMNS]
    head = ["model", "input", *[f"{t} % (float → int8)" for t in titles]]
    head += ["int8 p50 ms", "float p50 ms", "int8 MB", "RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        acc = row["accuracy"]
        cells = [
            f"{row['name']}" + (" (distilled)" if row["kind"] == "student" else ""),
            f"{row['input_size']}",
            *[f"{_pct(acc['float'][t])} → {_pct(acc['int8'][t])}" for t in titles],
            _num(row["int8_p50_ms"]),
            _num(row["float_p50_ms"]),
            _num(row["int8_size_mb"], 2),
            _num(row["rss_mib"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Measured on {machine}; latency = bare `invoke()` p50, one thread, XNNPACK on; RSS = "
        "the classifier's process after the inferences (peak during imports: "
        f"{_peak_range(rows)} MiB). Accuracy: the validation split (same for every row) that "
        f"`smartbin convert` measured into each bundle.json. Command: `{command}`",
        "",
        "Published figures for MobileNetV2 1.0 at 224 px (ImageNet, int8) — **published, not "
        "measured by us**:",
        "",
        "| machine | latency ms | source |",
        "|---|---|---|",
        *[f"| {p['machine']} | {p['latency_ms']} | {p['source']} |" for p in PUBLISHED],
    ]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], out: Path) -> Path | None:
    """Latency vs int8 accuracy, one point per model and accuracy column."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: no plot (pip install 'smartbin[train]')")
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for (title, _), marker in zip(ACCURACY_COLUMNS[:2], ("o", "s"), strict=True):
        points = [
            (r["int8_p50_ms"], 100 * r["accuracy"]["int8"][title], r["name"])
            for r in rows
            if r["int8_p50_ms"] is not None and r["accuracy"]["int8"][title] is not None
        ]
        if not points:
            continue
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=title)
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("int8 invoke p50 (ms, one thread)")
    ax.set_ylabel("int8 material accuracy (%)")
    ax.set_title("smartbin: latency vs accuracy (validation split)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def splice_readme(readme: Path, table: str) -> None:
    """Replace the text between the sweep markers (both must be there, in order)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no '{README_BEGIN}' ... '{README_END}' markers")
    start += len(README_BEGIN)
    readme.write_text(text[:start] + "\n" + table + text[end:], encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smartbin.benchmarks.sweep",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", nargs="+", metavar="DATA_DIR", help="training image folders")
    parser.add_argument("--work", type=Path, default=Path("runs/sweep"), help="runs and bundles")
    parser.add_argument(
        "--only", metavar="NAME[,NAME...]", help="configurations to include (default: all)"
    )
    parser.add_argument(
        "--use",
        action="append",
        default=[],
        metavar="NAME=BUNDLE",
        help="take this bundle for NAME instead of training it ('default' = the shipped one)",
    )
    parser.add_argument(
        "--teacher", default="default", help="teacher bundle for the students (default: shipped)"
    )
    parser.add_argument("--no-train", action="store_true", help="measure existing bundles only")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (1)")
    parser.add_argument("--runs", type=int, default=100, help="timed invokes per model (100)")
    parser.add_argument("--out", type=Path, help="where sweep.json/md/png go (default: --work)")
    parser.add_argument("--readme", type=Path, help="splice the table into this README")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from tqdm import tqdm

    from smartbin.benchmarks.system import describe, system_info
    from smartbin.device.bundle import resolve_bundle_path

    names = {c.name for c in CONFIGS}
    chosen = [c for c in CONFIGS if not args.only or c.name in args.only.split(",")]
    overrides: dict[str, Path] = {}
    for item in args.use:
        name, sep, path = item.partition("=")
        if not sep or name not in names:
            build_parser().error(
                f"--use {item!r}: expected NAME=BUNDLE with NAME in {sorted(names)}"
            )
        overrides[name] = resolve_bundle_path(path)
    out = args.out or args.work
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for config in tqdm(chosen, desc="sweep", unit="model"):
        try:
            bundle = overrides.get(config.name) or make_bundle(
                config, args.data, args.work, args.teacher, not args.no_train
            )
        except RuntimeError as exc:
            log.error("%s: %s", config.name, exc)
            continue
        if bundle is None:
            continue
        rows.append(row_for(config, bundle, measure(bundle, args.threads, args.runs)))
    machine = describe(system_info(None))
    command = "python -m smartbin.benchmarks.sweep " + " ".join(argv or sys.argv[1:])
    (out / "sweep.json").write_text(
        json.dumps({"machine": machine, "command": command, "rows": rows}, indent=2) + "\n",
        encoding="utf-8",
    )
    table = format_markdown(rows, machine, command)
    (out / "sweep.md").write_text(table, encoding="utf-8")
    plot(rows, out / "sweep.png")
    if args.readme:
        splice_readme(args.readme, table)
    print(table)
    log.info(
        "sweep: %d model(s) in %.0f min; results in %s",
        len(rows),
        (time.monotonic() - started) / 60,
        out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
