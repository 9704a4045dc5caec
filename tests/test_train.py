"""`smartbin train` -> `convert` -> `evaluate` end to end, and the label masking of training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_model import assert_option_refused, make_image_tree, tiny_train_args

from smartbin.cli import main
from smartbin.device.labels import (
    BINARY_CLASSES,
    HEADS,
    MATERIAL_CLASSES,
    ORGANIC,
    RECYCLABLE,
    TRASH,
)
from smartbin.train.data import Sample
from smartbin.train.evaluate import labelled_from_entries
from smartbin.train.fit import blend_with_teacher, targets, teacher_predictions


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


def test_distillation_targets_blend_known_labels_and_keep_masks() -> None:
    samples = [_sample(ORGANIC, None), _sample(None, TRASH), _sample(RECYCLABLE, 1)]
    y, _ = targets(samples, None)
    teacher = {
        "binary": np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]], "float32"),
        "material": np.full((3, len(MATERIAL_CLASSES)), 1.0 / len(MATERIAL_CLASSES), "float32"),
    }
    blended = blend_with_teacher(y, teacher, 0.25)
    assert np.allclose(blended["binary"][0], [0.75 + 0.25 * 0.6, 0.25 * 0.4])
    assert np.allclose(blended["binary"][2], [0.25 * 0.2, 0.75 + 0.25 * 0.8])
    # Masked heads stay masked: no label is invented from the teacher.
    assert not blended["material"][0].any() and not blended["binary"][1].any()
    assert np.allclose(blended["material"][1].sum(), 1.0)
    assert blended["material"][1].argmax() == TRASH


def test_student_distilled_from_a_bundle_through_the_cli(
    tmp_path: Path, tiny_data: Path, tiny_bundle: Path
) -> None:
    run = tmp_path / "student"
    args = ["train", str(tiny_data), "--out", str(run), "--weights", "none"]
    args += ["--input-size", "48", "--alpha", "0.35", "--cut-layer", "input"]
    args += ["--views", "1", "--head-epochs", "0", "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--teacher", str(tiny_bundle), "--distill-weight", "0.7"]) == 0
    saved = json.loads((run / "run.json").read_text())
    assert saved["config"]["teachers"] == [str(tiny_bundle)]
    assert "heads" not in saved["history"] and "fine_tune" in saved["history"]

    # The teacher sees each training image at its own input size (64 px, not the student's 48).
    train_items = labelled_from_entries(saved["split"]["train"])
    soft = teacher_predictions([str(tiny_bundle)], train_items, threads=1)
    assert soft["material"].shape == (len(train_items), len(MATERIAL_CLASSES))
    assert np.allclose(soft["binary"].sum(axis=1), 1.0, atol=0.02)


def test_several_teachers_give_the_mean_of_their_probabilities(
    tmp_path: Path, tiny_run: Path, tiny_bundle: Path
) -> None:
    """Two teachers that read images differently (the tiny bundle, and a copy that says its
    model was trained on whole frames): the targets get the mean of what each predicts
    through its own rule."""
    import shutil

    from smartbin.device.preprocess import RESIZE_STRETCH

    stretched = tmp_path / "stretched"
    shutil.copytree(tiny_bundle, stretched)
    manifest = json.loads((stretched / "bundle.json").read_text())
    manifest["preprocessing"]["resize"] = RESIZE_STRETCH
    (stretched / "bundle.json").write_text(json.dumps(manifest))
    items = labelled_from_entries(json.loads((tiny_run / "run.json").read_text())["split"]["train"])
    first = teacher_predictions([str(tiny_bundle)], items, threads=1)
    second = teacher_predictions([str(stretched)], items, threads=1)
    both = teacher_predictions([str(tiny_bundle), str(stretched)], items, threads=1)
    for head in HEADS:
        assert not np.allclose(first[head], second[head])  # the rules do differ
        assert np.allclose(both[head], (first[head] + second[head]) / 2, atol=1e-6)


def test_folds_partition_the_training_images_and_leave_validation_alone(tiny_data: Path) -> None:
    from smartbin.train.data import discover, fold_of, split_samples

    samples, _ = discover([tiny_data])
    split = split_samples(samples, 0.2)
    first, second = split.without_fold(1, 2), split.without_fold(2, 2)
    assert first.validation == split.validation == second.validation
    kept_first = {s.path for s in first.train}
    kept_second = {s.path for s in second.train}
    assert kept_first and kept_second and not kept_first & kept_second
    assert kept_first | kept_second == {s.path for s in split.train}
    assert all(fold_of(s.sha1, 2) == 2 for s in first.train)


def test_cross_fitted_teachers_teach_only_the_images_they_did_not_train_on(
    tmp_path: Path, tiny_data: Path
) -> None:
    """Two runs, each leaving one half of the training images out; as teachers together each
    image gets the probabilities of the one run that never saw it."""
    args = ["train", str(tiny_data), "--weights", "none", "--input-size", "48", "--alpha", "0.35"]
    args += ["--views", "1", "--head-epochs", "1", "--epochs", "1", "--batch-size", "8"]
    runs = [tmp_path / "fold1", tmp_path / "fold2"]
    for number, run in enumerate(runs, 1):
        assert main([*args, "--out", str(run), "--fold", f"{number}/2"]) == 0
    saved = [json.loads((run / "run.json").read_text()) for run in runs]
    assert [s["config"]["fold"] for s in saved] == [[1, 2], [2, 2]]
    trained = [{e["sha1"] for e in s["split"]["train"]} for s in saved]
    assert trained[0] and trained[1] and not trained[0] & trained[1]

    from smartbin.train.data import discover, split_samples

    samples, _ = discover([tiny_data])
    items = split_samples(samples, 0.2).train
    models = [str(run / "model.keras") for run in runs]
    alone = [teacher_predictions([model], items, threads=1) for model in models]
    both = teacher_predictions(models, items, threads=1)
    never_seen_by = [0 if s.sha1 not in trained[0] else 1 for s in items]
    assert set(never_seen_by) == {0, 1}
    for head in HEADS:
        assert not np.allclose(alone[0][head], alone[1][head])  # the two teachers differ
        expected = np.stack([alone[t][head][i] for i, t in enumerate(never_seen_by)])
        assert np.allclose(both[head], expected, atol=1e-6)


def test_bad_fold_exits_2(tmp_path: Path, tiny_data: Path, capsys) -> None:
    args = ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--weights", "none"]
    for bad in ("3/2", "1/1", "half"):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--fold", bad])
        assert exit_info.value.code == 2
        assert "--fold" in capsys.readouterr().err


def test_missing_teacher_exits_2_before_training(tmp_path: Path, tiny_data: Path, capsys) -> None:
    args = ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--weights", "none"]
    assert main([*args, "--teacher", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teacher" in err[0] and "nope" in err[0]
    assert main([*args, "--teacher", "default", "--teacher", str(tmp_path / "gone")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone" in err[0]
    assert not (tmp_path / "run" / "run.json").exists()


def test_train_bad_data_path_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]


def test_from_scratch_backbone_learns_batchnorm_with_a_short_run_momentum() -> None:
    import keras

    from smartbin.train.model import (
        FROM_SCRATCH_BN_MOMENTUM,
        FULL_FINE_TUNE,
        build_model,
        set_backbone_trainable,
    )

    model = build_model(32, None, 0.35, 0.2, FULL_FINE_TUNE)
    norms = [x for x in model.backbone_top_layers if isinstance(x, keras.layers.BatchNormalization)]
    assert norms
    set_backbone_trainable(model, True)  # transfer learning: BN frozen, its momentum untouched
    assert not any(x.trainable for x in norms)
    assert {x.momentum for x in norms} == {0.999}
    set_backbone_trainable(model, True, batchnorm=True)
    assert all(x.trainable for x in norms)
    assert {x.momentum for x in norms} == {FROM_SCRATCH_BN_MOMENTUM}


def test_exported_model_equals_top_over_cached_bottom_for_every_cut() -> None:
    """What training fits (``top`` on cached ``bottom`` outputs) is what gets exported."""
    from smartbin.train.model import FULL_FINE_TUNE, build_model

    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    for cut in (FULL_FINE_TUNE, "block_2_add"):
        model = build_model(32, None, 0.35, 0.2, cut)
        exported = model.full(pixels, training=False)
        trained = model.top(model.bottom(pixels, training=False), training=False)
        for head in ("binary", "material"):
            np.testing.assert_allclose(
                np.asarray(exported[head]), np.asarray(trained[head]), atol=1e-5, err_msg=cut
            )


def test_cached_views_are_augmented_in_range_and_plain_ones_exact() -> None:
    """The compiled view model keeps the augmentation on although ``predict`` runs in inference
    mode, draws a new augmentation per view, keeps pixels in 0..255, and leaves plain
    (validation) views equal to ``bottom`` itself."""
    from smartbin.train.fit import _augmenter, cache_views
    from smartbin.train.model import FULL_FINE_TUNE, build_model

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    model = build_model(32, None, 0.35, 0.2, FULL_FINE_TUNE)  # bottom = the scaling alone
    cache = cache_views(model.bottom, images, 2, _augmenter(3), 4, "test")
    assert cache.grid is None and [v.dtype for v in cache.views] == [np.float16] * 2
    views = [cache.view(v) for v in range(2)]
    assert [v.shape for v in views] == [(5, 32, 32, 3)] * 2
    plain = cache_views(model.bottom, images, 1, None, 4, "test").view(0)
    expected = np.asarray(model.bottom(images.astype("float32"), training=False))
    np.testing.assert_allclose(plain, expected, atol=1e-2)
    for view in views:
        assert np.isfinite(view).all()
        assert view.min() >= -1.0 - 1e-3 and view.max() <= 1.0 + 1e-3  # clipped 0..255, scaled
        assert np.abs(view.astype("float32") - expected).mean() > 0.01  # augmented
    assert np.abs(views[0].astype("float32") - views[1].astype("float32")).mean() > 0.01


def _disc_views(**augment_options) -> tuple[float, float]:
    """Largest centre offset (pixels) and largest width/height deviation from 1 of a centred
    white disc over 12 augmented views. Flips, rotation and a uniform zoom leave a centred disc
    a centred disc, so only a shift moves it and only independent zooms make it an ellipse."""
    from smartbin.train.fit import _augmenter, cache_views

    yy, xx = np.mgrid[:64, :64]
    image = np.zeros((12, 64, 64, 3), np.uint8)
    image[:, (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 14**2] = 255
    cache = cache_views(None, image, 1, _augmenter(42, **augment_options), 12, "test")
    offsets, deviations = [], []
    for view in cache.view(0).astype("float32").mean(-1) > 128:
        ys, xs = np.nonzero(view)
        offsets.append(max(abs(ys.mean() - 31.5), abs(xs.mean() - 31.5)))
        deviations.append(abs((np.ptp(xs) + 1) / (np.ptp(ys) + 1) - 1))
    return max(offsets), max(deviations)


def test_translate_and_free_aspect_change_where_and_how_wide_the_item_is() -> None:
    """``--translate`` and ``--free-aspect`` (off by default, so earlier commands still build
    the same views) move the item off centre and change its aspect ratio."""
    offset, deviation = _disc_views()
    assert offset < 2 and deviation < 0.1
    offset, deviation = _disc_views(translate=0.2)
    assert offset > 4 and deviation < 0.1
    offset, deviation = _disc_views(free_aspect=True)
    assert offset < 2 and deviation > 0.1


def test_translate_and_free_aspect_through_the_cli(tmp_path: Path, tiny_data: Path, capsys) -> None:
    run = tmp_path / "run"
    args = tiny_train_args(tiny_data, run, views=2)
    assert_option_refused([*args, "--translate", "0.9"], "--translate", capsys)
    assert main([*args, "--translate", "0.1", "--free-aspect"]) == 0
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["translate"] == 0.1 and config["free_aspect"] is True


def test_int8_bottom_features_are_the_quantised_bottom_s() -> None:
    """``--int8-bottom``: the cached views come out of an int8 model of the frozen bottom: on
    its output's 8-bit grid, close to the float bottom's, and augmented per view."""
    import keras

    from smartbin.train.data import Sample
    from smartbin.train.fit import _augmenter, cache_views
    from smartbin.train.int8_bottom import quantize_bottom
    from smartbin.train.model import build_model

    keras.utils.set_random_seed(2)  # the random bottom's weights, whichever test ran before
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    samples = [
        Sample(Path(f"{i}.png"), RECYCLABLE, i % len(MATERIAL_CLASSES), "0" * 40, "s", "f")
        for i in range(len(images))
    ]
    model = build_model(32, None, 0.35, 0.2, "block_2_add")
    int8 = quantize_bottom(model.bottom, images, samples, 8)

    reference = np.asarray(model.bottom(images.astype("float32"), training=False))
    direct = int8(images.astype("float32"))
    grid = np.unique(direct)
    steps = np.diff(grid) / np.diff(grid).min()
    assert len(grid) <= 256 and np.allclose(steps, np.round(steps), atol=1e-3)  # 8-bit levels
    cache = cache_views(model.bottom, images, 1, None, 5, "test", int8)
    assert cache.grid is not None and cache.views[0].dtype == np.int8  # half of float16
    plain = cache.view(0)
    assert plain.shape == reference.shape
    np.testing.assert_allclose(plain, direct, rtol=1e-6, atol=1e-6)  # codes: no rounding loss
    # Typical size of a feature's variation; the range (max - min) is set by a few outliers.
    typical = np.abs(reference - reference.mean()).mean()
    assert np.abs(direct - reference).mean() < 0.1 * typical  # the same layers

    cache = cache_views(model.bottom, images, 2, _augmenter(3), 5, "test", int8)
    change = np.abs(cache.view(0) - cache.view(1)).mean()
    assert change > 0.3 * typical  # a new augmentation per view, through the int8 bottom
    index, view_of = np.array([0, 3, 7]), np.array([1, 0, 1])
    batch = cache.batch(index, view_of)  # what the fine-tuning dataset feeds
    for row, (i, v) in enumerate(zip(index, view_of, strict=True)):
        np.testing.assert_array_equal(batch[row], cache.view(v)[i])


def test_int8_bottom_needs_a_frozen_bottom(tmp_path: Path, tiny_data: Path, capsys) -> None:
    args = ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--weights", "none"]
    assert main([*args, "--cut-layer", "input", "--int8-bottom", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--int8-bottom" in err[0] and "cut-layer" in err[0]


def test_train_on_the_int8_bottom_through_the_cli(tmp_path: Path, tiny_data: Path, capsys) -> None:
    from smartbin.convert.pipeline import INT8_BOTTOM_NOTE

    run = tmp_path / "run"
    args = tiny_train_args(tiny_data, run)
    assert main([*args, "--int8-bottom", "10"]) == 0
    saved = json.loads((run / "run.json").read_text())
    assert saved["config"]["int8_bottom"] == 10
    assert (run / "model.keras").is_file() and "fine_tune" in saved["history"]

    bundle = tmp_path / "bundle"
    assert main(["convert", str(run), "--out", str(bundle), "--calibration-images", "10"]) == 0
    assert "--int8-bottom" in capsys.readouterr().out  # the drop comes with the note
    metrics = json.loads((bundle / "bundle.json").read_text())["metrics"]
    assert metrics["note"] == INT8_BOTTOM_NOTE
