"""Full-integer int8 post-training quantisation of the two-head Keras model.

Why full-integer: the bin's CPU path (XNNPACK int8 kernels) and the Coral Edge TPU both need
every op in int8; a single float op left behind silently runs on the CPU in float (or splits
the Edge TPU graph). So conversion ends with :func:`integer_op_report` and refuses a model
with any float tensor left.

``TFLiteConverter.from_keras_model`` is the converter entry that works with Keras 3
(``from_concrete_functions`` does not). TensorFlow is imported inside the functions that need
it; the op check and the signature reading use the device runtime only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartbin.errors import SmartbinError

log = logging.getLogger(__name__)

IO_TYPES = ("uint8", "int8")
# Tensor types an op of a full-integer model may touch: int8 activations/weights, uint8 at
# the model's edges (QUANTIZE ops map them to int8), int32 biases and shape constants.
INTEGER_DTYPES = frozenset({np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)})


class ConversionError(SmartbinError):
    """The converter failed or produced a model that is not what the bin needs."""


@dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and quantisation of one model input/output (goes into the manifest)."""

    tensor: str
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "dtype": self.dtype,
            "quantization": {"scale": self.scale, "zero_point": self.zero_point},
        }


def quantize_keras_model(
    model: Any,
    representative: Callable[[], Iterator[list[np.ndarray]]],
    io_type: str | None = "uint8",
) -> bytes:
    """Convert ``model`` to a full-integer int8 TFLite flatbuffer.

    ``representative`` yields ``[float32 batch of 1 image]`` lists (pixels 0..255, as
    ``prepare_image`` makes them) for calibration; ``io_type`` is the dtype of the model's
    input and outputs (uint8 by default: camera bytes in, no float anywhere). ``None`` keeps
    float input and outputs around the integer ops: training uses that to see what the int8
    bottom of the backbone computes (``smartbin train --int8-bottom``); a bundle never does.
    """
    if io_type is not None and io_type not in IO_TYPES:
        raise ConversionError(f"--io must be one of {', '.join(IO_TYPES)}, got {io_type!r}")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = representative
    if io_type is not None:
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
    return _run_converter(converter)


def float_keras_model(model: Any) -> bytes:
    """A plain float32 conversion (no quantisation): the reference that the op check rejects."""
    import tensorflow as tf

    return _run_converter(tf.lite.TFLiteConverter.from_keras_model(model))


def _run_converter(converter: Any) -> bytes:
    # Keras' export prints a long signature listing to stdout; keep it out of the user's
    # terminal unless the conversion fails.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            # TensorFlow asks for the mean/std "statistics" of the old quantised-input
            # workflow whenever the input is int8/uint8; post-training quantisation takes the
            # input's scale from the representative images instead, so the warning is noise.
            warnings.filterwarnings("ignore", "Statistics for quantized inputs", UserWarning)
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises many types; all mean "did not convert"
        log.debug("converter output:\n%s", captured.getvalue())
        raise ConversionError(f"TFLite conversion failed: {type(exc).__name__}: {exc}") from None


def litert_interpreter(model: bytes | Path) -> Any:
    """A LiteRT interpreter (tensors allocated) over a flatbuffer (bytes or file) for the
    conversion-side checks and the int8 bottom of training; the bin builds its own through
    :func:`smartbin.device.runtime.make_interpreter` (threads, delegates)."""
    from ai_edge_litert import interpreter as litert

    if isinstance(model, bytes | bytearray):
        interp = litert.Interpreter(model_content=bytes(model))
    else:
        interp = litert.Interpreter(model_path=str(model))
    interp.allocate_tensors()
    return interp


def integer_op_report(model: bytes | Path) -> list[str]:
    """Every op that reads or writes a non-integer tensor, as readable lines (empty = clean).

    Read from the flatbuffer through the interpreter's op and tensor tables: each op's input and
    output tensor types must be int8/uint8 (activations, weights) or int32 (biases, shapes).
    """
    interp = litert_interpreter(model)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    offending: list[str] = []
    for op in interp._get_ops_details():
        bad = []
        for role, indices in (("in", op["inputs"]), ("out", op["outputs"])):
            for index in indices:
                if index < 0:  # optional input not given
                    continue
                detail = tensors[int(index)]
                if np.dtype(detail["dtype"]) not in INTEGER_DTYPES:
                    bad.append(f"{role} '{detail['name']}' {np.dtype(detail['dtype']).name}")
        if bad:
            offending.append(f"op #{op['index']} {op['op_name']}: " + ", ".join(bad))
    return offending


def check_integer_only(model: bytes | Path) -> None:
    """Raise :class:`ConversionError` listing float ops/tensors if the model is not all-integer."""
    offending = integer_op_report(model)
    if offending:
        shown = "; ".join(offending[:5])
        more = f" (+{len(offending) - 5} more)" if len(offending) > 5 else ""
        raise ConversionError(
            f"converted model is not full-integer: {len(offending)} op(s) touch float "
            f"tensors: {shown}{more}"
        )


def io_tensors(
    model: bytes | Path, heads: Iterable[str]
) -> tuple[TensorInfo, dict[str, TensorInfo]]:
    """The input tensor and, per head, the output tensor found by its signature name.

    Converted two-head models list outputs in no meaningful order, so each head's tensor is
    looked up by the signature's output name, never by position.
    """
    interp = litert_interpreter(model)
    runner = interp.get_signature_runner()
    signature_outputs = runner.get_output_details()
    by_index = {d["index"]: d for d in interp.get_output_details()}
    outputs: dict[str, TensorInfo] = {}
    for head in heads:
        if head not in signature_outputs:
            raise ConversionError(
                f"converted model has no output named '{head}' in its signature "
                f"(has {sorted(signature_outputs)})"
            )
        outputs[head] = _info(by_index[signature_outputs[head]["index"]])
    return _info(interp.get_input_details()[0]), outputs


def _info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail["quantization"]
    return TensorInfo(
        tensor=str(detail["name"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )
