"""`smartbin data report`: charts, grids and JSON written from image trees the tests make."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartbin.cli import main
from smartbin.train.data import discover
from smartbin.train.data_report import sample_grid, write_report


def make_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A tiny real JPEG with unique random pixels for ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


@pytest.fixture
def two_sets(tmp_path: Path) -> tuple[Path, Path]:
    """Two data sets: one with a conflicting duplicate, one with a corrupt and a text file."""
    first = tmp_path / "setA"
    for i in range(5):
        make_image(first / "glass" / f"g{i}.jpg", i)
    for i in range(3):
        make_image(first / "trash" / f"t{i}.jpg", 100 + i)
    (first / "plastic").mkdir()
    shutil.copy(first / "glass" / "g0.jpg", first / "plastic" / "copy_of_g0.jpg")
    second = tmp_path / "setB" / "DATASET" / "TRAIN"
    for i in range(4):
        make_image(second / "O" / f"o{i}.jpg", 200 + i)
    for i in range(2):
        make_image(second / "R" / f"r{i}.jpg", 300 + i)
    (second / "R" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (second / "R" / "notes.txt").write_text("not an image")
    return first, tmp_path / "setB"


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_write_report_writes_charts_grids_and_json(two_sets, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = write_report(list(two_sets), out, progress=False)

    assert report["counts"] == {
        "setA": {"glass": 5, "plastic": 1, "trash": 3},
        "setB": {"organic": 4, "recyclable": 2},
    }
    assert report["total_images"] == 15
    expected_figures = {
        "counts_setA.png",
        "counts_setB.png",
        "samples_setA_glass.png",
        "samples_setA_plastic.png",
        "samples_setA_trash.png",
        "samples_setB_organic.png",
        "samples_setB_recyclable.png",
    }
    assert set(report["figures"]) == expected_figures
    for name in expected_figures:
        width, height = _png_size(out / name)
        assert width > 50 and height > 50

    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    duplicates = json.loads((out / "duplicates.json").read_text())
    assert len(duplicates) == 1 and duplicates[0]["conflicting"] is True
    assert sorted(Path(f["path"]).name for f in duplicates[0]["files"]) == [
        "copy_of_g0.jpg",
        "g0.jpg",
    ]
    problems = json.loads((out / "problems.json").read_text())
    assert sorted(Path(p["path"]).name for p in problems) == ["broken.jpg", "notes.txt"]
    assert all(p["reason"] for p in problems)
    preview = report["split_preview"]
    assert preview["train"]["total"] + preview["validation"]["total"] == 15
    assert "plastic" not in preview["validation"]["by_label"]  # its only image is a duplicate


def test_sample_grid_shows_preprocessed_thumbnails(tmp_path: Path) -> None:
    # One red and one blue image, wide: the grid must hold square centre crops of them.
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        path = tmp_path / "data" / "metal" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (90, 30), colour).save(path)
    samples, _ = discover([tmp_path / "data"], progress=False)
    grid = sample_grid("metal", samples, tmp_path / "grid.png", grid=2, thumb=32)
    assert grid is not None
    pixels = np.asarray(Image.open(grid).convert("RGB")).reshape(-1, 3).astype(int)
    reds = np.sum((pixels[:, 0] > 200) & (pixels[:, 2] < 60))
    blues = np.sum((pixels[:, 2] > 200) & (pixels[:, 0] < 60))
    assert reds > 0.5 * blues and blues > 0.5 * reds  # both images are in it, similar area
    assert sample_grid("nothing", [], tmp_path / "none.png") is None


def test_cli_data_report(two_sets, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli_report"
    code = main(["data", "report", str(two_sets[0]), str(two_sets[1]), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "report.json").is_file()
    assert (out / "counts_setA.png").is_file() and (out / "samples_setB_organic.png").is_file()
    assert "setA: 9 images (glass 5, plastic 1, trash 3)" in captured.out
    assert "1 with conflicting labels" in captured.out
    assert "skipped files: 2" in captured.out
    assert "broken.jpg" in captured.out


def test_cli_bad_paths_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    code = main(["data", "report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing" in err and "does not exist" in err and err.count("\n") == 1

    make_image(tmp_path / "ok" / "paper" / "p.jpg", 1)
    (tmp_path / "a_file").write_text("x")
    code = main(["data", "report", str(tmp_path / "ok"), "--out", str(tmp_path / "a_file")])
    err = capsys.readouterr().err
    assert code == 2 and "not a folder" in err and err.count("\n") == 1

    make_image(tmp_path / "unlabelled" / "holiday" / "x.jpg", 2)
    code = main(["data", "report", str(tmp_path / "unlabelled"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no class folders" in err and err.count("\n") == 1


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    for argv in (
        ["data"],
        ["data", "report", str(tmp_path)],  # --out missing
        ["data", "report", str(tmp_path), "--out", str(tmp_path), "--val-fraction", "1.5"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1
