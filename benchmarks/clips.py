"""Synthetic bin clips: real item photos shown one after another over an empty-bin floor.

Why: the presence detector and the whole pipeline need video where the true number of
items is known. Each item photo (e.g. TrashNet: an item on a white board) is scaled and
centred over an empty-bin background, drops in over a few frames, stays, then leaves an
empty gap before the next one. Optional sensor noise and slow lighting drift make the clip
less perfect than a still image. Written as mp4 with OpenCV's ``mp4v`` codec (OpenCV's
wheels cannot write H.264).

    python -m smartbin.benchmarks.clips OUT.mp4 IMAGE_OR_FOLDER...
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from smartbin.device.preprocess import IMAGE_SUFFIXES, load_image_rgb


def synthetic_bin_background(size: tuple[int, int] = (320, 240), seed: int = 0) -> np.ndarray:
    """An empty bin floor: dark grey plastic with soft blotches, ribs and a vignette (RGB)."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.0, (max(2, height // 24), max(2, width // 24))).astype(np.float32)
    blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 8.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ribs = 6.0 * np.sin(xs / width * 2 * math.pi * 7)  # moulded ribs of a bin floor
    radius = np.hypot((xs - width / 2) / width, (ys - height / 2) / height)
    vignette = -40.0 * radius**2
    grain = rng.normal(0.0, 2.0, (height, width)).astype(np.float32)
    grey = 100.0 + blotches + ribs + vignette + grain
    tint = np.array([0.97, 1.0, 1.04], dtype=np.float32)  # slightly blue-grey plastic
    rgb = grey[..., None] * tint
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _place_item(
    background: np.ndarray, item: np.ndarray, scale: float, offset: tuple[int, int]
) -> np.ndarray:
    """Paste ``item`` scaled to ``scale`` of the frame height, centred, shifted by offset."""
    height, width = background.shape[:2]
    item_h = max(2, round(height * scale))
    item_w = max(2, min(width, round(item.shape[1] * item_h / item.shape[0])))
    resized = cv2.resize(item, (item_w, item_h), interpolation=cv2.INTER_AREA)
    frame = background.copy()
    top = (height - item_h) // 2 + offset[1]
    left = (width - item_w) // 2 + offset[0]
    # Clip to the frame (an item dropping in is partly above it).
    y0, y1 = max(0, top), min(height, top + item_h)
    x0, x1 = max(0, left), min(width, left + item_w)
    if y1 > y0 and x1 > x0:
        frame[y0:y1, x0:x1] = resized[y0 - top : y1 - top, x0 - left : x1 - left]
    return frame


def _frame_counts(
    fps: float, item_seconds: float, empty_seconds: float, entry_seconds: float
) -> tuple[int, int, int]:
    """Frames of the empty gap, of an item's drop-in and of its stay: one rule, so that
    :func:`make_clip`'s progress total matches what :func:`clip_frames` yields."""
    empty_n = max(1, round(empty_seconds * fps))
    entry_n = max(0, round(entry_seconds * fps))
    stay_n = max(1, round(item_seconds * fps) - entry_n)
    return empty_n, entry_n, stay_n


