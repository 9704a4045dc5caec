"""`smartbin bench`: runs the benchmark briefly on the real tiny bundle (int8 + float32 models),
the sample clip and a real mosquitto, and checks the figures' structure (counts, ordering of
percentiles, shares, what was measured) - never a time or a speed against a threshold, since
the machine's speed is not what these tests are about."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from smartbin.benchmarks.bench import (
    BenchConfig,
    default_threads,
    format_bench,
    parse_threads,
    parse_xnnpack,
    run_bench,
)
from smartbin.benchmarks.memory import STAGES as MEMORY_STAGES
from smartbin.benchmarks.memory import read_status
from smartbin.benchmarks.pipeline import BIN_ID, SAMPLE_CLIP, STAGES, parse_broker
from smartbin.benchmarks.stats import summarize
from smartbin.benchmarks.system import cpu_model
from smartbin.cli import main
from smartbin.device.broker import free_port
from smartbin.device.bundle import load_bundle

TIMING_KEYS = ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "stdev_ms")


def _check_summary(summary: dict, count: int | None = None) -> None:
    if count is not None:
        assert summary["count"] == count
    assert 0 < summary["min_ms"] <= summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
    assert summary["p99_ms"] <= summary["max_ms"]
    assert summary["min_ms"] <= summary["mean_ms"] <= summary["max_ms"]
    assert summary["stdev_ms"] >= 0


def test_bench_tiny_bundle(tiny_bundle, broker, subscriber_factory, tmp_path, capsys):
    events = subscriber_factory(broker, topics=(f"smartbin/{BIN_ID}/event",))
    out = tmp_path / "figures" / "bench.json"
    argv = ["bench", str(tiny_bundle), "--threads", "1,2", "--runs", "6", "--warmup", "3"]
    argv += ["--broker", f"{broker.host}:{broker.port}", "--clip", str(SAMPLE_CLIP)]
    assert main([*argv, "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    bundle = load_bundle(tiny_bundle)

    # invoke: every variant x threads x XNNPACK mode, all measurable with LiteRT.
    rows = report["invoke_table"]
    assert {(r["model"], r["threads"], r["xnnpack"]) for r in rows} == {
        (model, threads, xnnpack)
        for model in ("int8", "float32")
        for threads in (1, 2)
        for xnnpack in (True, False)
    }
    files = {"int8": bundle.model_file, "float32": bundle.float_file}
    for row in rows:
        assert row["available"] is True and row["runs"] == 6 and row["warmup"] == 3
        _check_summary(row, 6)
        assert row["fps"] == pytest.approx(1000.0 / row["mean_ms"])
        assert row["load_ms"] > 0
        assert row["size_bytes"] == files[row["model"]].stat().st_size
        assert row["input_dtype"] == ("float32" if row["model"] == "float32" else "uint8")
    headline = report["invoke"]
    assert (headline["model"], headline["threads"], headline["xnnpack"]) == ("int8", 2, True)
    source = next(r for r in rows if (r["model"], r["threads"], r["xnnpack"]) == ("int8", 2, True))
    assert {k: headline[k] for k in (*TIMING_KEYS, "fps")} == {
        k: source[k] for k in (*TIMING_KEYS, "fps")
    }

    # pipeline: whole items, shares of the per-frame mean that add up, publish per event.
    pipeline = report["pipeline"]
    k = pipeline["publish_per_frames"]
    assert k == 3  # PresenceSettings' frames_to_classify, as shipped in smartbin.toml
    assert pipeline["warmup_items"] == 1
    assert pipeline["classified_frames"] == pipeline["items"] * k >= 6
    _check_summary(pipeline, pipeline["classified_frames"])
    _check_summary(pipeline["inference_thread"], pipeline["classified_frames"])
    assert list(pipeline["stages"]) == list(STAGES)
    assert sum(s["share"] for s in pipeline["stages"].values()) == pytest.approx(1.0)
    assert sum(s["mean_ms"] for s in pipeline["stages"].values()) == pytest.approx(
        pipeline["mean_ms"]
    )
    for name in ("decode", "presence", "preprocess", "invoke", "postprocess", "publish"):
        assert pipeline["stages"][name]["mean_ms"] > 0, name
    for part in ("submit_ms", "deliver_ms", "total_ms"):
        _check_summary(pipeline["publish_per_event"][part], pipeline["items"])
    assert pipeline["idle_frame"]["count"] > 0
    assert pipeline["model"] == "int8" and pipeline["threads"] == 2
    assert pipeline["qos"] == 1 and pipeline["waits_for_ack"] is True
    assert str(broker.port) in pipeline["broker"]
    assert pipeline["clip"]["width"] == 320 and pipeline["clip"]["height"] == 240
    ratio = report["pipeline_over_invoke"]
    assert ratio == pytest.approx(pipeline["p50_ms"] / headline["p50_ms"])
    assert report["target"] == {"pipeline_over_invoke_max": 1.10, "met": ratio <= 1.10}
    # Every event (warm-up items too) reached the real broker.
    events.wait_for(f"smartbin/{BIN_ID}/event", pipeline["items"] + pipeline["warmup_items"])

    memory = report["memory"]
    assert memory["pid"] != os.getpid()  # a fresh process, not this test session
    assert memory["tensorflow_imported"] is False
    assert list(memory["stages"]) == list(MEMORY_STAGES)
    peaks = [memory["stages"][s]["peak_rss_mib"] for s in MEMORY_STAGES]
    assert peaks == sorted(peaks) and memory["peak_rss_mib"] == peaks[-1] > 0

    system = report["system"]
    assert system["runtime"] in ("ai-edge-litert", "tflite-runtime")
    assert system["machine"] and system["cpu_model"]
    assert report["config"]["threads"] == [1, 2]

    printed = capsys.readouterr().out
    assert printed.strip() == format_bench(report)
    assert bundle.model_version in printed and "pipeline / invoke" in printed
    table = [line.split() for line in printed.splitlines()]
    assert sum(1 for cells in table if cells[:1] == ["float32"] and cells[2:3] == ["off"]) == 2
    stage_rows = [cells[0] for cells in table if len(cells) == 5 and cells[-1] == "%"]
    assert stage_rows == [*STAGES, "total/frame"]


def test_python_api_without_pipeline_always_times_the_headline(tiny_bundle):
    """What the sweep script calls: XNNPACK off only still gives the bin's own row."""
    config = BenchConfig(
        tiny_bundle, threads=(1,), runs=3, warmup=0, xnnpack=(False,), pipeline=False, memory=False
    )
    report = run_bench(config, show_progress=False)
    assert report["pipeline"] is None and report["pipeline_over_invoke"] is None
    assert report["memory"] is None
    keys = {(r["model"], r["xnnpack"]) for r in report["invoke_table"]}
    assert keys == {("int8", False), ("float32", False), ("int8", True)}
    assert report["invoke"]["model"] == "int8" and report["invoke"]["threads"] == 1
    json.dumps(report)  # what --json writes


