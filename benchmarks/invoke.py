"""Bare inference: ``interpreter.invoke()`` alone, per model variant, thread count and XNNPACK.

Timed the way pycoral's examples time a model: the input tensor is set once, then each timed
run is one ``invoke()`` and nothing else (no preprocessing, no reading of the outputs), so
the figure is the model's own cost on this machine and the pipeline benchmark can say how
much the bin adds around it.

Variants of one bundle:

* ``int8``: ``model.tflite``, what the bin runs on a CPU;
* ``float32``: ``model_float.tflite`` when the bundle carries one (``smartbin convert
  --float-model``); same uint8-range pixels as input, given as float32 0..255, since the
  scaling to [-1, 1] is inside the model (see :mod:`smartbin.device.preprocess`);
* ``edgetpu``: ``model_edgetpu.tflite`` when the Edge TPU delegate loads (a Coral is
  attached); measured once, at the largest thread count, with the runtime's defaults.

XNNPACK "off" builds the interpreter with the builtin kernels only
(``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``); the bin always runs with it on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smartbin.benchmarks.stats import summarize

if TYPE_CHECKING:
    from smartbin.device.bundle import ModelBundle

DEFAULT_FRAME = (640, 480)  # width, height of a typical Pi camera preview frame
INT8, FLOAT32, EDGETPU = "int8", "float32", "edgetpu"


def synthetic_frame(size: tuple[int, int] = DEFAULT_FRAME, seed: int = 0) -> np.ndarray:
    """A seeded RGB frame (smooth gradient + noise): an int8 model's CPU latency does not
    depend on the picture, so no photo is needed to time it."""
    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / width * 200, ys / height * 200, (xs + ys) / (width + height) * 200], -1)
    noise = rng.normal(0.0, 12.0, base.shape)
    return np.clip(base + 30 + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Variant:
    """One model file of the bundle and how it is run."""

    name: str  # INT8, FLOAT32 or EDGETPU
    path: Path

    @property
    def edgetpu(self) -> bool:
        return self.name == EDGETPU


@dataclass(frozen=True)
class InvokeCase:
    """One row of the invoke table."""

    variant: Variant
    threads: int
    xnnpack: bool


def model_variants(bundle: ModelBundle, edgetpu: str) -> tuple[list[Variant], str | None]:
    """The variants to time and, when the bundle's Edge TPU model is left out, why."""
    from smartbin.device.runtime import load_edgetpu_delegate

    variants = [Variant(INT8, bundle.model_file)]
    if bundle.float_file is not None:
        variants.append(Variant(FLOAT32, bundle.float_file))
    if bundle.edgetpu_file is None:
        return variants, None
    if edgetpu == "off":
        return variants, "Edge TPU model not timed (--edgetpu off)"
    if load_edgetpu_delegate() is None:
        return variants, "the bundle has an Edge TPU model but no Edge TPU was found"
    variants.append(Variant(EDGETPU, bundle.edgetpu_file))
    return variants, None


def plan_cases(
    variants: Sequence[Variant], threads: Sequence[int], xnnpack: Sequence[bool]
) -> list[InvokeCase]:
    """Every variant x thread count x XNNPACK mode; the Edge TPU model once (its delegate
    does the work, so CPU threads and XNNPACK barely matter to it)."""
    cases: list[InvokeCase] = []
    for variant in variants:
        if variant.edgetpu:
            cases.append(InvokeCase(variant, max(threads), True))
            continue
        cases += [InvokeCase(variant, t, x) for t in threads for x in xnnpack]
    return cases


def case_row(case: InvokeCase) -> dict[str, Any]:
    """The fields that name a row, measured or not."""
    return {
        "model": case.variant.name,
        "file": case.variant.path.name,
        "size_bytes": case.variant.path.stat().st_size,
        "threads": case.threads,
        "xnnpack": case.xnnpack,
    }


def unavailable_row(case: InvokeCase, reason: str) -> dict[str, Any]:
    """A row the runtime cannot measure here: said in the table instead of failing."""
    return {**case_row(case), "available": False, "reason": reason}


def measure_case(
    case: InvokeCase, image: np.ndarray, runs: int, warmup: int, progress: Any = None
) -> dict[str, Any]:
    """Load the variant, set ``image`` as input once, time ``runs`` invokes after ``warmup``."""
    from smartbin.device.adapters import quantize
    from smartbin.device.runtime import (
        RuntimeFeatureUnavailable,
        load_edgetpu_delegate,
        make_interpreter,
    )

    delegate = None
    if case.variant.edgetpu:
        delegate = load_edgetpu_delegate()
        if delegate is None:
            return unavailable_row(case, "the Edge TPU delegate did not load")
    start = time.perf_counter()
    try:
        interpreter, runtime = make_interpreter(
            case.variant.path, case.threads, delegate, xnnpack=case.xnnpack
        )
    except RuntimeFeatureUnavailable as exc:
        return unavailable_row(case, f"not available: {exc}")
    load_ms = (time.perf_counter() - start) * 1000.0
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], quantize(image[None, ...], detail))
    for _ in range(warmup):
        interpreter.invoke()
    samples: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        samples.append((time.perf_counter() - start) * 1000.0)
        if progress is not None:
            progress.update(1)
    summary = summarize(samples)
    return {
        **case_row(case),
        "available": True,
        "runtime": runtime,
        "input_dtype": np.dtype(detail["dtype"]).name,
        "load_ms": load_ms,
        "runs": runs,
        "warmup": warmup,
        **summary,
        "fps": 1000.0 / float(summary["mean_ms"]),
    }


def model_input(bundle: ModelBundle) -> np.ndarray:
    """The prepared (resized, cropped) uint8 picture every invoke gets."""
    from smartbin.device.preprocess import prepare_image

    return prepare_image(synthetic_frame(), bundle.input_size, bundle.preprocess.resize)
