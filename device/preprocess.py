"""THE preprocessing: the single function that turns a picture into model input.

Training, conversion (representative data), evaluation and the bin all call
:func:`prepare_image`, so colour order, resizing and scaling cannot drift apart:

* colour order **RGB** (OpenCV frames are converted once, at the frame source);
* resize so the **shorter side** equals the input size, then **centre crop** to a square;
  or (:data:`RESIZE_STRETCH`) the **whole frame** to the square, aspect not kept. The rule
  is part of the contract and written into every bundle (``resize``): :data:`RESIZE_AREA`
  (the default, and what runs and bundles made before the rule was recorded used),
  :data:`RESIZE_BILINEAR` (``smartbin train --resize bilinear``) or :data:`RESIZE_STRETCH`
  (``--resize stretch``);
* pixels stay **uint8 0..255**; scaling to [-1, 1] (MobileNetV2's convention) happens
  *inside* the model, so an int8 .tflite with uint8 input takes camera bytes as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smartbin.errors import ImageReadError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: Area interpolation when shrinking, bilinear when enlarging. Exact, but OpenCV's area
#: resize by a non-integer factor (a 320x240 frame to 299x224) took 0.65 ms on the
#: development machine, a third of the model's own invoke time.
RESIZE_AREA = "shorter_side_then_centre_crop"
#: Box-average by the integer factor ``shorter side // size`` (when it is 2 or more), then
#: bilinear to the size: 0.2 ms for the same frame. Both steps are OpenCV's bit-exact
#: kernels (integer box average; ``INTER_LINEAR_EXACT``), so x86 and ARM boards compute the
#: same pixels; the box step keeps bilinear's scale above 1/2, where it skips no pixels.
RESIZE_BILINEAR = "shorter_side_box_bilinear_then_centre_crop"
#: The whole frame, area-interpolated to ``size`` x ``size``: nothing is cropped away, so an
#: item at the edge of a 4:3 frame (TrashNet's photos are 3:4; a bin camera's view is
#: wider than the item) stays in view, at the price of squashing it by the aspect ratio.
#: What the Coral classification examples do with camera frames.
RESIZE_STRETCH = "whole_frame_area"
RESIZE_RULES = (RESIZE_BILINEAR, RESIZE_AREA, RESIZE_STRETCH)
#: The rule new training runs use (and so the bundles converted from them). Bilinear is 3x
#: faster on the bin, but the one full run with it (the shipped recipe, 2026-12-04) lost
#: 3.6 points on TrashNet to int8 (float 91.1 -> int8 87.6; area: 90.4 -> 89.2). With the
#: top trained on the int8 bottom (2026-12-06, 40 views) bilinear's int8 model matched
#: area's best on TrashNet (91.4 %) but scored lower on web images (95.4 % vs 96.7 %), so
#: area stays the default.
DEFAULT_RESIZE = RESIZE_AREA
#: ``--resize`` names on the command line.
RESIZE_NAMES = {"bilinear": RESIZE_BILINEAR, "area": RESIZE_AREA, "stretch": RESIZE_STRETCH}


def check_resize(rule: object) -> str:
    """``rule`` if this version knows it; ValueError naming the known ones otherwise."""
    if rule not in RESIZE_RULES:
        raise ValueError(f"unknown resize rule {rule!r}; this version knows {list(RESIZE_RULES)}")
    return str(rule)


def resize_of_run(config: dict) -> str:
    """The resize rule a training run used (``run.json``'s ``config``); runs written before
    the rule was recorded used :data:`RESIZE_AREA`."""
    return check_resize(config.get("resize", RESIZE_AREA))


@dataclass(frozen=True)
class PreprocessSpec:
    """How pictures become model input; written into every bundle and read back by the bin."""

    size: int = 224
    colour_order: str = "RGB"
    resize: str = DEFAULT_RESIZE
    pixel_range: tuple[int, int] = (0, 255)
    scaling_in_model: str = "x / 127.5 - 1"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pixel_range"] = list(self.pixel_range)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        spec = cls(
            size=int(data["size"]),
            colour_order=str(data["colour_order"]),
            resize=str(data["resize"]),
            pixel_range=tuple(data["pixel_range"]),  # type: ignore[arg-type]
            scaling_in_model=str(data["scaling_in_model"]),
        )
        if spec.colour_order != "RGB" or spec.resize not in RESIZE_RULES:
            raise ValueError(
                f"unsupported preprocessing {spec.colour_order}/{spec.resize}; "
                f"this version handles RGB with {' or '.join(RESIZE_RULES)}"
            )
        return spec


def prepare_image(rgb: np.ndarray, size: int, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """Shorter side to ``size`` by the ``resize`` rule, centre crop to ``size`` x ``size``
    (or the whole frame to that square, :data:`RESIZE_STRETCH`); uint8 RGB in, uint8 out.
    ``resize`` must be the rule the model was trained with (its bundle's
    ``preprocessing.resize``)."""
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")
    rule = check_resize(resize)
    if rule == RESIZE_STRETCH:
        return _stretch(rgb, size)
    if rule == RESIZE_BILINEAR:
        rgb = _box_reduce(rgb, min(rgb.shape[:2]) // size)
        shrink, enlarge = cv2.INTER_LINEAR_EXACT, cv2.INTER_LINEAR_EXACT
    else:
        shrink, enlarge = cv2.INTER_AREA, cv2.INTER_LINEAR
    height, width = rgb.shape[:2]
    scale = size / min(height, width)
    new_w = max(size, round(width * scale))
    new_h = max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = shrink if scale < 1 else enlarge
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def _stretch(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole frame to ``size`` x ``size``: area interpolation when neither side is under
    ``size`` (only shrinking), bilinear otherwise, as :data:`RESIZE_AREA` chooses by its
    shorter side."""
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(rgb)
    interpolation = cv2.INTER_AREA if min(height, width) >= size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def _box_reduce(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks. The rows and columns that do not fill a block
    are cut evenly from both edges first: OpenCV's fast integer path (and its exactness)
    needs the size to be a multiple of the factor."""
    if factor < 2:
        return rgb
    height, width = rgb.shape[:2]
    top, left = (height % factor) // 2, (width % factor) // 2
    rgb = rgb[top : top + height - height % factor, left : left + width - width % factor]
    out_size = (rgb.shape[1] // factor, rgb.shape[0] // factor)
    return cv2.resize(rgb, out_size, interpolation=cv2.INTER_AREA)


#: Pillow modes of 16-bit (and 32-bit integer) greyscale files, e.g. 16-bit PNGs.
WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _wide_grey_to_rgb(values: np.ndarray) -> np.ndarray:
    """16-bit grey to 8-bit RGB by scaling (top byte). Pillow's own ``convert("RGB")`` clips
    instead, which turns a normally exposed 16-bit picture almost white."""
    grey = (np.clip(values.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def load_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB, honouring EXIF orientation.

    Raises :class:`ImageReadError` (path + reason) for anything that is not a readable image,
    so callers can report and skip it.
    """
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in WIDE_GREY_MODES:
                return _wide_grey_to_rgb(np.asarray(image))
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(path, f"cannot decode image ({exc})") from None


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV gives BGR; everything downstream of a frame source is RGB."""
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
