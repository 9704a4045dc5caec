"""Subcommands of this part: ``convert``, ``evaluate`` and ``classify``.

Heavy imports (TensorFlow for ``convert`` and for evaluating a ``.keras`` file) happen inside
the command functions only; ``evaluate`` on a bundle and ``classify`` run on the device install.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from smartbin.argtypes import positive_int, probability


def register(sub: argparse._SubParsersAction) -> None:
    """Add this part's subcommands; heavy imports happen inside each command's function."""
    convert = sub.add_parser(
        "convert",
        help="convert a training run into an int8 model bundle",
        description=(
            "Quantise RUN_DIR/model.keras (written by `smartbin train`) to a full-integer int8 "
            "TFLite model, calibrated on training images from RUN_DIR/run.json; refuse it if any "
            "float op remains; compile an Edge TPU variant when edgetpu_compiler is installed; "
            "measure float vs int8 accuracy on the run's validation images; write a verified "
            "bundle (bundle.json + model.tflite [+ model_edgetpu.tflite]) to --out."
        ),
    )
    convert.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `smartbin train`")
    convert.add_argument(
        "--out", required=True, metavar="BUNDLE_DIR", help="bundle folder to write (new or empty)"
    )
    convert.add_argument(
        "--calibration-images",
        type=positive_int,
        default=300,
        metavar="N",
        help="training images used to calibrate int8 ranges, stratified over classes "
        "(default: 300)",
    )
    convert.add_argument(
        "--io",
        choices=("uint8", "int8"),
        default="uint8",
        help="dtype of the model's input and outputs (default: uint8, camera bytes as they are)",
    )
    convert.add_argument(
        "--edgetpu",
        choices=("auto", "off"),
        default="auto",
        help="auto: add model_edgetpu.tflite if edgetpu_compiler is on PATH (default); off: never",
    )
    convert.add_argument(
        "--unknown-threshold",
        type=probability,
        default=0.5,
        metavar="P",
        help="the bin answers 'unknown' below this confidence (stored in the bundle; default 0.5)",
    )
    convert.add_argument(
        "--float-model",
        action="store_true",
        help="also write model_float.tflite, the float32 reference that `smartbin bench` times "
        "against the int8 model (the bin never runs it; it is ~4x bigger)",
    )
    convert.add_argument(
        "--model-version",
        metavar="STR",
        help="version string for the bundle (default: <UTC date>-<first 8 of model sha256>)",
    )
    convert.set_defaults(func=_convert)

    evaluate = sub.add_parser(
        "evaluate",
        help="measure a bundle or a .keras model on labelled image folders",
        description=(
            "Run MODEL over every image in DATA_DIR (one sub-folder per class, named by the "
            "label convention: cardboard, glass, metal, paper, plastic, trash, organic/O, "
            "recyclable/R) and write per-head accuracy, per-class precision/recall/F1, "
            "confusion matrices, the binary head's ROC AUC, the bin's final decision and "
            "per-source numbers to --json, plus PNG plots when matplotlib is installed. "
            "A bundle is evaluated with the device runtime only (no TensorFlow)."
        ),
    )
    evaluate.add_argument(
        "model",
        metavar="BUNDLE_OR_MODEL",
        help="bundle folder, its bundle.json, `default` (the shipped bundle) or a .keras file",
    )
    evaluate.add_argument("data", nargs="*", metavar="DATA_DIR", help="labelled image folder(s)")
    evaluate.add_argument(
        "--split",
        metavar="RUN_DIR",
        help="instead of DATA_DIR: the validation images listed in RUN_DIR/run.json "
        "(held out from that training run)",
    )
    evaluate.add_argument("--json", required=True, metavar="OUT.json", help="report file to write")
    evaluate.add_argument(
        "--report-dir", metavar="DIR", help="where plots go (default: next to OUT.json)"
    )
    evaluate.add_argument(
        "--threads", type=positive_int, metavar="N", help="interpreter threads (bundle only)"
    )
    evaluate.add_argument(
        "--unknown-threshold",
        type=probability,
        metavar="P",
        help="decision threshold (default: the bundle's, 0.5 for a .keras model)",
    )
    evaluate.set_defaults(func=_evaluate)

    classify = sub.add_parser(
        "classify",
        help="classify image files with a bundle",
        description=(
            "Print, for each image, the bin's decision (organic, a material, or unknown) with "
            "its confidence and the top probabilities of both heads. Exit 1 if any image "
            "could not be read."
        ),
    )
    classify.add_argument(
        "bundle", metavar="BUNDLE", help="bundle folder, its bundle.json, or `default`"
    )
    classify.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    classify.add_argument("--threads", type=positive_int, metavar="N", help="interpreter threads")
    classify.add_argument(
        "--top", type=positive_int, default=3, metavar="K", help="material classes shown (3)"
    )
    classify.set_defaults(func=_classify)


def _convert(args: argparse.Namespace) -> int:
    from smartbin.convert.pipeline import convert_run, format_drop

    result = convert_run(
        args.run_dir,
        args.out,
        calibration_images=args.calibration_images,
        io_type=args.io,
        edgetpu=args.edgetpu,
        unknown_threshold=args.unknown_threshold,
        model_version=args.model_version,
        float_model=args.float_model,
        command=shlex.join(["smartbin", *sys.argv[1:]]),
    )
    print(format_drop(result.metrics))
    bundle = result.bundle
    variant = " (+ Edge TPU)" if bundle.edgetpu_file else ""
    print(f"bundle {bundle.model_version}{variant} written to {bundle.folder}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from smartbin.train.evaluate import run_evaluate

    return run_evaluate(args)


def _classify(args: argparse.Namespace) -> int:
    from smartbin.convert.classify import run_classify

    return run_classify(args.bundle, args.images, threads=args.threads, top=args.top)
