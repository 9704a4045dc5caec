"""The bundle's model, ready to classify RGB pictures; used by the daemon, ``classify``,
``evaluate`` on a .tflite and the benchmarks alike."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from smartbin.device.adapters import output_indices, run_model
from smartbin.device.bundle import ModelBundle
from smartbin.device.decision import Prediction
from smartbin.device.preprocess import prepare_image
from smartbin.device.runtime import load_edgetpu_delegate, make_interpreter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classified:
    prediction: Prediction
    inference_ms: float


class Classifier:
    """One interpreter over one bundle. Not thread-safe: one inference loop owns it."""

    def __init__(
        self, bundle: ModelBundle, num_threads: int | None = None, use_edgetpu: bool = True
    ) -> None:
        self.bundle = bundle
        delegate = None
        model_file = bundle.model_file
        if use_edgetpu and bundle.edgetpu_file is not None:
            delegate = load_edgetpu_delegate()
            if delegate is not None:
                model_file = bundle.edgetpu_file
            else:
                log.warning("bundle has an Edge TPU model but no Edge TPU: falling back to CPU")
        self.interpreter, self.runtime = make_interpreter(model_file, num_threads, delegate)
        self.on_edgetpu = delegate is not None
        try:
            self._heads = output_indices(self.interpreter, bundle.output_tensors)
        except KeyError as exc:
            from smartbin.errors import BundleError

            raise BundleError(f"{bundle.folder}: {exc}") from None
        log.info(
            "model %s loaded (%s, %s)",
            bundle.model_version,
            self.runtime,
            "Edge TPU" if self.on_edgetpu else f"CPU, threads={num_threads or 'default'}",
        )

    @property
    def model_version(self) -> str:
        return self.bundle.model_version

    def classify_prepared(self, image: np.ndarray) -> Classified:
        """Classify an image already passed through :func:`prepare_image`."""
        start = time.perf_counter()
        outputs = run_model(self.interpreter, image, self._heads)
        elapsed = (time.perf_counter() - start) * 1000.0
        return Classified(Prediction(outputs["binary"], outputs["material"]), elapsed)

    def classify(self, rgb: np.ndarray) -> Classified:
        """Classify any uint8 RGB picture: the bundle's preprocessing, then one forward pass."""
        spec = self.bundle.preprocess
        return self.classify_prepared(prepare_image(rgb, spec.size, spec.resize))
