"""The two-head classifier: one MobileNetV2 backbone, two softmax heads, one forward pass.

The exported model takes uint8-valued RGB pixels (0..255, as `prepare_image` makes them) and
scales them inside, so the int8 .tflite takes camera bytes unchanged. For fast training the
backbone can be cut at a layer into a frozen *bottom* (run once per augmented view, its outputs
cached) and a trainable *top*; both share their layers with the exported model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from smartbin.device.labels import BINARY_CLASSES, MATERIAL_CLASSES  # noqa: E402
from smartbin.errors import SmartbinError  # noqa: E402

INPUT_NAME = "image"
FULL_FINE_TUNE = "input"


@dataclass
class TwoHeadModel:
    """The pieces of one model; ``full`` == ``top(bottom(pixels))``, layer for layer."""

    full: keras.Model  # pixels -> {"binary", "material"}: what gets exported
    # pixels -> cut-layer features (frozen); only the scaling when the whole backbone trains
    bottom: keras.Model
    top: keras.Model  # cut-layer features (or scaled pixels) -> {"binary", "material"}
    pooled: keras.Model  # cut-layer features -> pooled backbone features (for the head warm-up)
    heads: keras.Model  # pooled features -> {"binary", "material"}
    backbone_top_layers: list[keras.layers.Layer]  # what fine-tuning unfreezes


def load_backbone(input_size: int, weights: str | Path | None, alpha: float = 1.0) -> keras.Model:
    """MobileNetV2 without its classifier, from a local weights file (never a download)."""
    if weights is not None and not Path(weights).is_file():
        raise SmartbinError(f"backbone weights not found: {weights}")
    try:
        return keras.applications.MobileNetV2(
            input_shape=(input_size, input_size, 3),
            alpha=alpha,
            include_top=False,
            weights=str(weights) if weights is not None else None,
        )
    except ValueError as exc:
        raise SmartbinError(f"cannot load backbone weights {weights}: {exc}") from None


def build_heads(features: int, dropout: float) -> keras.Model:
    pooled = keras.Input((features,), name="pooled")
    x = layers.Dropout(dropout, name="head_dropout")(pooled)
    binary = layers.Dense(len(BINARY_CLASSES), activation="softmax", name="binary")(x)
    material = layers.Dense(len(MATERIAL_CLASSES), activation="softmax", name="material")(x)
    return keras.Model(pooled, {"binary": binary, "material": material}, name="heads")


def build_model(
    input_size: int,
    weights: str | Path | None,
    alpha: float = 1.0,
    dropout: float = 0.2,
    cut_layer: str = FULL_FINE_TUNE,
) -> TwoHeadModel:
    """Build the model and its training pieces; ``cut_layer`` = where the frozen bottom ends."""
    backbone = load_backbone(input_size, weights, alpha)
    if cut_layer == FULL_FINE_TUNE:
        cut_tensor = backbone.input
        bottom_core = None
    else:
        try:
            cut_tensor = backbone.get_layer(cut_layer).output
        except ValueError:
            raise SmartbinError(f"no layer '{cut_layer}' in MobileNetV2") from None
        bottom_core = keras.Model(backbone.input, cut_tensor, name="bottom")
    top_core = keras.Model(cut_tensor, backbone.output, name="backbone_top")
    gap = layers.GlobalAveragePooling2D(name="pool")
    heads = build_heads(int(backbone.output.shape[-1]), dropout)

    pixels = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    scaled = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(pixels)
    cut = bottom_core(scaled) if bottom_core is not None else scaled
    full = keras.Model(pixels, heads(gap(top_core(cut))), name="smartbin")

    top_in = keras.Input(tuple(cut_tensor.shape[1:]), name="features")
    pooled_out = gap(top_core(top_in))
    top = keras.Model(top_in, heads(pooled_out), name="top")
    pooled = keras.Model(top_in, pooled_out, name="pooled")

    # The cached training inputs always come from this: the exported model's own graph up to
    # the cut (with the whole backbone trainable, the scaling alone), so ``top`` sees exactly
    # what ``full`` feeds it (raw 0..255 pixels there trained a student that scored 71 % in
    # training and 15 % once exported).
    bottom = keras.Model(pixels, cut, name="bottom_pixels")
    bottom.trainable = False
    trainable = [layer for layer in top_core.layers if layer.weights]
    return TwoHeadModel(full, bottom, top, pooled, heads, trainable)


# BatchNorm momentum for a backbone trained from scratch. Keras' MobileNetV2 uses 0.999, made
# for ImageNet's million steps: after the few hundred steps of a student run the moving
# statistics are still mostly their initial values, so validation (inference mode) sees
# different features than training did (seen: a student at 64 % training but 20 % validation
# material accuracy).
FROM_SCRATCH_BN_MOMENTUM = 0.9


def set_backbone_trainable(model: TwoHeadModel, trainable: bool, batchnorm: bool = False) -> None:
    """Freeze/unfreeze the top of the backbone. BatchNorm stays in inference mode unless
    ``batchnorm``: fine-tuning pretrained BN statistics on small batches hurts transfer
    learning, but a backbone trained from scratch (a distilled student) needs them learnt,
    with a momentum that lets the moving statistics follow in a short run."""
    for layer in model.backbone_top_layers:
        is_norm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable and (batchnorm or not is_norm)
        if is_norm and trainable and batchnorm:
            layer.momentum = FROM_SCRATCH_BN_MOMENTUM


def load_full_model(path: str | Path) -> keras.Model:
    """A saved float model (``model.keras``) for evaluation and conversion."""
    path = Path(path)
    if not path.is_file():
        raise SmartbinError(f"no such model file: {path}")
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError) as exc:
        raise SmartbinError(f"cannot load Keras model {path}: {exc}") from None
