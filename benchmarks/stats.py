"""Summary statistics and plain-text tables shared by the benchmarks.

Percentiles, not just the mean: a bin that is fast on average but stalls at p99 misses items,
so the tail is what decides whether a Pi model is good enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


def summarize(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """count, min, p50, p90, p99, max, mean and stdev (sample, n-1) of one series, in ms.

    Keys carry the unit (``p50_ms``) because the JSON is read by scripts and people alike.
    """
    if len(samples_ms) == 0:
        raise ValueError("no timings to summarise")
    values = np.asarray(samples_ms, dtype=np.float64)
    summary: dict[str, float | int] = {"count": int(values.size), "min_ms": float(values.min())}
    for q in PERCENTILES:
        summary[f"p{q}_ms"] = float(np.percentile(values, q))
    summary["max_ms"] = float(values.max())
    summary["mean_ms"] = float(values.mean())
    summary["stdev_ms"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return summary


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned columns, floats with two decimals: readable in a Pi's SSH terminal."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h)
        for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in text_rows:
        lines.append("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)