def clip_frames(
    items: Sequence[np.ndarray],
    background: np.ndarray,
    fps: float = 10.0,
    item_seconds: float = 2.0,
    empty_seconds: float = 1.5,
    entry_seconds: float = 0.3,
    item_scale: float = 0.7,
    noise: float = 2.0,
    drift: float = 0.0,
    drift_period_s: float = 20.0,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """RGB frames: empty, then per item: drop-in, stay, empty gap.

    ``noise`` is the sensor noise sigma in grey levels; ``drift`` the amplitude of a slow
    sinusoidal gain change (0.1 = +-10 % brightness over ``drift_period_s``).
    """
    rng = np.random.default_rng(seed)
    height = background.shape[0]
    empty_n, entry_n, stay_n = _frame_counts(fps, item_seconds, empty_seconds, entry_seconds)
    t = 0

    def finish(frame: np.ndarray) -> np.ndarray:
        nonlocal t
        out = frame.astype(np.float32)
        if drift:
            out *= 1.0 + drift * math.sin(2 * math.pi * t / (fps * drift_period_s))
        if noise:
            out += rng.normal(0.0, noise, out.shape).astype(np.float32)
        t += 1
        return np.clip(out, 0, 255).astype(np.uint8)

    for _ in range(empty_n):
        yield finish(background)
    for item in items:
        offset = (int(rng.integers(-10, 11)), int(rng.integers(-8, 9)))
        for step in range(entry_n):  # falls in from above the view
            fall = int(height * (1.0 - (step + 1) / (entry_n + 1)))
            yield finish(_place_item(background, item, item_scale, (offset[0], offset[1] - fall)))
        placed = _place_item(background, item, item_scale, offset)
        for _ in range(stay_n):
            yield finish(placed)
        for _ in range(empty_n):
            yield finish(background)


def write_video(frames: Iterator[np.ndarray], out_path: Path, fps: float, total: int = 0) -> int:
    """Write RGB frames to an mp4 (``mp4v``); returns the number of frames written."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer: cv2.VideoWriter | None = None
    count = 0
    try:
        for frame in tqdm(frames, total=total or None, desc=out_path.name, unit="frame"):
            if writer is None:
                h, w = frame.shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(out_path), fourcc, fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"{out_path}: OpenCV cannot write an mp4v video there")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count


def make_clip(
    item_images: list[Path],
    out_path: Path,
    background: np.ndarray | None = None,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    item_seconds: float = 2.0,
    empty_seconds: float = 1.5,
    entry_seconds: float = 0.3,
    item_scale: float = 0.7,
    noise: float = 2.0,
    drift: float = 0.0,
    seed: int = 0,
) -> int:
    """Write a clip showing each image once (in order); returns the number of items shown."""
    if background is None:
        background = synthetic_bin_background(size, seed)
    elif background.shape[:2] != (size[1], size[0]):
        background = cv2.resize(background, size, interpolation=cv2.INTER_AREA)
    items = [load_image_rgb(path) for path in item_images]
    empty_n, entry_n, stay_n = _frame_counts(fps, item_seconds, empty_seconds, entry_seconds)
    frames = clip_frames(
        items,
        background,
        fps=fps,
        item_seconds=item_seconds,
        empty_seconds=empty_seconds,
        entry_seconds=entry_seconds,
        item_scale=item_scale,
        noise=noise,
        drift=drift,
        seed=seed,
    )
    write_video(frames, out_path, fps, total=empty_n + (entry_n + stay_n + empty_n) * len(items))
    return len(items)


def _expand(paths: Sequence[str]) -> list[Path]:
    images: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            images += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            images.append(path)
    return images


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smartbin.benchmarks.clips",
        description="Write a synthetic bin clip: item photos over an empty-bin floor.",
    )
    parser.add_argument("out", type=Path, help="output .mp4")
    parser.add_argument("images", nargs="+", help="item images (or folders of them), in order")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--item-seconds", type=float, default=2.0)
    parser.add_argument("--empty-seconds", type=float, default=1.5)
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise sigma")
    parser.add_argument("--drift", type=float, default=0.1, help="slow lighting drift amplitude")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images = _expand(args.images)
    missing = [str(p) for p in images if not p.is_file()]
    if missing or not images:
        print(f"error: no such image: {', '.join(missing) or 'none given'}", file=sys.stderr)
        return 2
    from smartbin.errors import ImageReadError

    try:
        count = make_clip(
            images,
            args.out,
            size=(args.width, args.height),
            fps=args.fps,
            item_seconds=args.item_seconds,
            empty_seconds=args.empty_seconds,
            noise=args.noise,
            drift=args.drift,
            seed=args.seed,
        )
    except (ImageReadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {count} items, {args.out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
