"""Discovery, labels, duplicates, split and class weights on image trees made by the tests."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartbin.device.labels import MATERIAL_CLASSES, ORGANIC, RECYCLABLE, TRASH
from smartbin.errors import SmartbinError
from smartbin.train.data import (
    Sample,
    class_weights,
    discover,
    find_duplicates,
    split_fraction,
    split_samples,
)

REPO = Path(__file__).resolve().parents[1]
TRASHNET = Path(os.environ.get("SMARTBIN_DATASETS", REPO.parent / "shared" / "datasets")) / (
    "trashnet"
)


def make_image(path: Path, seed: int, size: tuple[int, int] = (12, 9)) -> Path:
    """A tiny real image with unique random pixels (so unique bytes) for ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def by_name(samples: list[Sample]) -> dict[str, Sample]:
    return {s.path.name: s for s in samples}


def mat(name: str) -> int:
    return MATERIAL_CLASSES.index(name)


def test_folder_names_and_download_layouts_give_labels(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    make_image(root / "cardboard" / "a.jpg", 1)
    make_image(root / "O" / "b.jpg", 2)
    make_image(root / "organic" / "c.png", 3)
    make_image(root / "R" / "d.jpg", 4)
    make_image(root / "trash" / "e.jpg", 5)
    make_image(root / "dataset-resized" / "glass" / "f.jpg", 6)  # TrashNet download
    make_image(root / "DATASET" / "TRAIN" / "O" / "g.jpg", 7)  # Kaggle download
    make_image(root / "DATASET" / "TEST" / "R" / "h.jpg", 8)
    make_image(root / "Plastic" / "nested" / "deeper" / "i.jpg", 9)  # inherits, any case
    make_image(root / "glass" / "trash" / "j.jpg", 10)  # innermost class folder decides

    samples, problems = discover([root], progress=False)

    assert problems == []
    got = {name: (s.binary, s.material) for name, s in by_name(samples).items()}
    assert got == {
        "a.jpg": (RECYCLABLE, mat("cardboard")),
        "b.jpg": (ORGANIC, None),
        "c.png": (ORGANIC, None),
        "d.jpg": (RECYCLABLE, None),
        "e.jpg": (None, TRASH),
        "f.jpg": (RECYCLABLE, mat("glass")),
        "g.jpg": (ORGANIC, None),
        "h.jpg": (RECYCLABLE, None),
        "i.jpg": (RECYCLABLE, mat("plastic")),
        "j.jpg": (None, TRASH),
    }
    names = by_name(samples)
    assert names["b.jpg"].folder == "O" and names["b.jpg"].label_name == "organic"
    assert names["h.jpg"].label_name == "recyclable"
    assert {s.source for s in samples} == {"mixed"}
    assert (
        names["a.jpg"].sha1 == hashlib.sha1((root / "cardboard" / "a.jpg").read_bytes()).hexdigest()
    )


def test_root_that_is_a_class_folder(tmp_path: Path) -> None:
    make_image(tmp_path / "metal" / "x.jpg", 1)
    samples, _ = discover([tmp_path / "metal"], progress=False)
    assert [(s.binary, s.material, s.source) for s in samples] == [
        (RECYCLABLE, mat("metal"), "metal")
    ]


def test_corrupt_and_non_image_files_are_reported_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "data"
    good = make_image(root / "paper" / "good.jpg", 1)
    full = make_image(tmp_path / "full.jpg", 2, size=(64, 48)).read_bytes()
    (root / "paper" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "paper" / "text.jpg").write_text("this is not a jpeg\n")
    (root / "paper" / "empty.png").write_bytes(b"")
    (root / "paper" / "notes.txt").write_text("labels were checked by hand\n")
    (root / "paper" / ".DS_Store").write_bytes(b"\0\1")  # hidden: not data, not a problem
    (root / "README.md").write_text("outside class folders: ignored\n")
    make_image(root / "stray.jpg", 3)  # an image outside class folders is reported

    samples, problems = discover([root], progress=False)

    assert [s.path for s in samples] == [good]
    reasons = {p.path.name: p.reason for p in problems}
    assert set(reasons) == {"truncated.jpg", "text.jpg", "empty.png", "notes.txt", "stray.jpg"}
    assert reasons["truncated.jpg"].startswith("cannot decode image")
    assert reasons["text.jpg"].startswith("not an image")
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["empty.png"] == "empty file"
    assert "outside any class folder" in reasons["stray.jpg"]


def test_without_verification_broken_jpeg_passes_but_text_file_does_not(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "glass").mkdir(parents=True)
    (root / "glass" / "broken.jpg").write_text("not really")
    (root / "glass" / "notes.txt").write_text("x")
    samples, problems = discover([root], verify_images=False, progress=False)
    assert [s.path.name for s in samples] == ["broken.jpg"]
    assert [p.path.name for p in problems] == ["notes.txt"]


def test_bad_roots_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SmartbinError, match="does not exist"):
        discover([tmp_path / "nope"], progress=False)
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(SmartbinError, match="not a folder"):
        discover([tmp_path / "file.jpg"], progress=False)
    make_image(tmp_path / "holiday" / "beach" / "x.jpg", 1)
    with pytest.raises(SmartbinError, match="holds no class folders") as info:
        discover([tmp_path / "holiday"], progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(SmartbinError):
        discover([], progress=False)


def test_several_roots_remember_their_source(tmp_path: Path) -> None:
    make_image(tmp_path / "trashnet" / "glass" / "a.jpg", 1)
    make_image(tmp_path / "garbage" / "organic" / "b.jpg", 2)
    make_image(tmp_path / "other" / "garbage" / "metal" / "c.jpg", 3)
    samples, _ = discover(
        [tmp_path / "trashnet", tmp_path / "garbage", tmp_path / "other" / "garbage"],
        progress=False,
    )
    assert {s.path.name: s.source for s in samples} == {
        "a.jpg": "trashnet",
        "b.jpg": "garbage",
        "c.jpg": "garbage#2",
    }


def test_duplicates_across_classes_are_flagged_and_kept_out_of_validation(tmp_path: Path) -> None:
    root = tmp_path / "data"
    val_fraction = 0.5
    # Pick content that the hash would put in validation, so keeping it out is a real decision.
    seed = next(
        i
        for i in range(1000)
        if split_fraction(hashlib.sha1(_image_bytes(tmp_path, i)).hexdigest()) < val_fraction
    )
    original = make_image(root / "glass" / "g1.jpg", seed)
    (root / "plastic").mkdir()
    shutil.copy(original, root / "plastic" / "p1.jpg")  # conflicting copy
    same = make_image(root / "O" / "o1.jpg", seed + 5000)
    (root / "organic").mkdir()
    shutil.copy(same, root / "organic" / "o2.jpg")  # same label: not conflicting
    for i in range(40):
        make_image(root / "paper" / f"u{i}.jpg", 10_000 + i)

    samples, _ = discover([root], progress=False)
    groups = find_duplicates(samples)

    assert [sorted(s.path.name for s in g.samples) for g in groups] == sorted(
        [["g1.jpg", "p1.jpg"], ["o1.jpg", "o2.jpg"]], key=lambda names: _sha1(root, names[0])
    )
    conflicting = {g.samples[0].path.name: g.conflicting for g in groups}
    assert conflicting == {"g1.jpg": True, "o1.jpg": False}

    split = split_samples(samples, val_fraction=val_fraction)
    val_names = {s.path.name for s in split.validation}
    assert not val_names & {"g1.jpg", "p1.jpg", "o1.jpg", "o2.jpg"}
    assert {"g1.jpg", "p1.jpg", "o1.jpg", "o2.jpg"} <= {s.path.name for s in split.train}
    assert len(split.train) + len(split.validation) == len(samples)
    assert [g.samples[0].path.name for g in split.conflicting] == ["g1.jpg"]
    summary = split.summary()
    assert summary["duplicates"]["groups"] == 2
    assert [f["label"] for f in summary["duplicates"]["conflicting"][0]["files"]] == [
        "glass",
        "plastic",
    ]


def _image_bytes(tmp_path: Path, seed: int) -> bytes:
    return make_image(tmp_path / "probe" / "probe.jpg", seed).read_bytes()


def _sha1(root: Path, name: str) -> str:
    path = next(root.rglob(name))
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_split_is_deterministic_and_stable_when_files_are_added(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(30):
        make_image(root / ("metal" if i % 2 else "O") / f"a{i}.jpg", i)
    before, _ = discover([root], progress=False)
    first = split_samples(before)
    shuffled = list(before)
    random.Random(3).shuffle(shuffled)
    again = split_samples(shuffled)
    assert {s.path for s in first.validation} == {s.path for s in again.validation}
    assert {s.path for s in first.train} == {s.path for s in again.train}
    assert first.validation and first.train

    side = {s.path: "val" for s in first.validation} | {s.path: "train" for s in first.train}
    for i in range(30, 60):
        make_image(root / "metal" / f"b{i}.jpg", i)
    (root / "metal" / "a1.jpg").rename(root / "metal" / "renamed.jpg")
    after, _ = discover([root], progress=False)
    later = split_samples(after)
    later_side = {s.path: "val" for s in later.validation} | {s.path: "train" for s in later.train}
    for path, where in side.items():
        new_path = root / "metal" / "renamed.jpg" if path.name == "a1.jpg" else path
        assert later_side[new_path] == where, path

    other_seed = split_samples(after, seed="another seed")
    assert {s.path for s in other_seed.validation} != {s.path for s in later.validation}


def test_split_is_roughly_val_fraction_per_class() -> None:
    rng = random.Random(7)
    samples = [
        Sample(
            path=Path(f"{name}/{i}.jpg"),
            binary=RECYCLABLE,
            material=mat(name),
            sha1=hashlib.sha1(rng.randbytes(32)).hexdigest(),
            source="synthetic",
            folder=name,
        )
        for name in ("glass", "paper")
        for i in range(500)
    ]
    split = split_samples(samples, val_fraction=0.2)
    counts = split.summary()["validation"]["by_label"]
    for name in ("glass", "paper"):
        assert 0.14 < counts[name] / 500 < 0.26, counts
    assert split_samples(samples, val_fraction=0.0).validation == []
    with pytest.raises(SmartbinError):
        split_samples(samples, val_fraction=1.0)


def test_summary_counts_per_source_and_head(tmp_path: Path) -> None:
    make_image(tmp_path / "a" / "trash" / "t.jpg", 1)
    make_image(tmp_path / "a" / "glass" / "g.jpg", 2)
    make_image(tmp_path / "b" / "O" / "o.jpg", 3)
    samples, problems = discover([tmp_path / "a", tmp_path / "b"], progress=False)
    split = split_samples(samples, val_fraction=0.0, problems=problems)
    summary = split.summary()
    assert summary["sources"] == ["a", "b"]
    assert summary["train"]["by_source"] == {"a": {"glass": 1, "trash": 1}, "b": {"organic": 1}}
    assert summary["train"]["by_head"]["binary"] == {"organic": 1, "recyclable": 1, "unknown": 1}
    assert summary["train"]["by_head"]["material"]["unknown"] == 1
    assert summary["validation"]["total"] == 0


def _sample(binary: int | None, material: int | None, i: int) -> Sample:
    return Sample(Path(f"{i}.jpg"), binary, material, f"{i:040x}", "s", "f")


def test_class_weights_are_balanced_over_labelled_samples() -> None:
    samples = (
        [_sample(ORGANIC, None, i) for i in range(3)]
        + [_sample(RECYCLABLE, mat("glass"), 10 + i) for i in range(1)]
        + [_sample(None, TRASH, 20 + i) for i in range(4)]
    )
    assert class_weights(samples, "binary") == pytest.approx(
        {ORGANIC: 4 / (2 * 3), RECYCLABLE: 4 / (2 * 1)}
    )
    assert class_weights(samples, "material") == pytest.approx(
        {mat("glass"): 5 / (2 * 1), TRASH: 5 / (2 * 4)}
    )
    assert class_weights([], "binary") == {}
    with pytest.raises(ValueError):
        class_weights(samples, "colour")


@pytest.mark.skipif(not TRASHNET.is_dir(), reason=f"TrashNet folder not present at {TRASHNET}")
def test_real_trashnet_duplicates_are_the_published_ones() -> None:
    samples, problems = discover([TRASHNET], verify_images=False, progress=False)
    assert problems == []
    assert len(samples) > 1000
    # README of the data set: byte-identical photos filed under two classes. Some of them may
    # be in the held-out part (not distributed), so expect the pairs whose files are both here.
    published = [
        ("glass/glass115.jpg", "metal/metal91.jpg"),
        ("glass/glass176.jpg", "plastic/plastic152.jpg"),
        ("glass/glass389.jpg", "plastic/plastic332.jpg"),
    ]
    expected = sorted(
        tuple(sorted(str(TRASHNET / p) for p in pair))
        for pair in published
        if all((TRASHNET / p).is_file() for p in pair)
    )
    assert expected, "none of the published duplicate pairs is present"
    groups = find_duplicates(samples)
    assert sorted(tuple(sorted(str(s.path) for s in g.samples)) for g in groups) == expected
    assert all(g.conflicting for g in groups)
