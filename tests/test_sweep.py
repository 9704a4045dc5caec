"""The trade-off sweep: resumable, reads the accuracy convert measured, writes table and plot.

Training is not run here (minutes per model); the sweep is driven on the tiny bundle given as
an existing configuration, which exercises everything after training with real files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartbin.benchmarks import sweep


def test_student_configs_distil_from_the_teacher_without_pretrained_weights() -> None:
    student = next(c for c in sweep.CONFIGS if c.kind == "student")
    args = student.train_args("teacher-bundle")
    assert args[args.index("--weights") + 1] == "none"
    assert args[args.index("--teacher") + 1] == "teacher-bundle"
    assert args[args.index("--alpha") + 1] == str(student.alpha)
    pretrained = next(c for c in sweep.CONFIGS if c.kind == "pretrained")
    assert "--teacher" not in pretrained.train_args("x")
    assert {c.input_size for c in sweep.CONFIGS if c.kind == "pretrained"} == {96, 128, 160, 224}


def test_accuracy_reads_float_and_int8_per_source() -> None:
    manifest = {
        "metrics": {
            "float": {
                "binary": {"accuracy": 0.99},
                "per_source": {"trashnet": {"material": {"accuracy": 0.9}}},
            },
            "int8": {"binary": {"accuracy": 0.98}, "per_source": {}},
        }
    }
    acc = sweep.accuracy_of(manifest)
    assert acc["float"]["TrashNet material"] == pytest.approx(0.9)
    assert acc["float"]["organic/recyclable"] == pytest.approx(0.99)
    assert acc["int8"]["TrashNet material"] is None  # missing stays missing, never 0
    assert acc["int8"]["web material"] is None


def test_readme_splice_needs_both_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{sweep.README_BEGIN}\nold\n{sweep.README_END}\nb\n")
    sweep.splice_readme(readme, "| new |\n")
    assert readme.read_text() == f"a\n{sweep.README_BEGIN}\n| new |\n{sweep.README_END}\nb\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        sweep.splice_readme(readme, "x")


def test_sweep_measures_an_existing_bundle_and_writes_table_and_plot(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{sweep.README_BEGIN}\n{sweep.README_END}\n")
    work = tmp_path / "work"
    rc = sweep.main(
        [
            "unused-data-dir",
            "--work",
            str(work),
            "--only",
            "mnv2-1.0-224,student-a0.35-128",
            "--use",
            f"mnv2-1.0-224={tiny_bundle}",
            "--no-train",
            "--runs",
            "3",
            "--readme",
            str(readme),
        ]
    )
    assert rc == 0
    report = json.loads((work / "sweep.json").read_text())
    assert [row["name"] for row in report["rows"]] == ["mnv2-1.0-224"]  # the student: no bundle
    row = report["rows"][0]
    assert row["int8_p50_ms"] > 0 and row["float_p50_ms"] > 0  # tiny bundle has a float model
    assert row["int8_size_mb"] > 0 and row["float_size_mb"] > row["int8_size_mb"]
    assert set(row["accuracy"]) == {"float", "int8"}
    table = (work / "sweep.md").read_text()
    assert "mnv2-1.0-224" in table and "published, not measured" in table
    assert table in readme.read_text()
    assert (work / "sweep.png").stat().st_size > 1000


def test_sweep_rejects_an_unknown_configuration_name(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        sweep.main(["d", "--use", "nope=default", "--no-train"])
    assert exc.value.code == 2
    assert "NAME=BUNDLE" in capsys.readouterr().err
