"""The calibration ("representative") images for int8 quantisation.

Drawn from the TRAINING split only (validation images must not shape the quantisation that
validation then measures), stratified over the folder labels so every class sets the ranges,
and deterministic (seeded), so converting the same run twice gives the same model.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from smartbin.device.preprocess import load_image_rgb, prepare_image
from smartbin.errors import ImageReadError, SmartbinError
from smartbin.train.evaluate import Labelled

log = logging.getLogger(__name__)


def stratum(item: Labelled) -> tuple[int | None, int | None]:
    return (item.binary, item.material)


def select_representative(items: Sequence[Labelled], n: int, seed: int = 0) -> list[Labelled]:
    """Up to ``n`` items, round-robin over label strata (each stratum in a seeded order)."""
    if n <= 0:
        raise SmartbinError(f"--calibration-images must be positive, got {n}")
    groups: dict[tuple[int | None, int | None], list[Labelled]] = defaultdict(list)
    for item in sorted(items, key=lambda i: str(i.path)):
        groups[stratum(item)].append(item)
    rng = np.random.default_rng(seed)
    queues = []
    for key in sorted(groups, key=lambda k: (k[0] is None, k[0] or 0, k[1] is None, k[1] or 0)):
        members = groups[key]
        order = rng.permutation(len(members))
        queues.append([members[i] for i in order])
    chosen: list[Labelled] = []
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < n:
                chosen.append(queue[depth])
        depth += 1
    return chosen


def load_prepared(items: Sequence[Labelled], size: int, resize: str, desc: str) -> np.ndarray:
    """The items' pictures through THE preprocessing, as one uint8 (N, size, size, 3) array.

    Unreadable files are logged and left out (the count says so); none readable is an error.
    """
    images = []
    for item in tqdm(items, desc=desc, unit="img", leave=False):
        try:
            images.append(prepare_image(load_image_rgb(item.path), size, resize))
        except ImageReadError as exc:
            log.warning("skipping unreadable calibration image %s", exc)
    if not images:
        raise SmartbinError(f"no readable images for {desc} (of {len(items)} listed)")
    return np.stack(images)


def representative_dataset(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's callback: one float32 image (0..255) per step, as the model takes it."""

    def generate() -> Iterator[list[np.ndarray]]:
        for image in tqdm(images, desc="calibrating", unit="img", leave=False):
            yield [image[None, ...].astype(np.float32)]

    return generate
