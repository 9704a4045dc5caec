"""A tiny but real model: trained for a few steps on generated pictures, converted to int8.

``tiny_data``   folder tree ``<root>/<class>/*.png`` of coloured shapes (one colour per class)
``tiny_run``    what ``smartbin train`` writes: ``model.keras`` + ``run.json`` (train/validation)
``tiny_bundle`` a real bundle (int8 model.tflite + bundle.json) converted from ``tiny_run``
                through the same code as ``smartbin convert``

The model is MobileNetV2 alpha 0.35 at 64 px, randomly initialised and fitted for a few steps
(it learns the colours),
so its outputs depend on the image (a constant model would let wrong wiring pass). Everything
is session-scoped: built once (~20-30 s on one core), shared by all tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartbin.device.labels import label_for_folder

TINY_SIZE = 64
# One colour per class folder: the only signal the tiny model has to learn.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "organic": (40, 170, 40),
    "cardboard": (150, 110, 60),
    "glass": (90, 200, 220),
    "metal": (150, 150, 160),
    "paper": (240, 240, 230),
    "plastic": (220, 40, 160),
    "trash": (30, 30, 30),
}


def make_picture(colour: tuple[int, int, int], seed: int, width: int = 96, height: int = 80):
    """A noisy background with a filled ellipse of the class colour (not square: exercises the
    shorter-side resize and centre crop)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(90, 140, size=3)
    pixels = np.empty((height, width, 3), dtype=np.int16)
    pixels[:] = background
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height / 2 + rng.integers(-6, 7), width / 2 + rng.integers(-6, 7)
    ry, rx = height * rng.uniform(0.4, 0.55), width * rng.uniform(0.35, 0.5)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    pixels[inside] = colour
    pixels += rng.integers(-6, 7, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_image_tree(
    root: Path, per_class: int, seed: int = 0, classes: tuple[str, ...] | None = None
) -> list[dict]:
    """Write ``root/<class>/<class>_<i>.png`` pictures; return run.json-style entries."""
    entries = []
    names = classes or tuple(CLASS_COLOURS)
    for c, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        label = label_for_folder(name)
        assert label is not None
        for i in range(per_class):
            path = folder / f"{name}_{i}.png"
            Image.fromarray(make_picture(CLASS_COLOURS[name], seed * 1000 + c * 100 + i)).save(path)
            entries.append(
                {
                    "path": str(path),
                    "binary": label.binary,
                    "material": label.material,
                    "source": root.name,
                }
            )
    return entries


def train_tiny_model(entries: list[dict], steps: int = 10):
    """Build the real two-head model (random init) and fit it briefly with masked losses."""
    import keras
    import tensorflow as tf

    from smartbin.device.preprocess import load_image_rgb, prepare_image
    from smartbin.train.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model(TINY_SIZE, None, alpha=0.35).full
    x = np.stack([prepare_image(load_image_rgb(e["path"]), TINY_SIZE) for e in entries])
    x = tf.constant(x.astype(np.float32))
    targets = {}
    for head, classes in (("binary", 2), ("material", 6)):
        labels = np.array([-1 if e[head] is None else e[head] for e in entries])
        mask = (labels >= 0).astype(np.float32)
        onehot = np.eye(classes, dtype=np.float32)[np.maximum(labels, 0)] * mask[:, None]
        targets[head] = (tf.constant(onehot), tf.constant(mask))
    optimizer = keras.optimizers.Adam(2e-3)
    variables = model.trainable_variables
    for _ in range(steps):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = 0.0
            for head, (onehot, mask) in targets.items():
                ce = -tf.reduce_sum(onehot * tf.math.log(out[head] + 1e-7), axis=-1)
                loss += tf.reduce_sum(ce * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    # BatchNorm trained on batch statistics; its moving averages (momentum 0.999) have barely
    # moved in a few steps. Set them to this data's statistics so inference matches training.
    norms = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    return model


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, list[dict]]:
    """Generated train (3 per class) and validation (2 per class) trees."""
    root = tmp_path_factory.mktemp("tiny_data")
    return {
        "train": make_image_tree(root / "train", per_class=3, seed=1),
        "validation": make_image_tree(root / "validation", per_class=2, seed=2),
    }


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> Path:
    """A run folder as ``smartbin train`` writes it: model.keras + run.json."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    model = train_tiny_model(tiny_data["train"])
    model.save(run_dir / "model.keras")
    run = {
        "config": {"input_size": TINY_SIZE, "alpha": 0.35, "weights": None, "steps": 10},
        "data": {"sources": ["train"], "train": {"total": len(tiny_data["train"])}},
        "split": tiny_data,
        "history": {},
        "command": "tests/fixtures_model.py (generated shapes)",
    }
    (run_dir / "run.json").write_text(json.dumps(run, indent=2), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run) -> Path:
    """A real bundle converted from ``tiny_run`` by the ``smartbin convert`` code path."""
    from smartbin.convert.pipeline import convert_run

    out = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    convert_run(tiny_run, out, calibration_images=20, edgetpu="off")
    return out
