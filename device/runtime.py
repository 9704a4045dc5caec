"""Creating a TFLite interpreter: LiteRT or tflite-runtime, Edge TPU delegate when possible.

Kept apart from the tensor adapters (``smartbin.device.adapters``), as pycoral does, so the
classifier works the same whichever runtime made the interpreter.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

from smartbin.errors import BundleError, SmartbinError

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"


def runtime_module() -> tuple[Any, str]:
    """The interpreter module of whichever runtime is installed (LiteRT first)."""
    try:
        from ai_edge_litert import interpreter as litert

        return litert, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tflite_rt

        return tflite_rt, "tflite-runtime"
    except ImportError:
        raise BundleError(
            "no TFLite runtime installed: pip install 'smartbin[device]' (ai-edge-litert) "
            "or tflite-runtime"
        ) from None


def load_edgetpu_delegate() -> Any | None:
    """The Edge TPU delegate, or None (logged) when libedgetpu or the device is absent.

    The library is opened with ctypes first: the runtimes' ``Delegate`` raises before it
    sets its ``_library`` attribute when the library is missing, and its ``__del__`` then
    prints an "Exception ignored ... AttributeError" traceback on stderr at garbage
    collection, on every ``smartbin bench`` and every bin given an Edge TPU bundle
    without a Coral.
    """
    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError as exc:
        log.info("Edge TPU not available (%s); using the CPU model", exc)
        return None
    module, _ = runtime_module()
    try:
        return module.load_delegate(EDGETPU_LIBRARY)
    except (OSError, ValueError, RuntimeError) as exc:
        log.info("Edge TPU not available (%s); using the CPU model", exc)
        return None


class RuntimeFeatureUnavailable(SmartbinError):
    """The installed runtime cannot do what was asked (e.g. switch XNNPACK off)."""


def xnnpack_switch_available() -> bool:
    """Whether the runtime can build an interpreter without its default XNNPACK delegate.

    LiteRT and tflite-runtime >= 2.5 have ``OpResolverType``; older runtimes always apply it.
    """
    module, _ = runtime_module()
    return hasattr(module, "OpResolverType") and hasattr(
        module.OpResolverType, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    )


def make_interpreter(
    model_path: Path,
    num_threads: int | None = None,
    delegate: Any | None = None,
    xnnpack: bool = True,
) -> tuple[Any, str]:
    """A ready (tensors allocated) interpreter and the runtime's name.

    ``xnnpack=False`` builds it without the runtime's default delegate (XNNPACK), i.e. with
    the plain builtin kernels; the bin never does this, the benchmarks compare both.
    Raises :class:`RuntimeFeatureUnavailable` when the runtime cannot switch it off.
    """
    module, name = runtime_module()
    delegates = [delegate] if delegate is not None else None
    options: dict[str, Any] = {}
    if not xnnpack:
        if not xnnpack_switch_available():
            raise RuntimeFeatureUnavailable(
                f"{name} cannot build an interpreter without XNNPACK (no OpResolverType)"
            )
        options["experimental_op_resolver_type"] = (
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    try:
        interpreter = module.Interpreter(
            model_path=str(model_path),
            num_threads=num_threads,
            experimental_delegates=delegates,
            **options,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise BundleError(f"{model_path}: the runtime cannot load this model ({exc})") from None
    return interpreter, name
