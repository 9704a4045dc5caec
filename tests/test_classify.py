"""`smartbin classify`: one line per image matching the bin's classifier; errors per image."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from fixtures_model import make_image_tree

from smartbin.cli import main
from smartbin.device.bundle import load_bundle
from smartbin.device.classifier import Classifier
from smartbin.device.decision import decide
from smartbin.device.preprocess import load_image_rgb

LINE = re.compile(
    r"^(?P<path>.+): (?P<label>\w+) \((?P<conf>[01]\.\d\d)\) "
    r"\| binary: organic (?P<organic>[01]\.\d\d)  recyclable [01]\.\d\d "
    r"\| material: (?P<material>.+)$"
)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("classify")
    entries = make_image_tree(root, per_class=1, seed=11, classes=("organic", "glass", "trash"))
    return [e["path"] for e in entries]


def test_classify_prints_the_bins_decision(tiny_bundle: Path, pictures, capsys) -> None:
    assert main(["classify", str(tiny_bundle), *pictures]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(pictures)
    bundle = load_bundle(tiny_bundle)
    classifier = Classifier(bundle, num_threads=1)
    for path, line in zip(pictures, lines, strict=True):
        match = LINE.match(line)
        assert match, line
        prediction = classifier.classify(load_image_rgb(path)).prediction
        decision = decide(prediction, bundle.unknown_threshold)
        assert match["path"] == path
        assert match["label"] == decision.label
        assert float(match["conf"]) == pytest.approx(decision.confidence, abs=0.006)
        assert float(match["organic"]) == pytest.approx(prediction.organic_prob, abs=0.006)
        shown = re.findall(r"(\w+) ([01]\.\d\d)", match["material"])
        top = sorted(prediction.material_probs().items(), key=lambda kv: -kv[1])[:3]
        assert [name for name, _ in shown] == [name for name, _ in top]


def test_classify_reports_unreadable_images_and_continues(
    tiny_bundle: Path, pictures, tmp_path: Path, capsys
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    missing = tmp_path / "missing.png"
    rc = main(["classify", str(tiny_bundle), str(broken), pictures[0], str(missing)])
    assert rc == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith(f"{broken}: cannot classify: not an image")
    assert LINE.match(lines[1])
    assert lines[2] == f"{missing}: cannot classify: file not found"
    assert "2 of 3 image(s) could not be read" in captured.err


def test_classify_missing_bundle_exits_2(tmp_path: Path, pictures, capsys) -> None:
    assert main(["classify", str(tmp_path / "nope"), pictures[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("smartbin classify: error:") and "nope" in err


def test_classify_bundle_json_path(tiny_bundle: Path, pictures, capsys) -> None:
    assert main(["classify", str(tiny_bundle / "bundle.json"), pictures[1]]) == 0
    assert LINE.match(capsys.readouterr().out.strip())


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_cpp_logs_are_quiet_unless_verbose(
    tiny_bundle: Path, pictures, monkeypatch, verbose: bool
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    tf_logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(tf_logger, "level", logging.NOTSET)
    argv = ["-v"] * verbose + ["classify", str(tiny_bundle), pictures[0]]
    assert main(argv) == 0
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == (None if verbose else "2")
    assert tf_logger.level == (logging.NOTSET if verbose else logging.WARNING)
