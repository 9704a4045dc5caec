"""`smartbin bench`: runs each benchmark briefly on the real tiny bundle and checks the
figures' structure (counts, ordering of percentiles, what was measured) - never timings
against a threshold, since the machine's speed is not what these tests are about."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from smartbin.benchmarks.latency import parse_threads, synthetic_frame
from smartbin.benchmarks.memory import STAGES, read_status
from smartbin.benchmarks.stats import summarize
from smartbin.benchmarks.system import cpu_model
from smartbin.cli import main
from smartbin.device.bundle import load_bundle

DATA = Path(__file__).parent / "data" / "trashnet"


def _check_summary(summary: dict, count: int) -> None:
    assert summary["count"] == count
    assert 0 < summary["min"] <= summary["p50"] <= summary["p90"] <= summary["p99"]
    assert summary["p99"] <= summary["max"]
    assert summary["min"] <= summary["mean"] <= summary["max"]


def test_latency_json_structure(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "figures" / "latency.json"
    argv = ["bench", "latency", str(tiny_bundle), "--threads", "1,2", "--runs", "7"]
    code = main([*argv, "--warmup", "2", "--no-progress", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    bundle = load_bundle(tiny_bundle)

    assert [r["threads"] for r in report["results"]] == [1, 2]
    for result in report["results"]:
        assert result["runs"] == 7 and result["warmup"] == 2
        assert result["on_edgetpu"] is False  # no Coral here and the tiny bundle has none
        for key in ("inference_ms", "preprocess_ms", "total_ms"):
            _check_summary(result[key], 7)
        # total = preprocess + inference, run by run, so the means add up.
        total = result["preprocess_ms"]["mean"] + result["inference_ms"]["mean"]
        assert result["total_ms"]["mean"] == pytest.approx(total)
        assert result["fps"] == pytest.approx(1000.0 / result["total_ms"]["mean"])
        assert result["load_ms"] > 0

    assert report["model"]["version"] == bundle.model_version
    assert report["model"]["size_bytes"] == bundle.model_file.stat().st_size
    assert report["model"]["input_size"] == bundle.input_size
    assert report["config"]["frame"] == {"width": 640, "height": 480}
    system = report["system"]
    assert system["runtime"] in ("ai-edge-litert", "tflite-runtime")
    assert system["runtime_version"]
    assert system["machine"] and system["cpu_model"]

    printed = capsys.readouterr().out
    assert bundle.model_version in printed
    assert "threads" in printed and "p99" in printed
    assert (
        len([line for line in printed.splitlines() if line.strip().startswith(("1 ", "2 "))]) == 2
    )


def test_latency_with_a_photo_and_frame_size(tiny_bundle, tmp_path):
    out = tmp_path / "latency.json"
    photo = DATA / "glass" / "glass100.jpg"
    argv = ["bench", "latency", str(tiny_bundle), "--threads", "1", "--runs", "3"]
    argv += ["--warmup", "0", "--image", str(photo), "--frame", "320x200", "--edgetpu", "off"]
    assert main([*argv, "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["image"] == str(photo)
    assert report["config"]["frame"] == {"width": 320, "height": 200}
    assert report["config"]["edgetpu"] == "off"
    _check_summary(report["results"][0]["inference_ms"], 3)


def test_memory_json_structure(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "memory.json"
    argv = ["bench", "memory", str(tiny_bundle), "--runs", "3", "--threads", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    child = report["child"]
    assert child["pid"] != os.getpid()  # measured in a fresh process, not this test session
    assert child["runs"] == 3 and child["threads"] == 1
    assert child["tensorflow_imported"] is False  # the bin's import set only
    assert child["model_version"] == load_bundle(tiny_bundle).model_version
    assert list(child["stages"]) == list(STAGES)
    peaks = [child["stages"][s]["peak_rss_mib"] for s in STAGES]
    assert all(p > 0 for p in peaks)
    assert peaks == sorted(peaks)  # a high-water mark never goes down
    for stage in STAGES:
        snap = child["stages"][stage]
        assert 0 < snap["rss_mib"] <= snap["peak_rss_mib"]
    # numpy, OpenCV and the runtime are tens of MiB: the import stage must show growth.
    assert child["deltas_mib"]["imports"] > 5
    assert "after 3 inferences" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "latency", "--threads", "0"],
        ["bench", "latency", "--threads", "1,x"],
        ["bench", "latency", "--runs", "0"],
        ["bench", "latency", "--frame", "640"],
        ["bench", "memory", "--edgetpu", "maybe"],
        ["bench"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err


def test_bad_bundle_and_image_are_one_line_errors(tiny_bundle, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["bench", "memory", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    argv = ["bench", "latency", str(tiny_bundle), "--runs", "1", "--image", str(not_image)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(not_image) in err and len(err.splitlines()) == 1


def test_json_target_refused_before_measuring(tiny_bundle, tmp_path, capsys):
    assert main(["bench", "latency", str(tiny_bundle), "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_summarize_percentiles():
    values = list(range(1, 102))  # 1..101: p50 = 51 by definition
    rng = np.random.default_rng(0)
    summary = summarize(rng.permutation(values).tolist())
    assert summary["count"] == 101
    assert summary["p50"] == 51 and summary["p90"] == 91 and summary["p99"] == 100
    assert summary["mean"] == 51 and summary["min"] == 1 and summary["max"] == 101
    with pytest.raises(ValueError):
        summarize([])


def test_parse_threads_and_synthetic_frame():
    assert parse_threads("1, 2,4") == (1, 2, 4)
    with pytest.raises(ValueError, match="'-1'"):
        parse_threads("2,-1")
    frame = synthetic_frame((64, 48))
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, synthetic_frame((64, 48)))  # seeded: same frame each time


def test_cpu_model_reads_arm_and_x86_cpuinfo(tmp_path):
    pi = tmp_path / "pi"
    pi.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t\t: Raspberry Pi 4 Model B\n")
    assert cpu_model(pi) == "Raspberry Pi 4 Model B"
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n")
    assert cpu_model(x86) == "Some CPU @ 2.0GHz"


def test_read_status_parses_kib(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n")
    assert read_status(status) == {"rss_mib": 100.0, "peak_rss_mib": 200.0}
    assert read_status(tmp_path / "absent") == {"rss_mib": None, "peak_rss_mib": None}
