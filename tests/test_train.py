"""`smartbin train` -> `convert` -> `evaluate` end to end, and the label masking of training."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures_model import make_image_tree

from smartbin.cli import main
from smartbin.device.labels import BINARY_CLASSES, MATERIAL_CLASSES, ORGANIC, RECYCLABLE, TRASH
from smartbin.train.data import Sample
from smartbin.train.fit import targets


def _sample(binary: int | None, material: int | None) -> Sample:
    return Sample(Path("x.png"), binary, material, "0" * 40, "src", "folder")


def test_missing_labels_are_masked_not_invented() -> None:
    samples = [_sample(ORGANIC, None), _sample(None, TRASH), _sample(RECYCLABLE, 1)]
    weights = {"binary": {ORGANIC: 2.0, RECYCLABLE: 0.5}, "material": {TRASH: 3.0, 1: 1.5}}
    y, w = targets(samples, weights)
    assert y["binary"].shape == (3, len(BINARY_CLASSES))
    assert y["material"].shape == (3, len(MATERIAL_CLASSES))
    # organic: binary label + class weight; material unknown -> all-zero row, weight 0
    assert y["binary"][0].tolist() == [1.0, 0.0] and w["binary"][0] == 2.0
    assert not y["material"][0].any() and w["material"][0] == 0.0
    # trash: general waste, no binary label
    assert not y["binary"][1].any() and w["binary"][1] == 0.0
    assert y["material"][1].argmax() == TRASH and w["material"][1] == 3.0
    # a material folder: both heads
    assert y["binary"][2].argmax() == RECYCLABLE and w["material"][2] == 1.5
    # validation: weights are the mask only
    _, w_val = targets(samples, None)
    assert w_val["binary"].tolist() == [1.0, 0.0, 1.0]
    assert w_val["material"].tolist() == [0.0, 1.0, 1.0]


def test_train_convert_evaluate_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_image_tree(data, per_class=5, seed=3)
    run, bundle, report = tmp_path / "run", tmp_path / "bundle", tmp_path / "eval.json"
    common = ["--weights", "none", "--input-size", "64", "--alpha", "0.35"]
    small = ["--views", "1", "--head-epochs", "2", "--epochs", "1", "--batch-size", "8"]
    assert main(["train", str(data), "--out", str(run), *common, *small]) == 0
    saved = json.loads((run / "run.json").read_text())
    assert saved["split"]["validation"] and saved["split"]["train"]
    assert "heads" in saved["history"] and "fine_tune" in saved["history"]

    assert main(["convert", str(run), "--out", str(bundle), "--calibration-images", "10"]) == 0
    assert (bundle / "model.tflite").is_file()

    assert main(["evaluate", str(bundle), "--split", str(run), "--json", str(report)]) == 0
    figures = json.loads(report.read_text())
    labelled = saved["split"]["validation"]
    assert figures["material"]["n"] == sum(e["material"] is not None for e in labelled)
    assert figures["binary"]["n"] == sum(e["binary"] is not None for e in labelled)
    assert 0.0 <= figures["material"]["accuracy"] <= 1.0


def test_train_bad_data_path_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
