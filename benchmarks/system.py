"""What the figures were measured on: CPU, board, OS, Python and the TFLite runtime.

A latency figure without the machine it came from is useless (a Pi 4 and a Pi 5 differ by
2-3x), so every benchmark report carries this block.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

RUNTIME_DISTRIBUTIONS = {"ai-edge-litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime"}


def _cpuinfo_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and key not in fields:
            fields[key] = value.strip()
    return fields


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's name: x86 ``model name``, else the ARM ``Model``/``Hardware`` line.

    A Raspberry Pi's /proc/cpuinfo has no ``model name`` per core on older kernels but names
    the board in ``Model``; ``platform.processor()`` is empty on most Linux systems.
    """
    try:
        fields = _cpuinfo_fields(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        fields = {}
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or "unknown"


def board_model(path: Path = Path("/proc/device-tree/model")) -> str | None:
    """The board (e.g. ``Raspberry Pi 4 Model B Rev 1.5``) where the device tree names it."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def runtime_version(runtime: str) -> str | None:
    """Installed version of the TFLite runtime the classifier picked."""
    dist = RUNTIME_DISTRIBUTIONS.get(runtime)
    if dist is None:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def usable_cpus() -> int:
    """CPUs this process may run on (a container or taskset may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def system_info(runtime: str | None = None) -> dict[str, object]:
    """The block every benchmark report starts with."""
    info: dict[str, object] = {
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "board": board_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    if runtime is not None:
        info["runtime"] = runtime
        info["runtime_version"] = runtime_version(runtime)
    return info


def describe(info: dict[str, object]) -> str:
    """One readable line for the top of a printed table."""
    parts = [str(info.get("board") or info.get("cpu_model")), str(info.get("machine"))]
    if info.get("board") and info.get("cpu_model"):
        parts[0] = f"{info['board']} ({info['cpu_model']})"
    parts.append(f"{info.get('usable_cpus')} CPUs")
    if info.get("runtime"):
        parts.append(f"{info['runtime']} {info.get('runtime_version') or ''}".strip())
    parts.append(f"Python {info.get('python')}")
    return ", ".join(parts)
