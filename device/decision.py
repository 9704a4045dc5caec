"""From the two heads' probabilities to the bin's decision.

``organic`` when the binary head says organic; otherwise the most likely material (which may
be ``trash``, general waste); ``unknown`` when the chosen answer's probability is under the
threshold. A pure function: the daemon, ``classify`` and evaluation agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartbin.device.labels import BINARY_CLASSES, MATERIAL_CLASSES, ORGANIC, UNKNOWN


@dataclass(frozen=True)
class Prediction:
    """Probabilities of both heads for one item (one frame, or the mean over several)."""

    binary: np.ndarray  # over BINARY_CLASSES
    material: np.ndarray  # over MATERIAL_CLASSES

    @property
    def organic_prob(self) -> float:
        return float(self.binary[ORGANIC])

    def material_probs(self) -> dict[str, float]:
        return {name: float(p) for name, p in zip(MATERIAL_CLASSES, self.material, strict=True)}

    def binary_probs(self) -> dict[str, float]:
        return {name: float(p) for name, p in zip(BINARY_CLASSES, self.binary, strict=True)}

    @staticmethod
    def mean(predictions: list[Prediction]) -> Prediction:
        """Combine several frames of the same item (mean probabilities)."""
        if not predictions:
            raise ValueError("no predictions to combine")
        return Prediction(
            binary=np.mean([p.binary for p in predictions], axis=0),
            material=np.mean([p.material for p in predictions], axis=0),
        )


@dataclass(frozen=True)
class Decision:
    label: str  # "organic", a material name, or "unknown"
    confidence: float


def decide(prediction: Prediction, unknown_threshold: float) -> Decision:
    if prediction.organic_prob >= 0.5:
        label, confidence = "organic", prediction.organic_prob
    else:
        top = int(np.argmax(prediction.material))
        label, confidence = MATERIAL_CLASSES[top], float(prediction.material[top])
    if confidence < unknown_threshold:
        return Decision(UNKNOWN, confidence)
    return Decision(label, confidence)
