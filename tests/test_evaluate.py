"""`smartbin evaluate`: report numbers match a direct computation; device-only path; metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_model import make_image_tree

from smartbin.cli import main
from smartbin.device.bundle import load_bundle
from smartbin.device.classifier import Classifier
from smartbin.device.decision import decide
from smartbin.device.labels import MATERIAL_CLASSES
from smartbin.device.preprocess import load_image_rgb
from smartbin.train.evaluate import per_class_scores, roc_auc, roc_curve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def eval_tree(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Material folders, organic and trash (3 pictures each), plus one broken file."""
    root = tmp_path_factory.mktemp("eval") / "shapes"
    entries = make_image_tree(root, per_class=3, seed=7)
    (root / "glass" / "broken.jpg").write_bytes(b"not a jpeg")
    return root, entries


def test_evaluate_bundle_matches_direct_computation(
    tiny_bundle: Path, eval_tree, tmp_path: Path, capsys
) -> None:
    root, entries = eval_tree
    out = tmp_path / "report" / "eval.json"
    out.parent.mkdir()
    assert main(["evaluate", str(tiny_bundle), str(root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "material head: accuracy" in printed and "binary head: accuracy" in printed

    # direct computation through the bin's classifier
    bundle = load_bundle(tiny_bundle)
    classifier = Classifier(bundle, num_threads=1)
    material_truth, material_pred, binary_truth, binary_pred, decided_ok = [], [], [], [], 0
    for e in entries:
        prediction = classifier.classify(load_image_rgb(e["path"])).prediction
        if e["material"] is not None:
            material_truth.append(e["material"])
            material_pred.append(int(prediction.material.argmax()))
        if e["binary"] is not None:
            binary_truth.append(e["binary"])
            binary_pred.append(int(prediction.binary.argmax()))
        label = decide(prediction, bundle.unknown_threshold).label
        expected = "organic" if e["binary"] == 0 else MATERIAL_CLASSES[e["material"]]
        decided_ok += label == expected
    material = report["material"]
    assert material["n"] == 18  # 5 materials + trash, 3 each; organic has no material label
    assert material["accuracy"] == pytest.approx(
        np.mean(np.array(material_truth) == np.array(material_pred))
    )
    confusion = np.zeros((6, 6), int)
    for t, p in zip(material_truth, material_pred, strict=True):
        confusion[t, p] += 1
    assert material["confusion"] == confusion.tolist()
    assert material["per_class"]["glass"]["support"] == 3
    binary = report["binary"]
    assert binary["n"] == 18  # 5 materials + organic; trash has no binary label
    assert binary["accuracy"] == pytest.approx(
        np.mean(np.array(binary_truth) == np.array(binary_pred))
    )
    assert binary["auc"] is None or 0.0 <= binary["auc"] <= 1.0
    assert report["decision"]["n"] == 21
    assert report["decision"]["accuracy"] == pytest.approx(decided_ok / 21)
    assert report["per_source"]["shapes"]["material"]["n"] == 18
    assert report["model"]["kind"] == "bundle"
    assert report["model"]["sha256"] == bundle.model_sha256
    assert [p["path"] for p in report["data"]["skipped"]] == [str(root / "glass" / "broken.jpg")]
    for name in ("eval_confusion_material.png", "eval_confusion_binary.png", "eval_roc_binary.png"):
        assert (out.parent / name).stat().st_size > 1000


def test_evaluate_keras_model(tiny_run: Path, eval_tree, tmp_path: Path) -> None:
    root, entries = eval_tree
    out = tmp_path / "keras.json"
    plots = tmp_path / "plots"
    args = ["evaluate", str(tiny_run / "model.keras"), str(root), "--json", str(out)]
    assert main([*args, "--report-dir", str(plots)]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["kind"] == "keras"
    assert report["material"]["n"] == 18 and report["binary"]["n"] == 18
    assert (plots / "keras_confusion_material.png").is_file()


def test_evaluate_bundle_needs_no_tensorflow_nor_matplotlib(
    tiny_bundle: Path, eval_tree, tmp_path: Path
) -> None:
    """The device install: TensorFlow must not be imported; without matplotlib plots are
    skipped with one line (matplotlib is blocked in a fresh interpreter)."""
    root, _ = eval_tree
    out = tmp_path / "device.json"
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "from smartbin.cli import main\n"
        f"rc = main(['evaluate', {str(tiny_bundle)!r}, {str(root)!r}, '--json', {str(out)!r}])\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'keras' not in sys.modules, 'keras imported'\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "matplotlib not installed: plots skipped" in result.stderr
    assert json.loads(out.read_text())["material"]["n"] == 18
    assert not list(tmp_path.glob("*.png"))


def test_evaluate_only_organic_folder(tiny_bundle: Path, tmp_path: Path) -> None:
    """A folder exercising only the binary head yields no material section."""
    root = tmp_path / "bio"
    make_image_tree(root, per_class=2, seed=3, classes=("organic",))
    out = tmp_path / "new" / "folder" / "bio.json"  # made as needed
    assert main(["evaluate", str(tiny_bundle), str(root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "material" not in report
    assert report["binary"]["n"] == 2 and report["binary"]["auc"] is None


@pytest.mark.parametrize("which", ["bundle", "data", "json"])
def test_evaluate_bad_paths_exit_2(tiny_bundle: Path, eval_tree, tmp_path: Path, which, capsys):
    root, _ = eval_tree
    bundle, data, out = str(tiny_bundle), str(root), str(tmp_path / "x.json")
    if which == "bundle":
        bundle = str(tmp_path / "missing-bundle")
    elif which == "data":
        data = str(tmp_path / "missing-data")
    else:
        (tmp_path / "no-dir").write_text("a file, not a folder")
        out = str(tmp_path / "no-dir" / "x.json")
    assert main(["evaluate", bundle, data, "--json", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("smartbin evaluate: error:")
    assert "missing" in err or "no-dir" in err


def test_per_class_scores_by_hand() -> None:
    matrix = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])
    scores = per_class_scores(matrix, ["a", "b", "c"])
    assert scores["a"]["precision"] == pytest.approx(3 / 5)
    assert scores["a"]["recall"] == pytest.approx(3 / 4)
    assert scores["a"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert scores["b"]["precision"] == pytest.approx(2 / 3)
    assert scores["b"]["support"] == 4
    assert scores["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}


def test_roc_auc_matches_pairwise_count_and_curve_area() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    positive = rng.random(60) < 0.4
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p in scores[positive]
        for n in scores[~positive]
    ]
    assert roc_auc(scores, positive) == pytest.approx(np.mean(pairs))
    fpr, tpr = roc_curve(scores, positive)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(np.mean(pairs))
    assert roc_auc(scores, np.zeros(60, bool)) is None
