"""Memory of the bin's classifier: resident set size at each stage, in a fresh process.

Why a fresh subprocess: peak RSS (VmHWM) only ever grows, so measured in the ``smartbin``
process it would include whatever ran before (argument parsing is cheap, but a test session
or an earlier benchmark that imported TensorFlow is not). The child imports only what the
bin imports (``smartbin.device``), and reports, after each stage:

* ``python``      the interpreter and the standard library only;
* ``imports``     + numpy, OpenCV, Pillow and the TFLite runtime (what ``smartbin run`` loads);
* ``loaded``      + the verified bundle and a ready ``Classifier`` (tensors allocated);
* ``inferences``  + N classifications of a 640x480 frame (XNNPACK scratch buffers, caches).

Each stage gives the current RSS (VmRSS) and the peak so far (VmHWM) from
/proc/self/status. ``ru_maxrss`` (``resource.getrusage``) goes into the JSON too, but on
Linux it is carried across fork + exec, so in a child it starts at the parent's RSS; VmHWM
is per address space and starts afresh at exec, which is why the table shows VmHWM.

    python -m smartbin.benchmarks.memory --child BUNDLE --runs N --threads T --edgetpu auto
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGES = ("python", "imports", "loaded", "inferences")
CHILD_TIMEOUT_S = 600.0
STATUS_FILE = Path("/proc/self/status")


def read_status(path: Path = STATUS_FILE) -> dict[str, float | None]:
    """Current (VmRSS) and peak (VmHWM) resident set size in MiB; None where /proc lacks them."""
    values: dict[str, float | None] = {"rss_mib": None, "peak_rss_mib": None}
    keys = {"VmRSS": "rss_mib", "VmHWM": "peak_rss_mib"}
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            amount, _, unit = rest.strip().partition(" ")
            if unit.strip().lower() == "kb" and amount.isdigit():
                values[keys[key]] = int(amount) / 1024.0
    return values


def ru_maxrss_mib() -> float:
    """Peak RSS from getrusage: kilobytes on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _snapshot() -> dict[str, float | None]:
    status = read_status()
    status["ru_maxrss_mib"] = ru_maxrss_mib()
    return status


def measure_in_this_process(
    bundle_spec: str, runs: int, threads: int | None, edgetpu: str
) -> dict[str, Any]:
    """The child's work: load and classify stage by stage, snapshotting memory after each.

    Only meaningful in a fresh process (see the module docstring); :func:`run_memory` starts
    one. Imports happen here, after the first snapshot, on purpose.
    """
    stages: dict[str, dict[str, float | None]] = {"python": _snapshot()}

    import numpy  # noqa: F401  (loaded by the device code anyway; named for the stage)

    from smartbin.benchmarks.invoke import DEFAULT_FRAME, synthetic_frame
    from smartbin.device.bundle import load_bundle
    from smartbin.device.classifier import Classifier
    from smartbin.device.runtime import runtime_module

    runtime_module()  # the interpreter module the classifier will use (LiteRT first)
    frame = synthetic_frame(DEFAULT_FRAME)
    stages["imports"] = _snapshot()

    bundle = load_bundle(bundle_spec)
    classifier = Classifier(bundle, num_threads=threads, use_edgetpu=edgetpu == "auto")
    stages["loaded"] = _snapshot()

    for _ in range(runs):
        classifier.classify(frame)
    stages["inferences"] = _snapshot()

    model_file = bundle.edgetpu_file if classifier.on_edgetpu else bundle.model_file
    return {
        "pid": os.getpid(),
        "runtime": classifier.runtime,
        "on_edgetpu": classifier.on_edgetpu,
        "model_version": bundle.model_version,
        "model_file": model_file.name if model_file else None,
        "model_size_bytes": model_file.stat().st_size if model_file else None,
        "input_size": bundle.input_size,
        "runs": runs,
        "threads": threads,
        # Honesty check: the bin must not carry TensorFlow; if it were imported the figures
        # would be those of a workstation, not of a bin.
        "tensorflow_imported": "tensorflow" in sys.modules,
        "stages": stages,
        "deltas_mib": stage_deltas(stages),
    }


def stage_deltas(stages: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """RSS added by each stage over the one before (None without /proc)."""
    deltas: dict[str, float | None] = {}
    for before, after in zip(STAGES, STAGES[1:], strict=False):
        a, b = stages[before]["rss_mib"], stages[after]["rss_mib"]
        deltas[after] = None if a is None or b is None else b - a
    return deltas


def run_memory(
    bundle_folder: Path, runs: int = 50, threads: int | None = None, edgetpu: str = "auto"
) -> dict[str, Any]:
    """Measure in a fresh Python subprocess; return the ``memory`` block of the report.

    ``bundle_folder`` is one the caller already loaded (verified), so a bad path has been
    reported as one line before the child starts.
    """
    from smartbin.errors import SmartbinError

    if runs < 1:
        raise SmartbinError(f"--runs must be >= 1, got {runs}")
    command = [
        sys.executable,
        "-m",
        "smartbin.benchmarks.memory",
        "--child",
        str(bundle_folder),
        "--runs",
        str(runs),
        "--edgetpu",
        edgetpu,
    ]
    if threads is not None:
        command += ["--threads", str(threads)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise SmartbinError(f"memory benchmark child took over {CHILD_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SmartbinError(f"memory benchmark child failed (exit {done.returncode}): {last}")
    try:
        child = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SmartbinError(f"memory benchmark child printed no report: {done.stdout!r}") from None
    last_stage = child["stages"][STAGES[-1]]
    return {"peak_rss_mib": last_stage["peak_rss_mib"], "rss_mib": last_stage["rss_mib"], **child}


def format_memory(memory: dict[str, Any]) -> str:
    """The stages as a readable table (MiB)."""
    from smartbin.benchmarks.stats import format_table

    head = (
        f"memory: fresh process (pid {memory['pid']}), {memory['model_file']} on "
        f"{'the Edge TPU' if memory['on_edgetpu'] else 'the CPU'}, "
        f"threads={memory['threads'] or 'default'}"
        + (", TensorFlow WAS imported (figures inflated)" if memory["tensorflow_imported"] else "")
    )
    labels = {
        "python": "python started",
        "imports": "device imports",
        "loaded": "bundle + interpreter",
        "inferences": f"after {memory['runs']} inferences",
    }

    def mib(value: float | None) -> object:
        return "n/a" if value is None else float(value)

    rows = []
    for stage in STAGES:
        snap = memory["stages"][stage]
        added = memory["deltas_mib"].get(stage, snap["rss_mib"])
        rows.append([labels[stage], mib(snap["rss_mib"]), mib(added), mib(snap["peak_rss_mib"])])
    table = format_table(["stage", "RSS MiB", "added MiB", "peak RSS MiB (VmHWM)"], rows)
    note = "peak = highest RSS so far in the process, transients during imports included"
    return "\n".join([head, table, note])


def _child_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the fresh subprocess: print the measurement as one JSON line."""
    parser = argparse.ArgumentParser(prog="smartbin.benchmarks.memory")
    parser.add_argument("--child", required=True, metavar="BUNDLE")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--edgetpu", choices=("auto", "off"), default="auto")
    args = parser.parse_args(argv)
    from smartbin.errors import SmartbinError

    try:
        result = measure_in_this_process(args.child, args.runs, args.threads, args.edgetpu)
    except SmartbinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
