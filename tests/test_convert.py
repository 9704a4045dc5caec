"""Conversion: full-integer int8 only, the op check can fail, calibration, `smartbin convert`."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from smartbin.cli import main
from smartbin.convert.edgetpu import NOT_FOUND, find_compiler
from smartbin.convert.quantize import (
    ConversionError,
    check_integer_only,
    float_keras_model,
    integer_op_report,
)
from smartbin.convert.representative import select_representative
from smartbin.device.bundle import load_bundle
from smartbin.errors import BundleError
from smartbin.train.evaluate import RunEntry


def test_converted_model_is_integer_only(tiny_bundle: Path) -> None:
    from ai_edge_litert import interpreter as litert

    bundle = load_bundle(tiny_bundle)
    assert integer_op_report(bundle.model_file) == []
    check_integer_only(bundle.model_file)
    interpreter = litert.Interpreter(model_path=str(bundle.model_file))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= ops
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert {d["dtype"] for d in interpreter.get_output_details()} == {np.uint8}


def test_float_model_is_a_verified_float32_reference(tiny_bundle: Path) -> None:
    from ai_edge_litert import interpreter as litert

    bundle = load_bundle(tiny_bundle)
    assert bundle.float_file is not None and bundle.float_file.name == "model_float.tflite"
    assert bundle.manifest["model"]["float_size_bytes"] > bundle.model_file.stat().st_size
    interpreter = litert.Interpreter(model_path=str(bundle.float_file))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    # the float file is hashed like the int8 one: a changed byte refuses the bundle
    data = bytearray(bundle.float_file.read_bytes())
    data[-1] ^= 0xFF
    broken = tiny_bundle.parent / "broken_float"
    shutil.copytree(tiny_bundle, broken)
    (broken / "model_float.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model_float.tflite: sha256"):
        load_bundle(broken)


def test_integer_check_rejects_a_float_model(tiny_run: Path) -> None:
    from smartbin.train.model import load_full_model

    flat = float_keras_model(load_full_model(tiny_run / "model.keras"))
    report = integer_op_report(flat)
    assert report and any("CONV_2D" in line and "float32" in line for line in report)
    with pytest.raises(ConversionError, match=r"not full-integer.*float32"):
        check_integer_only(flat)


def _items(counts: dict[tuple[int | None, int | None], int]) -> list[RunEntry]:
    items = []
    for (binary, material), n in counts.items():
        for i in range(n):
            items.append(RunEntry(Path(f"/d/{binary}-{material}/{i}.jpg"), binary, material, "s"))
    return items


def test_representative_selection_is_stratified_and_deterministic() -> None:
    items = _items({(1, 0): 50, (0, None): 5, (None, 5): 20})
    chosen = select_representative(items, 21, seed=0)
    by_stratum = Counter((item.binary, item.material) for item in chosen)
    # the small stratum is fully used, the others share the rest evenly
    assert by_stratum == {(0, None): 5, (1, 0): 8, (None, 5): 8}
    assert len({str(i.path) for i in chosen}) == 21
    assert [i.path for i in select_representative(list(reversed(items)), 21, seed=0)] == [
        i.path for i in chosen
    ]
    assert [i.path for i in select_representative(items, 21, seed=1)] != [i.path for i in chosen]
    assert len(select_representative(items, 1000)) == len(items)


def test_convert_cli_int8_io(tiny_run: Path, tmp_path: Path, capsys, caplog) -> None:
    out = tmp_path / "bundle"
    caplog.set_level(logging.INFO)
    rc = main(
        [
            "convert",
            str(tiny_run),
            "--out",
            str(out),
            "--io",
            "int8",
            "--calibration-images",
            "7",
            "--unknown-threshold",
            "0.6",
            "--model-version",
            "test-7",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "float" in printed and "int8" in printed and "test-7" in printed
    bundle = load_bundle(out)
    manifest = bundle.manifest
    assert bundle.model_version == "test-7"
    assert bundle.unknown_threshold == pytest.approx(0.6)
    assert manifest["input"]["dtype"] == "int8"
    assert {manifest["outputs"][h]["dtype"] for h in ("binary", "material")} == {"int8"}
    assert manifest["training"]["calibration"]["images"] == 7
    assert manifest["training"]["conversion"]["io"] == "int8"
    assert integer_op_report(bundle.model_file) == []
    assert not list(tmp_path.glob(".*partial"))
    if find_compiler() is None:
        assert bundle.edgetpu_file is None
        assert NOT_FOUND in caplog.text
    assert bundle.float_file is None  # only with --float-model
    # the int8-io model classifies through the same device path
    from smartbin.device.classifier import Classifier

    prediction = Classifier(bundle, 1).classify(np.zeros((70, 90, 3), np.uint8)).prediction
    assert prediction.material.sum() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    "make_args",
    [
        lambda tmp, run: ["convert", str(tmp / "no-such-run"), "--out", str(tmp / "b")],
        lambda tmp, run: ["convert", str(tmp), "--out", str(tmp / "b")],  # no run.json
    ],
)
def test_convert_bad_run_dir_exits_2(tmp_path: Path, make_args, capsys) -> None:
    assert main(make_args(tmp_path, None)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "smartbin convert: error:" in err


def test_convert_refuses_an_output_folder_with_other_files(
    tiny_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    assert main(["convert", str(tiny_run), "--out", str(out)]) == 2
    assert "holiday.jpg" in capsys.readouterr().err
    assert (out / "holiday.jpg").exists()


def test_convert_reports_broken_run_json(tiny_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes((tiny_run / "model.keras").read_bytes())
    (run / "run.json").write_text(json.dumps({"split": {"validation": []}}))
    assert main(["convert", str(run), "--out", str(tmp_path / "b")]) == 2
    assert "split.train" in capsys.readouterr().err


def test_convert_rejects_bad_options(tiny_run: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["convert", str(tiny_run), "--out", str(tmp_path), "--io", "float16"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["convert", str(tiny_run), "--out", str(tmp_path), "--calibration-images", "0"])
    assert info.value.code == 2
