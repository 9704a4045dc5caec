"""`smartbin train` and `smartbin data ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from smartbin.argtypes import (
    float_between,
    fold_of_folds,
    int_at_least,
    non_negative_int,
    positive_int,
)

DEFAULT_WEIGHTS = "../shared/weights/mobilenet_v2_1.0_224_no_top_imagenet.h5"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train` and `data`; TensorFlow is imported only when `train` runs."""
    parser = sub.add_parser(
        "train",
        help="train the two-head classifier on class-per-folder image trees",
        description=(
            "Transfer learning from ImageNet MobileNetV2: the heads are trained on the frozen "
            "backbone, then the top of the backbone is fine-tuned. The backbone is cut at "
            "--cut-layer; its frozen bottom runs once per augmented view (--views) and is "
            "cached, so fine-tuning is affordable on a CPU. Writes OUT/model.keras (float "
            "model) and OUT/run.json (config, data summary, split, history); then run "
            "`smartbin convert OUT --out BUNDLE`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "data", nargs="+", type=Path, help="image folders, one sub-folder per class"
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="local ImageNet MobileNetV2 no-top .h5 file (never downloaded); 'none' = random",
    )
    parser.add_argument(
        "--input-size", type=int_at_least(32), default=224, help="square input (px)"
    )
    parser.add_argument(
        "--resize",
        choices=("bilinear", "area", "stretch"),
        default="area",
        help="how pictures are scaled to the input size, recorded in the bundle so the bin "
        "does the same: area (shorter side, centre crop; the shipped model's), bilinear "
        "(the same crop, 3x faster on the bin; a point lower on web images than area in "
        "the runs so far) or stretch (the whole frame squashed to the square, nothing cut)",
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    parser.add_argument(
        "--cut-layer",
        default="block_9_add",
        help="last frozen backbone layer ('input' = fine-tune the whole backbone)",
    )
    parser.add_argument("--views", type=positive_int, default=4, help="cached views per image")
    parser.add_argument("--head-epochs", type=int_at_least(0), default=30, help="phase 1 (heads)")
    parser.add_argument("--epochs", type=int_at_least(0), default=20, help="phase 2 (fine-tune)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per training step"
    )
    parser.add_argument("--lr-head", type=float, default=1e-3, help="phase 1 learning rate")
    parser.add_argument("--lr", type=float, default=1e-4, help="phase 2 peak learning rate")
    parser.add_argument("--patience", type=positive_int, default=5, help="early-stopping patience")
    parser.add_argument(
        "--dropout",
        type=float_between(0.0, 0.9),
        default=0.2,
        help="dropout before both heads",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float_between(0.0, 0.5),
        default=0.1,
        help="share of each target spread evenly over all classes",
    )
    parser.add_argument(
        "--val-fraction",
        type=float_between(0.01, 0.99),
        default=0.2,
        help="share held out for validation, chosen by each image's content hash (the same"
        " images on every run and machine)",
    )
    parser.add_argument(
        "--limit-per-class",
        type=positive_int,
        default=None,
        help="at most N per class",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seed of weights, augmentation and batch order (not of the split)",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="image decoding threads")
    parser.add_argument(
        "--teacher",
        action="append",
        default=None,
        metavar="BUNDLE_OR_MODEL",
        help="knowledge distillation: a bundle ('default' = the shipped one) or a .keras model "
        "whose predictions are blended into the training targets; repeat it to blend the mean "
        "of several (each reads images by its own preprocessing)",
    )
    parser.add_argument(
        "--fold",
        type=fold_of_folds,
        default=None,
        metavar="K/N",
        help="cross-fitted teacher: leave fold K of N of the training images out (folds by "
        "content hash; validation unchanged); such runs' model.keras given as --teacher each "
        "teach only the images they did not train on",
    )
    parser.add_argument(
        "--distill-weight",
        type=float_between(0.0, 1.0),
        default=0.5,
        help="share of the teachers' probabilities in each target (with --teacher)",
    )
    parser.add_argument(
        "--int8-bottom",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="quantisation-aware top: train on the features of the frozen bottom quantised to "
        "int8 (calibrated on N training images: give convert's --calibration-images), not on "
        "the float ones; needs a --cut-layer other than 'input'; 0 = off",
    )
    parser.add_argument(
        "--ema",
        type=float_between(0.0, 1.0, include_high=False),
        default=0.0,
        metavar="MOMENTUM",
        help="fine-tune with an exponential moving average of the weights (e.g. 0.998, about "
        "the last 500 steps): validation, early stopping and the saved model use the average; "
        "0 = off",
    )
    parser.add_argument(
        "--mixup",
        type=float_between(0.0, 10.0),
        default=0.0,
        metavar="ALPHA",
        help="train on blends of two images' cached features and of their targets, the share "
        "drawn from Beta(ALPHA, ALPHA) (e.g. 0.2); only images labelled for the same heads are "
        "blended; 0 = off",
    )
    parser.add_argument(
        "--translate",
        type=float_between(0.0, 0.5),
        default=0.0,
        metavar="SHARE",
        help="also shift each training view by up to SHARE of its side (e.g. 0.1), so the "
        "item is not always centred; 0 = off",
    )
    parser.add_argument(
        "--free-aspect",
        action="store_true",
        help="zoom each training view's width and height independently, so items are seen "
        "squashed and stretched too (default: one zoom for both)",
    )
    parser.set_defaults(func=_run_train)

    try:
        from smartbin.train.data_cli import register_data
    except ImportError:  # pragma: no cover - data_cli is part of the package
        return
    register_data(sub)


def _run_train(args: argparse.Namespace) -> int:
    from smartbin.errors import SmartbinError

    for folder in args.data:
        if not folder.is_dir():
            raise SmartbinError(f"data folder not found: {folder}")
    weights = None if str(args.weights).lower() == "none" else args.weights
    if weights is not None and not Path(weights).is_file():
        raise SmartbinError(f"weights file not found: {weights} (pass --weights PATH or none)")

    teachers = list(args.teacher or ())
    for teacher in teachers:
        _check_teacher(teacher)
    if args.int8_bottom:
        from smartbin.train.model import FULL_FINE_TUNE

        if args.cut_layer == FULL_FINE_TUNE:
            raise SmartbinError(
                f"--int8-bottom needs a frozen bottom: a --cut-layer other than {FULL_FINE_TUNE!r}"
            )

    from smartbin.device.preprocess import RESIZE_NAMES
    from smartbin.train.fit import TrainConfig, train

    config = TrainConfig(
        data=[str(p) for p in args.data],
        out=str(args.out),
        weights=str(weights) if weights else None,
        input_size=args.input_size,
        resize=RESIZE_NAMES[args.resize],
        alpha=args.alpha,
        cut_layer=args.cut_layer,
        views=args.views,
        head_epochs=args.head_epochs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_head=args.lr_head,
        lr=args.lr,
        patience=args.patience,
        dropout=args.dropout,
        label_smoothing=args.label_smoothing,
        val_fraction=args.val_fraction,
        limit_per_class=args.limit_per_class,
        seed=args.seed,
        workers=args.workers,
        int8_bottom=args.int8_bottom,
        ema=args.ema,
        mixup=args.mixup,
        translate=args.translate,
        free_aspect=args.free_aspect,
        teachers=teachers,
        distill_weight=args.distill_weight,
        fold=args.fold,
    )
    out = train(config)
    print(f"wrote {out / 'model.keras'} and {out / 'run.json'}")
    return 0


def _check_teacher(spec: str) -> None:
    """Refuse a missing or broken teacher before minutes of image loading, not after."""
    from smartbin.errors import SmartbinError

    if spec.endswith(".keras"):
        if not Path(spec).is_file():
            raise SmartbinError(f"teacher model not found: {spec}")
        return
    from smartbin.device.bundle import load_bundle

    try:
        load_bundle(spec)
    except SmartbinError as exc:
        raise SmartbinError(f"teacher: {exc}") from None
