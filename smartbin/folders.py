"""Output folders made up front, so a bad path fails in one line before minutes of work."""

from __future__ import annotations

from pathlib import Path

from smartbin.errors import SmartbinError


def ensure_out_dir(out_dir: Path) -> Path:
    """``out_dir``, created with its parents; :class:`SmartbinError` when a file is in the way
    or the folder cannot be made."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SmartbinError(f"output path {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmartbinError(
            f"cannot create output folder {out_dir}: {exc.strerror or exc}"
        ) from None
    return out_dir
