"""Evaluation plots: a confusion matrix per head and the binary head's ROC curve.

matplotlib is part of the training install, not of the bin's; without it the caller says
plots are skipped and the JSON report is still complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smartbin.device.labels import HEADS


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_plots(
    report: dict[str, Any], out_dir: Path, stem: str = "evaluation"
) -> list[Path] | None:
    """Write PNGs for the heads in ``report``; None when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for head in HEADS:
        metrics = report.get(head)
        if metrics is None:
            continue
        path = out_dir / f"{stem}_confusion_{head}.png"
        _confusion(plt, metrics, head, path)
        written.append(path)
        if head == "binary" and metrics.get("roc") and metrics.get("auc") is not None:
            path = out_dir / f"{stem}_roc_binary.png"
            _roc(plt, metrics, path)
            written.append(path)
    return written


def _confusion(plt: Any, metrics: dict[str, Any], head: str, path: Path) -> None:
    names = metrics["classes"]
    matrix = metrics["confusion"]
    size = 2.5 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if peak and count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=colour)
    ax.set_title(f"{head} head: accuracy {100 * metrics['accuracy']:.1f}% (n={metrics['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _roc(plt: Any, metrics: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(metrics["roc"]["fpr"], metrics["roc"]["tpr"], label=f"AUC {metrics['auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel(f"true positive rate ({metrics['positive_class']})")
    ax.set_title("binary head ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
