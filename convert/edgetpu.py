"""Optional Edge TPU compilation with Coral's ``edgetpu_compiler``.

The compiler only exists for x86-64 Linux (Coral's apt repository); without it the bundle
simply has no Edge TPU variant and the bin runs the int8 model on its CPU. Not a failure.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from smartbin.errors import SmartbinError

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
NOT_FOUND = (
    "edgetpu_compiler not found: skipping the Edge TPU variant; "
    "install it from Coral's apt repository"
)


def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def compile_edgetpu(model_path: Path, out_dir: Path, timeout_s: float = 600.0) -> Path | None:
    """Compile ``model_path`` into ``out_dir``; the compiled file's path, or None if skipped.

    A compiler that exists but fails is an error (the user asked for a variant that cannot
    be built); a missing compiler is logged in one line and skipped.
    """
    compiler = find_compiler()
    if compiler is None:
        log.warning(NOT_FOUND)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [compiler, "-s", "-o", str(out_dir), str(model_path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SmartbinError(f"{COMPILER} failed to run: {exc}") from None
    log.debug("%s output:\n%s", COMPILER, result.stdout)
    compiled = out_dir / f"{model_path.stem}_edgetpu.tflite"
    if result.returncode != 0 or not compiled.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SmartbinError(
            f"{COMPILER} failed on {model_path} (exit {result.returncode}): {tail[0]}"
        )
    log.info("Edge TPU model compiled: %s", compiled)
    return compiled
