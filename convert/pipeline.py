"""``smartbin convert``: training run folder -> verified int8 bundle with measured accuracy.

Order matters: calibrate on the TRAINING split, check every op is integer, (optionally) compile
for the Edge TPU, write the bundle into a staging folder, measure float (Keras) against int8
(the bin's own Classifier on the written bundle) on the VALIDATION split, store that in the
manifest, and only then move the finished bundle to ``--out``. An interrupted or failed
conversion never leaves a half-written bundle where the bin would look for one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartbin.convert.bundle_writer import check_output_folder, write_bundle
from smartbin.convert.edgetpu import compile_edgetpu
from smartbin.convert.quantize import (
    check_integer_only,
    float_keras_model,
    io_tensors,
    quantize_keras_model,
)
from smartbin.convert.representative import (
    load_prepared,
    representative_dataset,
    select_representative,
)
from smartbin.device.bundle import ModelBundle, load_bundle
from smartbin.device.labels import HEADS
from smartbin.device.preprocess import resize_of_run
from smartbin.errors import SmartbinError
from smartbin.train.evaluate import (
    BundlePredictor,
    KerasPredictor,
    accuracy_drop,
    agreement,
    compute_report,
    labelled_from_entries,
    per_head_counts,
    predict_items,
)

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
EDGETPU_MODES = ("auto", "off")


@dataclass
class ConvertResult:
    bundle: ModelBundle
    metrics: dict[str, Any]


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run's ``run.json``, checked for what conversion needs (errors name key and file)."""
    if not run_dir.is_dir():
        raise SmartbinError(f"run folder {run_dir} does not exist")
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        raise SmartbinError(f"{run_dir} is not a training run (no {RUN_FILE})")
    if not (run_dir / MODEL_FILE).is_file():
        raise SmartbinError(f"{run_dir} is not a finished training run (no {MODEL_FILE})")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmartbinError(f"{run_file}: unreadable ({exc})") from None
    split = run.get("split") if isinstance(run, dict) else None
    if not isinstance(split, dict) or not isinstance(split.get("train"), list):
        raise SmartbinError(f"{run_file}: missing key 'split.train' (list of images)")
    if not isinstance(split.get("validation", []), list):
        raise SmartbinError(f"{run_file}: key 'split.validation' must be a list")
    for side in ("train", "validation"):
        for n, entry in enumerate(split.get(side, [])):
            if not isinstance(entry, dict) or "path" not in entry:
                raise SmartbinError(f"{run_file}: split.{side}[{n}] has no 'path'")
    return run


#: Said with the drop of a run trained with ``--int8-bottom``: its top was fitted to the int8
#: bottom's features, so its float model is not the reference the drop assumes.
INT8_BOTTOM_NOTE = (
    "this run was trained on the int8 bottom (--int8-bottom): its float model is not a "
    "reference for the int8 one, compare int8 figures between runs instead of this drop"
)


def _strip_curves(report: dict[str, Any]) -> dict[str, Any]:
    """The report without ROC points: the manifest keeps numbers, not plots."""
    out = dict(report)
    if "binary" in out:
        out["binary"] = {k: v for k, v in out["binary"].items() if k != "roc"}
    return out


def measure(float_model: Any, bundle: ModelBundle, items: list[Any]) -> dict[str, Any]:
    """Float vs int8 on the same images through the same preprocessing and metrics."""
    float_predictor = KerasPredictor(
        float_model,
        unknown_threshold=bundle.unknown_threshold,
        resize=bundle.preprocess.resize,
    )
    float_set = predict_items(float_predictor, items, desc="float model")
    int8_set = predict_items(BundlePredictor(bundle), items, desc="int8 model")
    float_report = compute_report(float_set, bundle.unknown_threshold)
    int8_report = compute_report(int8_set, bundle.unknown_threshold)
    return {
        "split": "validation",
        "n": len(int8_set.items),
        "unreadable": int8_set.failed,
        "float": _strip_curves(float_report),
        "int8": _strip_curves(int8_report),
        "drop": accuracy_drop(float_report, int8_report),
        "agreement": agreement(float_set, int8_set),
    }


