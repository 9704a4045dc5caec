"""Pure functions over interpreter tensors: quantise the input, read and dequantise outputs.

They take any interpreter object with the TFLite Python API (LiteRT, tflite-runtime or
TensorFlow's own), so the evaluation on a workstation and the bin share them exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def quantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Map uint8 pixels (0..255) to the input tensor's dtype using its quantisation."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:  # not quantised: raw integers
        return values.astype(dtype)
    if scale == 1.0 and zero_point == 0 and values.dtype == dtype:
        # The default uint8-input bundle takes camera bytes as they are: skip the float
        # round trip, which costs more than half of preprocessing on a small CPU.
        return values
    info = np.iinfo(dtype)
    q = np.round(values.astype(np.float32) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Output tensor values as float32 probabilities."""
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def output_indices(interpreter: Any, tensor_names: dict[str, str]) -> dict[str, int]:
    """Head name -> output tensor index.

    Converted two-head models list their outputs in no meaningful order, so outputs are
    found by the names the bundle recorded from the signature, never by position; the
    signature itself is used when it carries the head names.
    """
    details = interpreter.get_output_details()
    by_name = {d["name"]: d["index"] for d in details}
    found: dict[str, int] = {}
    try:
        runner_outputs = interpreter.get_signature_runner().get_output_details()
    except (ValueError, RuntimeError, AttributeError):
        runner_outputs = {}
    for head, tensor in tensor_names.items():
        if head in runner_outputs:
            found[head] = int(runner_outputs[head]["index"])
        elif tensor in by_name:
            found[head] = int(by_name[tensor])
        else:
            raise KeyError(
                f"output '{head}' (tensor '{tensor}') not in model outputs {list(by_name)}"
            )
    return found


def run_model(interpreter: Any, image: np.ndarray, heads: dict[str, int]) -> dict[str, np.ndarray]:
    """One forward pass on one uint8 HxWx3 image -> head name -> float probabilities."""
    input_detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(input_detail["index"], quantize(image[None, ...], input_detail))
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_output_details()}
    return {
        head: dequantize(interpreter.get_tensor(index)[0], details[index])
        for head, index in heads.items()
    }
