"""``smartbin data report``: look at the training data before training on it.

Writes, per data set (source root), a bar chart of the class counts and a grid of sample
thumbnails per class, plus JSON lists of byte-identical duplicates and of skipped files and a
``report.json`` with everything counted. Thumbnails go through the project's one
preprocessing (:func:`smartbin.device.preprocess.prepare_image`), so the grid shows what the
model will see. matplotlib is imported inside the functions: ``smartbin.train.data`` stays light.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartbin.device.labels import ORGANIC, FolderLabel
from smartbin.device.preprocess import load_image_rgb, prepare_image
from smartbin.errors import ImageReadError
from smartbin.folders import ensure_out_dir
from smartbin.train.data import (
    Sample,
    discover,
    find_duplicates,
    split_samples,
)

REPORT_NAME = "report.json"
DUPLICATES_NAME = "duplicates.json"
PROBLEMS_NAME = "problems.json"

# Bar colours by what a folder means for the bin: organic, recyclable (material or not), trash.
_COLOURS = {"organic": "#4c9a2a", "recyclable": "#3a78c2", "unknown_material": "#8fb6e3"}
_TRASH_COLOUR = "#7f7f7f"


def _safe(name: str) -> str:
    """A file-name-safe form of a source or label name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def _colour(label: FolderLabel) -> str:
    if label.binary is None:
        return _TRASH_COLOUR
    if label.binary == ORGANIC:
        return _COLOURS["organic"]
    return _COLOURS["recyclable"] if label.material is not None else _COLOURS["unknown_material"]


def plot_counts(source: str, samples: Sequence[Sample], path: Path) -> Path:
    """Bar chart of images per class folder label for one data set."""
    from matplotlib.figure import Figure

    counts = Counter(s.label_name for s in samples)
    labels = {s.label_name: s.label for s in samples}
    names = sorted(counts)
    fig = Figure(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.6), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(names, [counts[n] for n in names], color=[_colour(labels[n]) for n in names])
    ax.bar_label(bars, fontsize=8)
    ax.set_title(f"{source}: {len(samples)} images")
    ax.set_ylabel("images")
    ax.margins(y=0.12)
    ax.tick_params(axis="x", labelrotation=30)
    fig.savefig(path, dpi=110)
    return path


def _pick(samples: Sequence[Sample], count: int) -> list[Sample]:
    """A deterministic, name-independent pick: the first ``count`` by content hash."""
    return sorted(samples, key=lambda s: (s.sha1, str(s.path)))[:count]


def sample_grid(
    title: str, samples: Sequence[Sample], path: Path, grid: int = 4, thumb: int = 96
) -> Path | None:
    """A ``grid`` x ``grid`` mosaic of preprocessed thumbnails; None if none could be read."""
    from matplotlib.figure import Figure

    thumbs: list[np.ndarray] = []
    for sample in _pick(samples, grid * grid * 2):
        if len(thumbs) == grid * grid:
            break
        try:
            thumbs.append(prepare_image(load_image_rgb(sample.path), thumb))
        except (ImageReadError, ValueError):
            continue  # only possible without verification; the file is listed as a problem later
    if not thumbs:
        return None
    pad = 2
    rows = -(-len(thumbs) // grid)
    cols = min(grid, len(thumbs))
    mosaic = np.full(
        (rows * (thumb + pad) + pad, cols * (thumb + pad) + pad, 3), 255, dtype=np.uint8
    )
    for i, image in enumerate(thumbs):
        top = pad + (i // grid) * (thumb + pad)
        left = pad + (i % grid) * (thumb + pad)
        mosaic[top : top + thumb, left : left + thumb] = image
    scale = 1.3 / 96 * thumb
    fig = Figure(figsize=(cols * scale, rows * scale + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(mosaic)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100)
    return path


def write_report(
    roots: Sequence[Path],
    out_dir: Path,
    *,
    verify_images: bool = True,
    progress: bool = True,
    val_fraction: float = 0.2,
    seed: str = "smartbin",
    grid: int = 4,
    thumb: int = 96,
) -> dict[str, Any]:
    """Discover ``roots``, write charts, grids and JSON into ``out_dir``; return report.json."""
    samples, problems = discover(roots, verify_images=verify_images, progress=progress)
    out_dir = ensure_out_dir(Path(out_dir))
    duplicates = find_duplicates(samples)
    split = split_samples(samples, val_fraction=val_fraction, seed=seed, problems=problems)

    by_source: dict[str, list[Sample]] = {}
    for sample in samples:
        by_source.setdefault(sample.source, []).append(sample)

    from tqdm import tqdm

    figures: list[str] = []
    jobs = [(source, None) for source in by_source] + [
        (source, label) for source, items in by_source.items() for label in _labels(items)
    ]
    for source, label in tqdm(jobs, desc="figures", unit="fig", disable=not progress, leave=False):
        items = by_source[source]
        if label is None:
            path = plot_counts(source, items, out_dir / f"counts_{_safe(source)}.png")
        else:
            chosen = [s for s in items if s.label_name == label]
            title = f"{source} / {label} ({len(chosen)} images)"
            path = sample_grid(
                title, chosen, out_dir / f"samples_{_safe(source)}_{_safe(label)}.png", grid, thumb
            )
        if path is not None:
            figures.append(path.name)

    _write_json(out_dir / DUPLICATES_NAME, [g.to_dict() for g in duplicates])
    _write_json(out_dir / PROBLEMS_NAME, [p.to_dict() for p in problems])
    report: dict[str, Any] = {
        "roots": [str(Path(r)) for r in roots],
        "verified_images": verify_images,
        "total_images": len(samples),
        "counts": {
            source: dict(sorted(Counter(s.label_name for s in items).items()))
            for source, items in by_source.items()
        },
        "duplicates": {
            "groups": len(duplicates),
            "conflicting_groups": sum(g.conflicting for g in duplicates),
            "file": DUPLICATES_NAME,
        },
        "problems": {"count": len(problems), "file": PROBLEMS_NAME},
        "split_preview": split.summary(),
        "figures": figures,
    }
    _write_json(out_dir / REPORT_NAME, report)
    return report


def _labels(samples: Sequence[Sample]) -> list[str]:
    return sorted({s.label_name for s in samples})


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def summary_lines(report: dict[str, Any], limit: int = 10) -> list[str]:
    """A short human summary of ``report`` (what the CLI prints)."""
    lines = []
    for source, counts in report["counts"].items():
        parts = ", ".join(f"{name} {n}" for name, n in counts.items())
        lines.append(f"{source}: {sum(counts.values())} images ({parts})")
    preview = report["split_preview"]
    dup = report["duplicates"]
    lines.append(
        f"duplicates: {dup['groups']} group(s) of byte-identical files, "
        f"{dup['conflicting_groups']} with conflicting labels (all kept out of validation)"
    )
    for group in preview["duplicates"]["conflicting"][:limit]:
        names = " = ".join(f"{f['label']}:{Path(f['path']).name}" for f in group["files"])
        lines.append(f"  conflicting: {names}")
    count = report["problems"]["count"]
    lines.append(f"skipped files: {count}" + (f" (see {PROBLEMS_NAME})" if count else ""))
    for problem in preview["problems"]["examples"][:limit]:
        lines.append(f"  {problem['path']}: {problem['reason']}")
    if count > limit:
        lines.append(f"  ... and {count - limit} more")
    lines.append(
        f"split preview (val_fraction {preview['split']['val_fraction']}): "
        f"{preview['train']['total']} train, {preview['validation']['total']} validation"
    )
    return lines