def format_drop(metrics: dict[str, Any]) -> str:
    """One table: float and int8 accuracy and the drop, per head and per source."""
    if "float" not in metrics:
        return "no validation images: accuracy not measured"
    lines = [f"validation images: {metrics['n']}"]
    lines.append(f"  {'':<24}{'float':>8}{'int8':>8}{'drop':>8}")

    def row(name: str, ref: dict | None, new: dict | None) -> None:
        if not ref or not new or ref.get("accuracy") is None:
            return
        a, b = ref["accuracy"], new["accuracy"]
        lines.append(f"  {name:<24}{100 * a:7.1f}%{100 * b:7.1f}%{100 * (a - b):+7.1f}%")

    for key in (*HEADS, "decision"):
        row(key, metrics["float"].get(key), metrics["int8"].get(key))
    if len(metrics["float"].get("per_source", {})) > 1:
        for source, entry in metrics["float"]["per_source"].items():
            other = metrics["int8"]["per_source"].get(source, {})
            for key in HEADS:
                row(f"{source}/{key}", entry.get(key), other.get(key))
    if metrics.get("note"):
        lines.append(f"note: {metrics['note']}")
    return "\n".join(lines)


def convert_run(
    run_dir: Path | str,
    out_dir: Path | str,
    *,
    calibration_images: int = 300,
    io_type: str = "uint8",
    edgetpu: str = "auto",
    unknown_threshold: float = 0.5,
    model_version: str | None = None,
    command: str | None = None,
    float_model: bool = False,
) -> ConvertResult:
    """Convert the run's float model into a verified bundle at ``out_dir``."""
    run_dir, out_dir = Path(run_dir).expanduser(), Path(out_dir).expanduser()
    if edgetpu not in EDGETPU_MODES:
        raise SmartbinError(f"--edgetpu must be one of {', '.join(EDGETPU_MODES)}")
    if not 0.0 <= unknown_threshold <= 1.0:
        raise SmartbinError(f"--unknown-threshold must be in [0, 1], got {unknown_threshold}")
    run = read_run(run_dir)
    check_output_folder(out_dir)
    train_items = labelled_from_entries(run["split"]["train"])
    val_items = labelled_from_entries(run["split"].get("validation", []))
    if not train_items:
        raise SmartbinError(f"{run_dir / RUN_FILE}: split.train is empty (nothing to calibrate)")

    from smartbin.train.model import load_full_model

    model = load_full_model(run_dir / MODEL_FILE)
    size = int(model.input_shape[1])
    try:
        resize = resize_of_run(run.get("config") or {})
    except ValueError as exc:
        raise SmartbinError(f"{run_dir / RUN_FILE}: config.resize: {exc}") from None
    chosen = select_representative(train_items, calibration_images)
    images = load_prepared(chosen, size, resize, desc="calibration images")
    log.info("calibrating on %d training images at %d px (%s)", len(images), size, resize)
    tflite = quantize_keras_model(model, representative_dataset(images), io_type)
    check_integer_only(tflite)
    input_info, outputs = io_tensors(tflite, HEADS)
    float_tflite = float_keras_model(model) if float_model else None

    stage = out_dir.with_name(f".{out_dir.name}.partial")
    if stage.exists():
        shutil.rmtree(stage)
    try:
        with tempfile.TemporaryDirectory(prefix="smartbin-convert-") as tmp:
            edgetpu_path = None
            if edgetpu == "auto":
                plain = Path(tmp) / "model.tflite"
                plain.write_bytes(tflite)
                edgetpu_path = compile_edgetpu(plain, Path(tmp))
            training = {
                "run_dir": str(run_dir),
                "command": run.get("command"),
                "config": run.get("config", {}),
                "data": run.get("data", {}),
                "calibration": {
                    "split": "train",
                    "images": int(len(images)),
                    "per_head": per_head_counts(chosen),
                },
                "conversion": {"io": io_type, "command": command},
            }
            common = {
                "input_info": input_info,
                "outputs": outputs,
                "input_size": size,
                "resize": resize,
                "unknown_threshold": unknown_threshold,
                "training": training,
                "edgetpu_path": edgetpu_path,
                "float_tflite": float_tflite,
            }
            bundle = write_bundle(stage, tflite, model_version=model_version, **common)
            if val_items:
                metrics = measure(model, bundle, val_items)
                if (run.get("config") or {}).get("int8_bottom"):
                    metrics["note"] = INT8_BOTTOM_NOTE
            else:
                log.warning("run has no validation images: the bundle carries no accuracy")
                metrics = {"split": "validation", "n": 0}
            write_bundle(
                stage, tflite, model_version=bundle.model_version, metrics=metrics, **common
            )
        if out_dir.exists():
            shutil.rmtree(out_dir)  # check_output_folder made sure it only holds a bundle
        stage.rename(out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    bundle = load_bundle(out_dir)
    log.info("bundle %s written to %s", bundle.model_version, out_dir)
    return ConvertResult(bundle, metrics)
