"""The classifier's Edge TPU path on a machine without one: a logged fall-back to the CPU model.

No Edge TPU can exist here, so the "Edge TPU model" is a byte copy of the CPU model; what is
tested is the real delegate loading (libedgetpu is absent) and the fall-back.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from smartbin.device.bundle import MANIFEST_NAME, load_bundle, sha256_file
from smartbin.device.classifier import Classifier
from smartbin.device.preprocess import load_image_rgb
from smartbin.device.runtime import load_edgetpu_delegate

DATA = Path(__file__).parent / "data" / "trashnet"


def _with_edgetpu_variant(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    shutil.copy(copy / "model.tflite", copy / "model_edgetpu.tflite")
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["model"]["edgetpu_file"] = "model_edgetpu.tflite"
    manifest["model"]["edgetpu_sha256"] = sha256_file(copy / "model_edgetpu.tflite")
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    return copy


def test_edgetpu_bundle_falls_back_to_cpu(tiny_bundle: Path, tmp_path: Path, caplog) -> None:
    bundle = load_bundle(_with_edgetpu_variant(tiny_bundle, tmp_path))
    assert bundle.edgetpu_file is not None
    with caplog.at_level(logging.INFO):
        classifier = Classifier(bundle, num_threads=1, use_edgetpu=True)
    assert not classifier.on_edgetpu
    assert "Edge TPU not available" in caplog.text
    assert "falling back to CPU" in caplog.text
    image = load_image_rgb(next(DATA.glob("*/*.jpg")))
    result = classifier.classify(image)
    assert result.prediction.material.shape == (6,)
    assert np.isclose(result.prediction.material.sum(), 1.0, atol=0.02)


def test_a_missing_libedgetpu_leaves_no_traceback_on_stderr(monkeypatch) -> None:
    """The runtimes' half-made ``Delegate`` printed "Exception ignored in Delegate.__del__"
    with an AttributeError traceback when collected, on every bin and bench without a Coral."""
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: unraisable.append(repr(info)))
    assert load_edgetpu_delegate() is None
    gc.collect()
    assert unraisable == []
