"""Writing a model bundle: the int8 model(s) plus the manifest the bin verifies on load.

The manifest is built here and validated/written by ``smartbin.device.bundle.write_manifest``,
so the writer and the loader share one schema. A written bundle is loaded back before this
returns: a bundle the bin would refuse is never left behind as if it were good.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from smartbin.convert.quantize import TensorInfo
from smartbin.device.bundle import (
    MANIFEST_NAME,
    SCHEMA,
    ModelBundle,
    load_bundle,
    sha256_file,
    write_manifest,
)
from smartbin.device.labels import BINARY_CLASSES, HEADS, MATERIAL_CLASSES
from smartbin.device.preprocess import PreprocessSpec
from smartbin.errors import SmartbinError

MODEL_FILE = "model.tflite"
EDGETPU_FILE = "model_edgetpu.tflite"
# The float32 model, only with ``convert --float-model``: the reference the benchmarks time
# against the int8 one. The bin never runs it (it is several times bigger and slower).
FLOAT_FILE = "model_float.tflite"


def default_model_version(model_sha256: str, now: dt.datetime | None = None) -> str:
    """``<UTC date>-<first 8 of sha256>``: sortable by date, unique per model file."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%d}-{model_sha256[:8]}"


def build_manifest(
    *,
    model_path: Path,
    input_info: TensorInfo,
    outputs: dict[str, TensorInfo],
    input_size: int,
    resize: str,
    unknown_threshold: float,
    training: dict[str, Any],
    metrics: dict[str, Any],
    edgetpu_path: Path | None = None,
    float_path: Path | None = None,
    model_version: str | None = None,
    created: dt.datetime | None = None,
) -> dict[str, Any]:
    """The ``smartbin-bundle/1`` manifest for a model file that already sits in its folder."""
    created = created or dt.datetime.now(dt.UTC)
    sha = sha256_file(model_path)
    model: dict[str, Any] = {
        "file": model_path.name,
        "sha256": sha,
        "size_bytes": model_path.stat().st_size,
    }
    if edgetpu_path is not None:
        model["edgetpu_file"] = edgetpu_path.name
        model["edgetpu_sha256"] = sha256_file(edgetpu_path)
        model["edgetpu_size_bytes"] = edgetpu_path.stat().st_size
    if float_path is not None:
        model["float_file"] = float_path.name
        model["float_sha256"] = sha256_file(float_path)
        model["float_size_bytes"] = float_path.stat().st_size
    missing = [head for head in HEADS if head not in outputs]
    if missing:
        raise SmartbinError(f"no output tensor recorded for head(s) {', '.join(missing)}")
    input_dict = input_info.to_dict()
    return {
        "schema": SCHEMA,
        "model_version": model_version or default_model_version(sha, created),
        "created": created.isoformat(timespec="seconds"),
        "model": model,
        "labels": {"binary": list(BINARY_CLASSES), "material": list(MATERIAL_CLASSES)},
        "input": {
            "size": int(input_size),
            "tensor": input_dict["tensor"],
            "dtype": input_dict["dtype"],
            "quantization": input_dict["quantization"],
        },
        "outputs": {head: outputs[head].to_dict() for head in HEADS},
        "preprocessing": PreprocessSpec(size=int(input_size), resize=resize).to_dict(),
        "decision": {"unknown_threshold": float(unknown_threshold)},
        "training": training,
        "metrics": metrics,
    }


def check_output_folder(out_dir: Path) -> None:
    """Refuse an output that is a file or a folder holding anything but a bundle, so a typo
    in ``--out`` can neither mix a model into unrelated files nor replace them."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SmartbinError(f"bundle output {out_dir} exists and is not a folder")
    if out_dir.is_dir():
        allowed = {MODEL_FILE, EDGETPU_FILE, FLOAT_FILE, MANIFEST_NAME}
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in allowed)
        if foreign:
            raise SmartbinError(
                f"bundle output {out_dir} already holds other files "
                f"({', '.join(foreign[:3])}); choose an empty or new folder"
            )


def write_bundle(
    out_dir: Path,
    tflite: bytes,
    *,
    input_info: TensorInfo,
    outputs: dict[str, TensorInfo],
    input_size: int,
    resize: str,
    unknown_threshold: float = 0.5,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    edgetpu_path: Path | None = None,
    float_tflite: bytes | None = None,
    model_version: str | None = None,
) -> ModelBundle:
    """Write ``model.tflite`` (+ Edge TPU file, + float model) and ``bundle.json``; verify.

    Refuses a folder that holds something other than a bundle (:func:`check_output_folder`).
    """
    check_output_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model_path.write_bytes(tflite)
    stale = out_dir / EDGETPU_FILE
    edgetpu_target = None
    if edgetpu_path is not None:
        edgetpu_target = stale
        if edgetpu_path.resolve() != stale.resolve():
            shutil.copyfile(edgetpu_path, stale)
    elif stale.exists():
        stale.unlink()  # an Edge TPU file from an earlier model would not match this one
    float_target = out_dir / FLOAT_FILE
    if float_tflite is not None:
        float_target.write_bytes(float_tflite)
    elif float_target.exists():
        float_target.unlink()
    manifest = build_manifest(
        model_path=model_path,
        input_info=input_info,
        outputs=outputs,
        input_size=input_size,
        resize=resize,
        unknown_threshold=unknown_threshold,
        training=training or {},
        metrics=metrics or {},
        edgetpu_path=edgetpu_target,
        float_path=float_target if float_tflite is not None else None,
        model_version=model_version,
    )
    write_manifest(out_dir, manifest)
    return load_bundle(out_dir)
