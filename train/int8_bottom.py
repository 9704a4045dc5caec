"""The frozen bottom of the backbone as the bin will run it: int8.

Why: with the backbone cut at ``block_5_add``, float vs int8 on the same validation images
showed that the whole int8 loss comes from the frozen ImageNet bottom, not from the
fine-tuned top (run ``v6-256``, TrashNet material: float 90.9 %; int8 bottom + float top
88.8 %; float bottom + int8 top 91.6 %). The bottom never changes during training, so its
int8 version is known before training starts: caching the training views through it lets the
top and the heads learn on the features the int8 model will really feed them (a
quantisation-aware top, without fake-quant layers that Keras 3 does not have).

The calibration is ``smartbin convert``'s: the same stratified choice of training images, so
with the same count the bottom's ranges come out as they will in the bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from smartbin.errors import SmartbinError


class Int8Bottom:
    """An int8 TFLite model of the bottom with float input (pixels 0..255) and float output."""

    def __init__(self, flatbuffer: bytes) -> None:
        from smartbin.convert.quantize import litert_interpreter

        self._interpreter = litert_interpreter(flatbuffer)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0
        self.grid = self._output_grid()

    def _output_grid(self) -> tuple[float, int] | None:
        """``(scale, zero_point)`` of the int8 tensor that the float output is dequantised
        from: every output value is ``scale * (code - zero_point)`` for an int8 code, so the
        training cache can hold the codes (see :class:`smartbin.train.view_cache.ViewCache`).
        None when the output is not one DEQUANTIZE of an int8 tensor."""
        tensors = {d["index"]: d for d in self._interpreter.get_tensor_details()}
        for op in self._interpreter._get_ops_details():
            if op["op_name"] == "DEQUANTIZE" and self._output in op["outputs"]:
                source = tensors[op["inputs"][0]]
                scale, zero_point = source["quantization"]
                if source["dtype"] == np.int8 and scale > 0:
                    return float(scale), int(zero_point)
        return None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Bottom features of a float32 (N, H, W, 3) batch of 0..255 pixels."""
        if pixels.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(pixels.shape))
            self._interpreter.allocate_tensors()
            self._batch = pixels.shape[0]
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(pixels, np.float32))
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output))


def quantize_bottom(
    bottom: Any, images: np.ndarray, samples: Sequence[Any], calibration_images: int
) -> Int8Bottom:
    """``bottom`` (pixels -> cut) as int8, calibrated on ``calibration_images`` of the training
    ``images`` (aligned with ``samples``), chosen as ``smartbin convert`` chooses them."""
    try:
        import tensorflow  # noqa: F401  (the converter; Keras on JAX alone cannot convert)
    except ImportError:
        raise SmartbinError(
            "--int8-bottom needs TensorFlow (the TFLite converter): install .[train]"
        ) from None
    from smartbin.convert.quantize import quantize_keras_model
    from smartbin.convert.representative import representative_dataset, select_representative

    index = {id(sample): i for i, sample in enumerate(samples)}
    chosen = select_representative(list(samples), calibration_images)
    calibration = images[[index[id(sample)] for sample in chosen]]
    return Int8Bottom(quantize_keras_model(bottom, representative_dataset(calibration), None))
