"""The bundle written by conversion: loads, classifies, refuses tampering, agrees with float."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from smartbin.device.bundle import MANIFEST_NAME, SCHEMA, load_bundle
from smartbin.device.classifier import Classifier
from smartbin.device.preprocess import load_image_rgb, prepare_image
from smartbin.errors import BundleError


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target)
    return target


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def test_bundle_round_trip(tiny_bundle: Path, tiny_run: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    manifest = bundle.manifest
    assert manifest["schema"] == SCHEMA
    assert bundle.input_size == 64
    assert manifest["input"]["dtype"] == "uint8"
    assert manifest["model"]["size_bytes"] == bundle.model_file.stat().st_size
    assert bundle.model_version.endswith(bundle.model_sha256[:8])
    # The recorded tensor names are the model's real output tensors, one per head.
    assert set(bundle.output_tensors) == {"binary", "material"}
    assert bundle.output_tensors["binary"] != bundle.output_tensors["material"]
    run = json.loads((tiny_run / "run.json").read_text())
    assert manifest["training"]["config"] == run["config"]
    assert manifest["training"]["calibration"]["split"] == "train"
    metrics = manifest["metrics"]
    assert metrics["n"] == len(run["split"]["validation"])
    for head in ("binary", "material"):
        drop = metrics["float"][head]["accuracy"] - metrics["int8"][head]["accuracy"]
        assert metrics["drop"][head] == pytest.approx(drop, abs=1e-6)


def test_bundle_classifies_like_the_float_model(tiny_bundle: Path, tiny_run: Path) -> None:
    """LiteRT int8 outputs agree with TensorFlow's float model within quantisation tolerance."""
    from smartbin.train.model import load_full_model

    model = load_full_model(tiny_run / "model.keras")
    classifier = Classifier(load_bundle(tiny_bundle), num_threads=1, use_edgetpu=False)
    # The calibration (training) images: on them the comparison measures quantisation only.
    entries = json.loads((tiny_run / "run.json").read_text())["split"]["train"]
    images = np.stack([prepare_image(load_image_rgb(e["path"]), 64) for e in entries])
    reference = model(images.astype(np.float32), training=False)
    diffs: dict[str, list[np.ndarray]] = {"binary": [], "material": []}
    same_top = []
    for i, image in enumerate(images):
        prediction = classifier.classify_prepared(image).prediction
        for head, probs in (("binary", prediction.binary), ("material", prediction.material)):
            expected = np.asarray(reference[head][i])
            assert probs.shape == expected.shape
            diffs[head].append(np.abs(probs - expected))
            top2 = np.sort(expected)[-2:]
            if top2[1] - top2[0] > 0.2:  # a near-tie may flip under any rounding
                same_top.append(probs.argmax() == expected.argmax())
    # Decisions first: where the float model is decisive, int8 must decide the same.
    assert len(same_top) >= len(images) // 2, "the float model should be decisive on most"
    assert np.mean(same_top) >= 0.8, same_top
    for head, values in diffs.items():
        values = np.stack(values)
        # int8 probabilities are multiples of 1/256, but this random-init network, its
        # BatchNorm statistics estimated on ~30 pictures, has near-constant channels that
        # amplify int8 rounding, so single outputs move by up to ~0.7 and the mean by ~0.15.
        # A wiring error (heads swapped, colour order, scaling) moves the mean to ~0.5.
        assert values.mean() < 0.25, (head, values.mean(), values.max())
    # and the outputs depend on the picture (a constant model would pass the checks above)
    first = classifier.classify_prepared(images[0]).prediction.material
    assert any(
        np.abs(classifier.classify_prepared(im).prediction.material - first).max() > 0.1
        for im in images[1:]
    )


def test_tampered_model_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_bundle, tmp_path)
    model = folder / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(folder)


def test_wrong_schema_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_bundle, tmp_path)
    manifest = _manifest(folder)
    manifest["schema"] = "smartbin-bundle/999"
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"schema.*bundle\.json|bundle\.json.*schema"):
        load_bundle(folder)


@pytest.mark.parametrize("key", ["labels", "outputs", "model_version", "preprocessing"])
def test_missing_key_is_named(tiny_bundle: Path, tmp_path: Path, key: str) -> None:
    folder = _copy(tiny_bundle, tmp_path)
    manifest = _manifest(folder)
    del manifest[key]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    assert key in str(info.value) and str(folder / MANIFEST_NAME) in str(info.value)


def test_output_tensors_recorded_by_head_name(tiny_bundle: Path) -> None:
    """Each head's recorded tensor is the one the signature names after that head, with that
    head's number of classes: outputs are mapped by name, never by position."""
    from ai_edge_litert import interpreter as litert

    bundle = load_bundle(tiny_bundle)
    interpreter = litert.Interpreter(model_path=str(bundle.model_file))
    interpreter.allocate_tensors()
    signature = interpreter.get_signature_runner().get_output_details()
    by_name = {d["name"]: d for d in interpreter.get_output_details()}
    for head, classes in (("binary", 2), ("material", 6)):
        detail = by_name[bundle.output_tensors[head]]
        assert detail["index"] == signature[head]["index"]
        assert detail["shape"][-1] == classes
        recorded = bundle.manifest["outputs"][head]["quantization"]
        assert recorded["scale"] == pytest.approx(detail["quantization"][0])
        assert recorded["zero_point"] == detail["quantization"][1]
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    prediction = Classifier(bundle, num_threads=1).classify_prepared(image).prediction
    assert prediction.binary.sum() == pytest.approx(1.0, abs=0.05)
    assert prediction.material.sum() == pytest.approx(1.0, abs=0.05)
