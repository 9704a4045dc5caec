"""Tensor adapters: pixels into the input tensor's dtype exactly as its quantisation says."""

from __future__ import annotations

import numpy as np

from smartbin.device.adapters import dequantize, quantize

PIXELS = np.array([[0, 1, 127, 128, 254, 255]], dtype=np.uint8)


def test_uint8_input_with_unit_scale_passes_camera_bytes_unchanged() -> None:
    detail = {"dtype": np.uint8, "quantization": (1.0, 0)}
    assert np.array_equal(quantize(PIXELS, detail), PIXELS)


def test_int8_input_shifts_by_the_zero_point() -> None:
    detail = {"dtype": np.int8, "quantization": (1.0, -128)}
    out = quantize(PIXELS, detail)
    assert out.dtype == np.int8
    assert out.tolist() == [[-128, -127, -1, 0, 126, 127]]


def test_other_scales_round_and_clip_to_the_dtype() -> None:
    detail = {"dtype": np.uint8, "quantization": (0.5, 10)}
    assert quantize(PIXELS, detail).tolist() == [[10, 12, 255, 255, 255, 255]]


def test_float_input_and_dequantised_outputs() -> None:
    assert quantize(PIXELS, {"dtype": np.float32, "quantization": (0.0, 0)}).dtype == np.float32
    probs = dequantize(np.array([0, 128, 255], np.uint8), {"quantization": (1 / 256, 0)})
    assert probs.dtype == np.float32 and np.allclose(probs, [0.0, 0.5, 255 / 256])
