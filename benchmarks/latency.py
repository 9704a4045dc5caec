"""Latency of the bin's classifier: preprocessing and inference, per interpreter thread count.

It drives the real device code (``load_bundle`` -> ``Classifier`` -> ``prepare_image`` ->
``Classifier.classify_prepared``), so the figures are what ``smartbin run`` gets on the same
machine, not those of a benchmark-only copy. Each run times, separately:

* **preprocess**: ``prepare_image`` on a camera-sized frame (640x480 by default), i.e. the
  resize of the shorter side and the centre crop the bin does on every frame it classifies;
* **inference**: ``Classifier.classify_prepared`` as the classifier itself times it (set the
  input tensor, ``invoke``, read and dequantise both heads).

The frame's content does not change the latency of an int8 model on the CPU, so without
``--image`` a seeded synthetic frame is used; with ``--image`` the photo is resized to the
frame size so the preprocessing cost stays that of a camera frame.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartbin.benchmarks.stats import format_table, summarize
from smartbin.benchmarks.system import describe, system_info

DEFAULT_FRAME = (640, 480)  # width, height of a typical Pi camera preview frame
EDGETPU_CHOICES = ("auto", "off")


@dataclass(frozen=True)
class LatencyConfig:
    """What to measure; the CLI fills it from its flags."""

    bundle: str | Path = "default"
    threads: tuple[int, ...] = (1, 2, 4)
    runs: int = 200
    warmup: int = 20
    image: Path | None = None
    frame_size: tuple[int, int] = DEFAULT_FRAME
    edgetpu: str = "auto"

    def __post_init__(self) -> None:
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"thread counts must be >= 1, got {self.threads}")
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"need runs >= 1 and warmup >= 0, got {self.runs}, {self.warmup}")
        if self.edgetpu not in EDGETPU_CHOICES:
            raise ValueError(f"edgetpu must be one of {EDGETPU_CHOICES}, got {self.edgetpu!r}")


def synthetic_frame(size: tuple[int, int] = DEFAULT_FRAME, seed: int = 0) -> np.ndarray:
    """A seeded RGB frame (smooth gradient + noise): realistic size, no photo needed."""
    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / width * 200, ys / height * 200, (xs + ys) / (width + height) * 200], -1)
    noise = rng.normal(0.0, 12.0, base.shape)
    return np.clip(base + 30 + noise, 0, 255).astype(np.uint8)


def camera_frame(image: Path | None, size: tuple[int, int] = DEFAULT_FRAME) -> np.ndarray:
    """The frame every run preprocesses: ``image`` resized to ``size``, or a synthetic one."""
    if image is None:
        return synthetic_frame(size)
    import cv2

    from smartbin.device.preprocess import load_image_rgb

    rgb = load_image_rgb(image)  # ImageReadError (one line, exit 2) for a bad path
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def measure_threads(
    classifier: Any, frame: np.ndarray, runs: int, warmup: int, progress: Any = None
) -> dict[str, Any]:
    """Time ``runs`` frames (after ``warmup`` untimed ones) through one classifier."""
    from smartbin.device.preprocess import prepare_image

    size = classifier.bundle.input_size
    for _ in range(warmup):
        classifier.classify(frame)
    preprocess_ms: list[float] = []
    inference_ms: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        prepared = prepare_image(frame, size)
        preprocess_ms.append((time.perf_counter() - start) * 1000.0)
        inference_ms.append(classifier.classify_prepared(prepared).inference_ms)
        if progress is not None:
            progress.update(1)
    total_ms = [p + i for p, i in zip(preprocess_ms, inference_ms, strict=True)]
    total = summarize(total_ms)
    inference = summarize(inference_ms)
    return {
        "runs": runs,
        "warmup": warmup,
        "inference_ms": inference,
        "preprocess_ms": summarize(preprocess_ms),
        "total_ms": total,
        # Frames per second the classifier sustains when it does nothing else: preprocessing
        # plus inference of one frame after another (camera capture not included).
        "fps": 1000.0 / float(total["mean"]),
        "inference_fps": 1000.0 / float(inference["mean"]),
    }


def run_latency(config: LatencyConfig, show_progress: bool = True) -> dict[str, Any]:
    """Measure every thread count of ``config``; return the report (JSON-ready)."""
    from tqdm import tqdm

    from smartbin.device.bundle import load_bundle
    from smartbin.device.classifier import Classifier

    bundle = load_bundle(config.bundle)
    frame = camera_frame(config.image, config.frame_size)
    results: list[dict[str, Any]] = []
    runtime = None
    model_file = bundle.model_file
    total_runs = len(config.threads) * config.runs
    with tqdm(
        total=total_runs, desc="bench latency", unit="frame", disable=not show_progress
    ) as bar:
        for threads in config.threads:
            start = time.perf_counter()
            classifier = Classifier(
                bundle, num_threads=threads, use_edgetpu=config.edgetpu == "auto"
            )
            load_ms = (time.perf_counter() - start) * 1000.0
            runtime = classifier.runtime
            if classifier.on_edgetpu and bundle.edgetpu_file is not None:
                model_file = bundle.edgetpu_file
            bar.set_postfix(threads=threads)
            result = {"threads": threads, "on_edgetpu": classifier.on_edgetpu, "load_ms": load_ms}
            result.update(measure_threads(classifier, frame, config.runs, config.warmup, bar))
            results.append(result)
            del classifier
    return {
        "bench": "latency",
        "system": system_info(runtime),
        "model": {
            "bundle": str(bundle.folder),
            "version": bundle.model_version,
            "file": model_file.name,
            "size_bytes": model_file.stat().st_size,
            "input_size": bundle.input_size,
            "has_edgetpu_model": bundle.edgetpu_file is not None,
        },
        "config": {
            "threads": list(config.threads),
            "runs": config.runs,
            "warmup": config.warmup,
            "image": str(config.image) if config.image else None,
            "frame": {"width": frame.shape[1], "height": frame.shape[0]},
            "edgetpu": config.edgetpu,
        },
        "results": results,
    }


def format_latency(report: dict[str, Any]) -> str:
    """The report as a readable table (milliseconds; fps = preprocess + inference)."""
    model = report["model"]
    config = report["config"]
    frame = config["frame"]
    head = [
        f"machine: {describe(report['system'])}",
        f"model:   {model['version']} ({model['file']}, {model['size_bytes'] / 1e6:.2f} MB, "
        f"{model['input_size']}x{model['input_size']} input)",
        f"frame:   {frame['width']}x{frame['height']}"
        + (f" from {config['image']}" if config["image"] else " synthetic")
        + f", {config['runs']} runs after {config['warmup']} warm-up",
        "",
    ]
    headers = [
        "threads",
        "device",
        "infer mean",
        "p50",
        "p90",
        "p99",
        "prep mean",
        "p50",
        "p90",
        "p99",
        "fps",
    ]
    rows = []
    for r in report["results"]:
        inf, pre = r["inference_ms"], r["preprocess_ms"]
        rows.append(
            [
                r["threads"],
                "edgetpu" if r["on_edgetpu"] else "cpu",
                inf["mean"],
                inf["p50"],
                inf["p90"],
                inf["p99"],
                pre["mean"],
                pre["p50"],
                pre["p90"],
                pre["p99"],
                r["fps"],
            ]
        )
    note = "times in ms; fps = 1000 / mean(preprocess + inference), camera capture excluded"
    return "\n".join(head) + format_table(headers, rows) + "\n" + note


def parse_threads(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4); ValueError with the offending item otherwise."""
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"thread count {item!r} is not a positive integer")
        values.append(int(item))
    return tuple(values)


def parse_frame(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or min(int(width), int(height)) < 1:
        raise ValueError(f"frame size {text!r} is not WIDTHxHEIGHT, e.g. 640x480")
    return int(width), int(height)


def thread_counts(values: Sequence[int]) -> tuple[int, ...]:
    """Unique thread counts in the order given (``1,1,2`` measures 1 once)."""
    return tuple(dict.fromkeys(values))
