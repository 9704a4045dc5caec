"""The model bundle: the one contract between conversion and the bin.

A bundle is a folder::

    bundle.json            manifest (schema below)
    model.tflite           full-integer int8 model, CPU
    model_edgetpu.tflite   optional, compiled by edgetpu_compiler
    model_float.tflite     optional float32 reference for benchmarks; never run by the bin

The manifest names the class lists of both heads, the preprocessing, the input and output
tensors with their quantisation, the model version, the sha256 of every model file, a
summary of the training data and the measured accuracy. Loading refuses a bundle whose
schema or hashes do not match, with a message that says which and where.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartbin.device.labels import BINARY_CLASSES, HEADS, MATERIAL_CLASSES
from smartbin.device.preprocess import PreprocessSpec
from smartbin.errors import BundleError

SCHEMA = "smartbin-bundle/1"
MANIFEST_NAME = "bundle.json"
REQUIRED_KEYS = {
    "schema": str,
    "model_version": str,
    "created": str,
    "model": dict,
    "labels": dict,
    "input": dict,
    "outputs": dict,
    "preprocessing": dict,
    "decision": dict,
    "training": dict,
    "metrics": dict,
}


@dataclass(frozen=True)
class ModelBundle:
    """A verified bundle, ready for the classifier."""

    folder: Path
    model_version: str
    model_file: Path
    model_sha256: str
    edgetpu_file: Path | None
    labels: dict[str, tuple[str, ...]]
    preprocess: PreprocessSpec
    output_tensors: dict[str, str]
    unknown_threshold: float
    manifest: dict[str, Any] = field(repr=False)
    float_file: Path | None = None

    @property
    def input_size(self) -> int:
        return self.preprocess.size


def default_bundle_path() -> Path:
    """The bundle shipped inside the package: what a bin uses when no model is configured."""
    return Path(__file__).resolve().parent / "default_bundle"


def resolve_bundle_path(spec: str | Path) -> Path:
    """``"default"`` -> the shipped bundle; a bundle.json -> its folder; else the path."""
    if str(spec) == "default":
        return default_bundle_path()
    path = Path(spec).expanduser()
    if path.is_file() and path.name == MANIFEST_NAME:
        return path.parent
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(manifest: dict, key: str, kind: type, where: Path) -> Any:
    if key not in manifest:
        raise BundleError(f"{where}: missing key '{key}'")
    value = manifest[key]
    if not isinstance(value, kind):
        got = type(value).__name__
        raise BundleError(f"{where}: key '{key}' must be {kind.__name__}, got {got}")
    return value


def validate_manifest(manifest: Any, where: Path) -> None:
    """Check the manifest's shape; raise BundleError naming the key and the file."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: manifest must be a JSON object")
    schema = manifest.get("schema")
    if schema != SCHEMA:
        raise BundleError(f"{where}: schema is {schema!r}, this smartbin reads {SCHEMA!r}")
    for key, kind in REQUIRED_KEYS.items():
        _require(manifest, key, kind, where)
    _require(manifest["model"], "file", str, where)
    _require(manifest["model"], "sha256", str, where)
    labels = manifest["labels"]
    outputs = manifest["outputs"]
    for head in HEADS:
        names = _require(labels, head, list, where)
        if not names or not all(isinstance(n, str) for n in names):
            raise BundleError(f"{where}: labels.{head} must be a non-empty list of names")
        _require(_require(outputs, head, dict, where), "tensor", str, where)
    try:
        PreprocessSpec.from_dict(manifest["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: bad 'preprocessing': {exc}") from None


def _checked_file(folder: Path, name: str, expected_sha: str, manifest_path: Path) -> Path:
    path = folder / name
    if not path.is_file():
        raise BundleError(f"{manifest_path}: model file '{name}' is missing from {folder}")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise BundleError(
            f"{path}: sha256 {actual[:12]}... does not match the manifest's {expected_sha[:12]}... "
            "(file changed or corrupt)"
        )
    return path


def load_bundle(spec: str | Path) -> ModelBundle:
    """Load and verify a bundle folder (or ``default``)."""
    folder = resolve_bundle_path(spec)
    manifest_path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a model bundle (no {MANIFEST_NAME})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from None
    validate_manifest(manifest, manifest_path)
    model = manifest["model"]
    model_file = _checked_file(folder, model["file"], model["sha256"], manifest_path)
    edgetpu_file = None
    if model.get("edgetpu_file"):
        edgetpu_file = _checked_file(
            folder, model["edgetpu_file"], str(model.get("edgetpu_sha256", "")), manifest_path
        )
    float_file = None
    if model.get("float_file"):
        float_file = _checked_file(
            folder, model["float_file"], str(model.get("float_sha256", "")), manifest_path
        )
    labels = {head: tuple(manifest["labels"][head]) for head in HEADS}
    if labels["binary"] != BINARY_CLASSES or labels["material"] != MATERIAL_CLASSES:
        raise BundleError(
            f"{manifest_path}: class lists {labels} differ from this smartbin's "
            f"{BINARY_CLASSES} / {MATERIAL_CLASSES}"
        )
    return ModelBundle(
        folder=folder,
        model_version=manifest["model_version"],
        model_file=model_file,
        model_sha256=model["sha256"],
        edgetpu_file=edgetpu_file,
        labels=labels,
        preprocess=PreprocessSpec.from_dict(manifest["preprocessing"]),
        output_tensors={head: manifest["outputs"][head]["tensor"] for head in HEADS},
        unknown_threshold=float(manifest["decision"].get("unknown_threshold", 0.5)),
        manifest=manifest,
        float_file=float_file,
    )


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Validate then write ``bundle.json``; the writer and the loader share one schema."""
    path = folder / MANIFEST_NAME
    validate_manifest(manifest, path)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
