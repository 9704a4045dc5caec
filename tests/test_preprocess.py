"""The preprocessing contract: the resize rules, the bundle's rule used on the bin, old runs
and bundles keep the rule they were trained with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from smartbin.device.bundle import load_bundle
from smartbin.device.classifier import Classifier
from smartbin.device.preprocess import (
    DEFAULT_RESIZE,
    RESIZE_AREA,
    RESIZE_BILINEAR,
    RESIZE_NAMES,
    RESIZE_STRETCH,
    PreprocessSpec,
    prepare_image,
    resize_of_run,
)


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Fine detail, so that interpolation rules give visibly different pixels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("rule", [RESIZE_BILINEAR, RESIZE_AREA, RESIZE_STRETCH])
@pytest.mark.parametrize("shape", [(240, 320), (341, 256), (100, 150), (480, 640), (721, 1283)])
def test_every_rule_gives_a_centred_square(rule: str, shape: tuple[int, int]) -> None:
    out = prepare_image(textured(*shape), 64, rule)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    # A frame split into a dark left and a bright right half stays split in the middle.
    half = np.zeros((*shape, 3), np.uint8)
    half[:, shape[1] // 2 :] = 255
    columns = prepare_image(half, 64, rule)[32, :, 0].astype(int)
    assert columns[:31].max() == 0 and columns[33:].min() == 255


def test_bilinear_rule_is_opencvs_exact_bilinear_below_twice_the_size() -> None:
    frame = textured(240, 320)
    expected = cv2.resize(frame, (299, 224), interpolation=cv2.INTER_LINEAR_EXACT)[:, 37:261]
    assert np.array_equal(prepare_image(frame, 224, RESIZE_BILINEAR), expected)


def test_bilinear_rule_box_averages_large_frames_first() -> None:
    """A 641x481 frame: factor 481 // 224 = 2; the odd row/column is cut, 2x2 blocks are
    averaged (rounded half up), then 320x240 goes through bilinear to 299x224."""
    frame = textured(481, 641, seed=1)
    even = frame[:480, :640].astype(np.int32)
    blocks = even[0::2, 0::2] + even[1::2, 0::2] + even[0::2, 1::2] + even[1::2, 1::2]
    boxed = ((blocks + 2) // 4).astype(np.uint8)
    expected = cv2.resize(boxed, (299, 224), interpolation=cv2.INTER_LINEAR_EXACT)[:, 37:261]
    got = prepare_image(frame, 224, RESIZE_BILINEAR)
    assert np.abs(got.astype(int) - expected).max() <= 1  # OpenCV may round ties to even
    assert np.mean(got != expected) < 0.01


@pytest.mark.parametrize("shape", [(341, 256), (240, 320), (224, 224), (100, 150)])
def test_stretch_keeps_the_whole_frame(shape: tuple[int, int]) -> None:
    """A mark in the frame's top sixteenth: the crop rules cut it from a portrait frame,
    stretch keeps it (and is OpenCV's area resize of the whole frame when shrinking)."""
    frame = np.zeros((*shape, 3), np.uint8)
    frame[: shape[0] // 16] = 255
    stretched = prepare_image(frame, 64, RESIZE_STRETCH)
    assert stretched[0, 32, 0] == 255 and stretched[-1, 32, 0] == 0
    if shape[0] > shape[1]:
        assert prepare_image(frame, 64, RESIZE_AREA)[0, 32, 0] == 0
    photo = textured(*shape)
    if min(shape) >= 224:
        expected = cv2.resize(photo, (224, 224), interpolation=cv2.INTER_AREA)
        assert np.array_equal(prepare_image(photo, 224, RESIZE_STRETCH), expected)


def test_the_rules_differ_and_new_runs_use_area() -> None:
    frame = textured(240, 320)
    area = prepare_image(frame, 224, RESIZE_AREA)
    bilinear = prepare_image(frame, 224, RESIZE_BILINEAR)
    stretch = prepare_image(frame, 224, RESIZE_STRETCH)
    assert not np.array_equal(area, bilinear) and not np.array_equal(area, stretch)
    assert DEFAULT_RESIZE == RESIZE_AREA == PreprocessSpec().resize
    with pytest.raises(ValueError, match="unknown resize rule 'nearest'"):
        prepare_image(frame, 224, "nearest")


def test_train_offers_every_rule_by_its_short_name() -> None:
    """`train --resize` lists its choices literally (importing OpenCV to build `--help` would
    slow every command): they must stay the names the rules are known by."""
    import argparse

    from smartbin.train.cli import register

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    register(commands)
    assert parser.parse_args(["train", "data", "--out", "run"]).resize == "area"
    (action,) = [a for a in commands.choices["train"]._actions if a.dest == "resize"]
    assert set(action.choices) == set(RESIZE_NAMES)
    assert set(RESIZE_NAMES.values()) == {RESIZE_AREA, RESIZE_BILINEAR, RESIZE_STRETCH}


def test_spec_round_trips_every_rule_and_refuses_others() -> None:
    for rule in (RESIZE_BILINEAR, RESIZE_AREA, RESIZE_STRETCH):
        spec = PreprocessSpec(size=96, resize=rule)
        assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unsupported preprocessing RGB/stretch"):
        PreprocessSpec.from_dict(PreprocessSpec(resize="stretch").to_dict())


def test_runs_from_before_the_rule_was_recorded_used_area() -> None:
    assert resize_of_run({}) == RESIZE_AREA
    assert resize_of_run({"resize": RESIZE_BILINEAR}) == RESIZE_BILINEAR
    with pytest.raises(ValueError, match="unknown resize rule"):
        resize_of_run({"resize": "bicubic"})


def test_the_bin_uses_its_bundles_rule(tiny_bundle: Path, tmp_path: Path) -> None:
    """A bundle that says bilinear gets bilinear frames on the bin, whatever the default."""
    fresh = load_bundle(tiny_bundle)
    assert fresh.preprocess.resize == RESIZE_AREA  # the fixture run used the default
    other = tmp_path / "bilinear_bundle"
    shutil.copytree(tiny_bundle, other)
    manifest = json.loads((other / "bundle.json").read_text())
    manifest["preprocessing"]["resize"] = RESIZE_BILINEAR
    (other / "bundle.json").write_text(json.dumps(manifest))
    classifier = Classifier(load_bundle(other), num_threads=1, use_edgetpu=False)
    size = classifier.bundle.input_size
    frames = [textured(150, 200, seed) for seed in range(8)]
    for frame in frames:
        got = classifier.classify(frame).prediction
        want = classifier.classify_prepared(prepare_image(frame, size, RESIZE_BILINEAR)).prediction
        assert np.array_equal(got.binary, want.binary)
        assert np.array_equal(got.material, want.material)
    # The two rules do lead to different outputs on these frames, so the check above can fail.
    assert any(
        not np.array_equal(
            classifier.classify_prepared(prepare_image(f, size, RESIZE_AREA)).prediction.material,
            classifier.classify_prepared(
                prepare_image(f, size, RESIZE_BILINEAR)
            ).prediction.material,
        )
        for f in frames
    )


def test_a_run_converts_with_its_recorded_rule(tiny_run: Path, tmp_path: Path) -> None:
    """A run that says bilinear gives a bilinear bundle; one that says nothing (made before
    the rule was recorded) an area one."""
    from smartbin.convert.pipeline import convert_run

    old_run = tmp_path / "old_run"
    shutil.copytree(tiny_run, old_run)
    run = json.loads((old_run / "run.json").read_text())
    run["config"]["resize"] = RESIZE_BILINEAR
    (old_run / "run.json").write_text(json.dumps(run))
    convert_run(old_run, tmp_path / "bilinear", calibration_images=8, edgetpu="off")
    assert load_bundle(tmp_path / "bilinear").preprocess.resize == RESIZE_BILINEAR
    assert run["config"].pop("resize") == RESIZE_BILINEAR
    (old_run / "run.json").write_text(json.dumps(run))
    convert_run(old_run, tmp_path / "bundle", calibration_images=8, edgetpu="off")
    assert load_bundle(tmp_path / "bundle").preprocess.resize == RESIZE_AREA
