"""``smartbin classify``: a bundle's answer for some image files, as the bin would give it.

Device install only (no TensorFlow): the bin's Classifier and ``decide``. One unreadable image
is reported on its own line and does not stop the others; the exit code says something failed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from smartbin.device.decision import Prediction, decide
from smartbin.errors import ImageReadError


def format_result(path: str, prediction: Prediction, threshold: float, top: int = 3) -> str:
    """``path: <decision> (<confidence>) | binary ... | material ...`` on one line."""
    decision = decide(prediction, threshold)
    binary = "  ".join(f"{n} {p:.2f}" for n, p in prediction.binary_probs().items())
    ranked = sorted(prediction.material_probs().items(), key=lambda kv: -kv[1])[:top]
    material = "  ".join(f"{n} {p:.2f}" for n, p in ranked)
    return (
        f"{path}: {decision.label} ({decision.confidence:.2f})"
        f" | binary: {binary} | material: {material}"
    )


def run_classify(
    bundle_spec: str, images: Sequence[str], threads: int | None = None, top: int = 3
) -> int:
    """Classify each image; 0 if all were read, 1 if any could not be (missing bundle -> 2)."""
    from smartbin.device.bundle import load_bundle
    from smartbin.device.classifier import Classifier
    from smartbin.device.preprocess import load_image_rgb

    bundle = load_bundle(bundle_spec)  # BundleError -> one line, exit 2
    classifier = Classifier(bundle, num_threads=threads)
    failed = 0
    for name in images:
        path = Path(name).expanduser()
        try:
            rgb = load_image_rgb(path)
        except ImageReadError as exc:
            print(f"{name}: cannot classify: {exc.reason}")
            failed += 1
            continue
        prediction = classifier.classify(rgb).prediction
        print(format_result(name, prediction, bundle.unknown_threshold, top))
    if failed:
        print(f"{failed} of {len(images)} image(s) could not be read", file=sys.stderr)
        return 1
    return 0
