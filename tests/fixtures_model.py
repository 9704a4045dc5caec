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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A generated class-per-folder tree: 6 pictures for each of the 7 class folders."""
    root = tmp_path_factory.mktemp("tiny_data") / "shapes"
    make_image_tree(root, per_class=6, seed=1)
    return root


def tiny_train_args(
    data: Path, out: Path, *, cut_layer: str = "block_2_add", views: int = 1, epochs: int = 1
) -> list[str]:
    """``smartbin train`` arguments for a CLI run of seconds: random-init MobileNetV2 0.35 at
    48 px, one head epoch; tests add the option they are about."""
    return [
        "train", str(data), "--out", str(out), "--weights", "none",
        "--input-size", "48", "--alpha", "0.35", "--cut-layer", cut_layer,
        "--views", str(views), "--head-epochs", "1", "--epochs", str(epochs),
        "--batch-size", "8",
    ]  # fmt: skip


def assert_option_refused(argv: list[str], option: str, capsys) -> None:
    """``smartbin ARGV`` stops at argument parsing: exit code 2 and a message naming ``option``."""
    from smartbin.cli import main

    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert option in capsys.readouterr().err


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> Path:
    """A real ``smartbin train`` run (random-init MobileNetV2 0.35 at 64 px, a few epochs)."""
    from smartbin.train.fit import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    config = TrainConfig(
        data=[str(tiny_data)],
        out=str(run_dir),
        weights=None,
        input_size=TINY_SIZE,
        alpha=0.35,
        views=2,
        head_epochs=15,
        epochs=3,
        batch_size=8,
        lr_head=3e-3,
        lr=1e-3,
        patience=15,
        val_fraction=0.25,
        workers=1,
    )
    return train(config)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run) -> Path:
    """A real bundle converted from ``tiny_run`` by the ``smartbin convert`` code path, with
    the optional float32 reference model (the benchmarks time both)."""
    from smartbin.convert.pipeline import convert_run

    out = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    convert_run(tiny_run, out, calibration_images=20, edgetpu="off", float_model=True)
    return out