def test_bench_default_bundle_without_tensorflow(tmp_path):
    """The acceptance interface, in a fresh process with the broker it starts itself."""
    out = tmp_path / "default.json"
    argv = ["bench", "default", "--threads", "1", "--runs", "3", "--warmup", "1"]
    argv += ["--xnnpack", "on", "--no-memory", "--no-progress", "--json", str(out)]
    code = (
        "import sys; from smartbin.cli import main; rc = main(sys.argv[1:]); "
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF'); sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "NO-TF"
    report = json.loads(out.read_text())
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        assert report["invoke"][key] > 0
    assert report["pipeline"]["p50_ms"] > 0
    assert report["pipeline_over_invoke"] > 0
    assert "mosquitto" in report["pipeline"]["broker"]
    assert report["model"]["has_float_model"] is False  # the shipped bundle has none


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--threads", "0"],
        ["bench", "--threads", "1,x"],
        ["bench", "--runs", "0"],
        ["bench", "--warmup", "-1"],
        ["bench", "--xnnpack", "maybe"],
        ["bench", "--edgetpu", "maybe"],
        ["bench", "--broker", "localhost:99999"],
        ["bench", "default", "extra"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err


def test_bad_paths_and_broker_are_one_line_errors_before_measuring(tiny_bundle, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["bench", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["bench", str(tiny_bundle), "--clip", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and len(err.splitlines()) == 1
    assert main(["bench", str(tiny_bundle), "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    nobody = f"127.0.0.1:{free_port()}"
    assert main(["bench", str(tiny_bundle), "--broker", nobody, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert nobody in err and "no MQTT broker" in err and len(err.splitlines()) == 1


def test_summarize_percentiles():
    values = list(range(1, 102))  # 1..101: p50 = 51 by definition
    rng = np.random.default_rng(0)
    summary = summarize(rng.permutation(values).tolist())
    assert summary["count"] == 101
    assert summary["p50_ms"] == 51 and summary["p90_ms"] == 91 and summary["p99_ms"] == 100
    assert summary["mean_ms"] == 51 and summary["min_ms"] == 1 and summary["max_ms"] == 101
    assert summary["stdev_ms"] == pytest.approx(np.std(values, ddof=1))
    assert summarize([2.0])["stdev_ms"] == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_option_parsers():
    assert parse_threads("1, 2,4,2") == (1, 2, 4)
    with pytest.raises(ValueError, match="'-1'"):
        parse_threads("2,-1")
    assert parse_xnnpack("on,off") == (True, False) and parse_xnnpack("off") == (False,)
    with pytest.raises(ValueError):
        parse_xnnpack("on,maybe")
    assert parse_broker("broker.lan") == ("broker.lan", 1883)
    assert parse_broker("10.0.0.2:1884") == ("10.0.0.2", 1884)
    for bad in (":1883", "host:0", "host:x"):
        with pytest.raises(ValueError):
            parse_broker(bad)
    assert default_threads(1) == (1,) and default_threads(2) == (1, 2)
    assert default_threads(4) == (1, 2, 4) and default_threads(6) == (1, 2, 4, 6)
    assert default_threads(64) == (1, 2, 4, 8)


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


def test_sample_clip_is_where_the_benchmark_looks():
    """The default --clip: a moved sample clip would break `smartbin bench` with no option."""
    assert SAMPLE_CLIP.is_file() and SAMPLE_CLIP.parts[-3:] == (
        "firmware_config",
        "sample",
        "demo.mp4",
    )
