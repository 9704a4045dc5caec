"""Training: transfer learning from ImageNet MobileNetV2, a frozen-backbone phase, then fine-tuning.

Why a feature cache: on a 2-core CPU a full MobileNetV2 pass per image per epoch is what makes
fine-tuning slow. The backbone is cut at ``cut_layer``; the frozen *bottom* runs once per
augmented view of each training image (``views`` views: flip, rotation, zoom, brightness,
contrast), and its outputs are cached. Phase 1 trains the heads on pooled features of the
frozen backbone; phase 2 unfreezes the *top* of the backbone and fine-tunes it with the heads on
the cached views, a random view per image per epoch. ``cut_layer="input"`` caches augmented
pixels instead and fine-tunes the whole backbone (a GPU job).

Missing labels are masked: an image of ``organic`` trains the binary head only, one of ``trash``
the material head only; the other head gets sample weight 0, never an invented label.

Knowledge distillation (``teachers``): small students (MobileNetV2 alpha 0.35/0.5) have no
pretrained weights here, so they learn from a trained model instead. The teacher (a bundle or
a ``.keras`` model, at its own input size and resize rule) predicts every training image once;
each known label's target becomes ``(1 - distill_weight) * one-hot + distill_weight * teacher``.
The teacher's probabilities carry what it learned about similar classes (paper vs cardboard),
which a one-hot label does not. Several teachers act as one, the mean of their probabilities:
models whose mistakes differ (a centre-crop and a whole-frame one) can average into a better
teacher than either (train/EXPERIMENTS.md, v21), and the student still runs one model. A head
whose label is missing stays masked: the teacher fills in no label the folder did not give.

Cross-fitted teachers (``fold``): a teacher's probabilities on its own training images are
nearly the labels (v22 in train/EXPERIMENTS.md), so they teach little. A run with ``fold=(k, n)``
leaves training fold k of n out; given such runs as teachers, each training image takes the mean
of the teachers that did not train on it (their ``run.json`` says which did), and of all of them
only where every teacher saw it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from smartbin.device.labels import BINARY_CLASSES, HEAD_CLASSES, HEADS, MATERIAL_CLASSES
from smartbin.device.preprocess import (
    DEFAULT_RESIZE,
    check_resize,
    load_image_rgb,
    prepare_image,
)
from smartbin.errors import ImageReadError, SmartbinError
from smartbin.train.data import (
    DataSplit,
    Problem,
    Sample,
    class_weights,
    discover,
    split_samples,
)
from smartbin.train.int8_bottom import Int8Bottom
from smartbin.train.view_cache import ViewCache

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    weights: str | None
    input_size: int = 224
    resize: str = DEFAULT_RESIZE
    alpha: float = 1.0
    cut_layer: str = "block_9_add"
    views: int = 4
    head_epochs: int = 30
    epochs: int = 20
    batch_size: int = 32
    lr_head: float = 1e-3
    lr: float = 1e-4
    patience: int = 5
    dropout: float = 0.2
    label_smoothing: float = 0.1
    val_fraction: float = 0.2
    limit_per_class: int | None = None
    seed: int = 42
    workers: int = 2
    #: Bundles or ``.keras`` models whose mean probabilities are blended into the targets.
    teachers: list[str] = field(default_factory=list)
    distill_weight: float = 0.5
    #: Calibration images for an int8 bottom (0 = train on the float bottom's features).
    int8_bottom: int = 0
    #: Momentum of the fine-tuning phase's weight average (0 = off): see weight_average.py.
    ema: float = 0.0
    #: Beta(alpha, alpha) of mixup on the cached features (0 = off): see mixup.py.
    mixup: float = 0.0
    #: Largest random shift of a view, as a share of its side (0 = off): see ``_augmenter``.
    translate: float = 0.0
    #: Zoom a view's width and height independently (its aspect ratio changes): see ``_augmenter``.
    free_aspect: bool = False
    #: ``(k, n)``: leave training fold k of n out (a cross-fitted teacher); None = train on all.
    fold: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)


def _entry(sample: Sample) -> dict:
    return {
        "path": str(sample.path),
        "sha1": sample.sha1,
        "binary": sample.binary,
        "material": sample.material,
        "source": sample.source,
    }


def _limit(samples: list[Sample], per_class: int | None) -> list[Sample]:
    """Deterministic subsample for small configs: the first N per class folder in sha1 order."""
    if per_class is None:
        return samples
    kept: dict[tuple[str, str], list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.sha1):
        group = kept.setdefault((sample.source, sample.folder), [])
        if len(group) < per_class:
            group.append(sample)
    return [s for group in kept.values() for s in group]


def load_images(
    samples: list[Sample], size: int, resize: str, workers: int, desc: str
) -> np.ndarray:
    """Decode and prepare every image with THE preprocessing; uint8 N x size x size x 3."""

    def one(sample: Sample) -> np.ndarray:
        return prepare_image(load_image_rgb(sample.path), size, resize)

    out = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, image in enumerate(tqdm(pool.map(one, samples), total=len(samples), desc=desc)):
            out[i] = image
    return out


def targets(samples: list[Sample], weights: dict[str, dict[int, float]] | None) -> tuple:
    """One-hot labels per head (missing -> zeros) and sample weights (0 where missing, else the
    class weight)."""
    y, w = {}, {}
    for head in HEADS:
        labels = np.array(
            [getattr(s, head) if getattr(s, head) is not None else -1 for s in samples]
        )
        known = labels >= 0
        classes = len(BINARY_CLASSES if head == "binary" else MATERIAL_CLASSES)
        # One-hot (label smoothing needs it); a missing label is an all-zero row, weight 0.
        y[head] = np.eye(classes, dtype="float32")[np.where(known, labels, 0)] * known[:, None]
        if weights is None:
            w[head] = known.astype("float32")
        else:
            table = weights[head]
            w[head] = np.array(
                [
                    table.get(int(lab), 1.0) if k else 0.0
                    for lab, k in zip(labels, known, strict=True)
                ],
                dtype="float32",
            )
    return y, w


def blend_with_teacher(
    y: dict[str, np.ndarray], teacher: dict[str, np.ndarray], weight: float
) -> dict[str, np.ndarray]:
    """Distillation targets: ``(1 - weight) * label + weight * teacher`` where a label is known;
    a missing label's all-zero row stays all zero (masked, never invented)."""
    blended = {}
    for head in HEADS:
        known = y[head].sum(axis=1, keepdims=True) > 0
        soft = teacher[head] / np.maximum(teacher[head].sum(axis=1, keepdims=True), 1e-12)
        blended[head] = np.where(known, (1.0 - weight) * y[head] + weight * soft, 0.0).astype(
            "float32"
        )
    return blended


def teacher_predictions(
    specs: Sequence[str], samples: list[Sample], threads: int
) -> dict[str, np.ndarray]:
    """Both heads' probabilities for each sample, in order: the mean over the teachers (those
    that did not train on it, where any), each at its own input size and resize rule through THE
    preprocessing."""
    from smartbin.train.evaluate import open_predictor, predict_items

    if not specs:
        raise ValueError("teacher_predictions needs at least one teacher")
    # Which teacher teaches which image, known before minutes of predicting: those that did
    # not train on it, or all of them where every teacher did.
    not_seen = np.array(
        [
            [s.sha1 not in seen and str(s.path) not in seen for s in samples]
            for seen in map(teacher_training_images, specs)
        ]
    )
    fitted = not_seen.any(axis=0)
    share = np.where(fitted, not_seen, True).astype(np.float64)
    share /= share.sum(axis=0)
    if len(specs) > 1 or not fitted.all():
        log.info(
            "teachers: %d of %d training images predicted by a teacher that did not train on them",
            int(fitted.sum()),
            len(samples),
        )
    total = {head: np.zeros((len(samples), len(HEAD_CLASSES[head])), np.float64) for head in HEADS}
    for number, spec in enumerate(specs, 1):
        predictor = open_predictor(spec, threads, None)
        predictions = predict_items(predictor, samples, desc=f"teacher {number}/{len(specs)}")
        if len(predictions.items) != len(samples):
            failed = ", ".join(f["path"] for f in predictions.failed[:3])
            raise SmartbinError(f"teacher {spec} could not read every training image: {failed}")
        for head in HEADS:
            total[head] += predictions.probs(head) * share[number - 1][:, None]
    return {head: total[head].astype(np.float32) for head in HEADS}


def teacher_training_images(spec: str) -> set[str]:
    """Content hashes (and paths, for runs older than the hashes) of the images a ``.keras``
    teacher trained on, from the ``run.json`` beside it; empty for a bundle, which does not list
    them, so a bundle teaches every image."""
    run_file = Path(spec).expanduser().with_name("run.json")
    if not spec.endswith(".keras") or not run_file.is_file():
        return set()
    try:
        entries = json.loads(run_file.read_text(encoding="utf-8"))["split"]["train"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SmartbinError(f"teacher {spec}: unreadable {run_file}: {exc}") from None
    return {e["sha1"] for e in entries if "sha1" in e} | {e["path"] for e in entries}


def _augmenter(seed: int, translate: float = 0.0, free_aspect: bool = False):
    """The training views' random changes.

    Flips, rotation and zoom all keep the item where the preprocessing put it (the centre) and
    its shape; ``translate`` moves it off centre and ``free_aspect`` squashes or stretches it,
    as a camera in a bin, not a studio, sees items. Both default off, so that the commands of
    earlier runs still build the same augmenter (same layers, same seeds)."""
    import keras
    from keras import layers

    zoom = (-0.2, 0.1)
    stages = [
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomRotation(0.08, fill_mode="reflect", seed=seed + 1),
        layers.RandomZoom(zoom, zoom if free_aspect else None, fill_mode="reflect", seed=seed + 2),
        layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 3),
        layers.RandomContrast(0.2, seed=seed + 4),
    ]
    if translate > 0:
        stages.append(layers.RandomTranslation(translate, translate, "reflect", seed=seed + 5))
    return keras.Sequential(stages, name="augment")


def _view_model(bottom, augment, shape: tuple):
    """``augment`` (in training mode) -> clip to 0..255 -> ``bottom``, as one model.

    Why: ``predict_on_batch`` runs it as one compiled program (XLA under JAX, a graph under
    TensorFlow). Called eagerly, layer by layer, caching the views was the slowest step of a
    GPU run: about 250 images/s on an H200 under JAX, longer than 40 epochs of fine-tuning.
    ``predict`` calls models with ``training=False``; the wrapper keeps the augmentation on
    (its random state advances batch by batch), while the frozen ``bottom`` stays in inference
    mode."""
    if augment is None:
        return bottom
    import keras

    class AlwaysAugment(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__(name="always_augment")
            self.augment = augment

        def call(self, x):
            return keras.ops.clip(self.augment(x, training=True), 0.0, 255.0)

    stages = [keras.Input(shape), AlwaysAugment()] + ([bottom] if bottom is not None else [])
    return keras.Sequential(stages, name="view")


def cache_views(
    bottom,
    images: np.ndarray,
    views: int,
    augment,
    batch: int,
    desc: str,
    int8_bottom: Int8Bottom | None = None,
) -> ViewCache:
    """Bottom-of-backbone outputs for ``views`` augmented copies (plain when ``augment`` is None).

    Always through ``bottom`` (the model's own scaling, and the frozen layers if any), so the
    trained ``top`` and the exported ``full`` model see the same numbers; or through
    ``int8_bottom``, the same layers as the int8 model computes them (kept as int8 codes)."""
    view_model = _view_model(bottom if int8_bottom is None else None, augment, images.shape[1:])
    grid = int8_bottom.grid if int8_bottom is not None else None
    cached = []
    for view in range(views):
        parts = []
        for start in tqdm(range(0, len(images), batch), desc=f"{desc} view {view + 1}/{views}"):
            feats = images[start : start + batch].astype("float32")
            if view_model is not None:
                feats = np.asarray(view_model.predict_on_batch(feats))
            if int8_bottom is not None:
                feats = int8_bottom(feats)
            parts.append(ViewCache.encode(feats, grid))
        cached.append(np.concatenate(parts))
    return ViewCache(cached, grid)


def _make_view_dataset(
    cache: ViewCache, y: dict, w: dict, batch: int, seed: int, mixup: float = 0.0
):
    import keras

    from smartbin.train.mixup import label_groups, mix_batch

    groups = label_groups(w)

    class ViewDataset(keras.utils.PyDataset):
        """Each epoch: a new order and, per image, one of its cached augmented views (blended
        with another image's by ``mixup`` > 0)."""

        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.n = cache.images
            self.epoch = -1
            self.on_epoch_end()

        def __len__(self) -> int:
            return math.ceil(self.n / batch)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self.rng.permutation(self.n)
            self.view = self.rng.integers(0, len(cache.views), self.n)

        def __getitem__(self, index: int):
            idx = np.sort(self.order[index * batch : (index + 1) * batch])
            x = cache.batch(idx, self.view[idx])
            y_batch = {h: y[h][idx] for h in HEADS}
            w_batch = {h: w[h][idx] for h in HEADS}
            # Seeded by (seed, epoch, batch), not drawn from self.rng: the same blends
            # whatever order Keras asks for the batches in.
            blend_rng = np.random.default_rng((seed, self.epoch, index))
            return mix_batch(x, y_batch, w_batch, groups[idx], mixup, blend_rng)

    return ViewDataset()


def _compile(model, learning_rate, smoothing: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={h: keras.losses.CategoricalCrossentropy(label_smoothing=smoothing) for h in HEADS},
        weighted_metrics={h: ["categorical_accuracy"] for h in HEADS},
    )


def _callbacks(patience: int, checkpoint: Path):
    import keras

    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint), monitor="val_loss", save_best_only=True, save_weights_only=True
        ),
    ]


def _validation_accuracy(probs: dict, samples: list[Sample]) -> dict:
    """Accuracy per head and per data source on the validation split (quick training summary;
    `smartbin evaluate` / `convert` give the full report)."""
    result: dict = {}
    for head in HEADS:
        for source in sorted({s.source for s in samples}) + ["all"]:
            idx = [
                i
                for i, s in enumerate(samples)
                if getattr(s, head) is not None and source in ("all", s.source)
            ]
            if not idx:
                continue
            truth = np.array([getattr(samples[i], head) for i in idx])
            pred = np.argmax(probs[head][idx], axis=1)
            result.setdefault(head, {})[source] = {
                "accuracy": round(float(np.mean(pred == truth)), 4),
                "n": len(idx),
            }
    return result


def estimate_batchnorm(model, images: np.ndarray) -> None:
    """Set every BatchNorm's statistics from one batch of training images.

    Only for a backbone without pretrained weights (``--weights none``, the tests' tiny
    models): its BatchNorm layers still hold their initial statistics (mean 0, variance 1),
    which leave a frozen random backbone's features vanishing or saturated, so the heads learn
    nothing. One forward pass in training mode with momentum 0 makes the stored statistics
    those of the data; inference then normalises like training does.
    """
    import keras

    def walk(layer):
        yield layer
        for child in getattr(layer, "layers", []):
            yield from walk(child)

    norms = [x for x in walk(model) if isinstance(x, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    for layer in norms:
        layer.momentum, layer.trainable = 0.0, True
    model(images.astype("float32"), training=True)
    for layer, (momentum, trainable) in zip(norms, saved, strict=True):
        layer.momentum, layer.trainable = momentum, trainable


def distribution_scope() -> contextlib.AbstractContextManager:
    """``tf.distribute.MirroredStrategy`` when TensorFlow sees more than one GPU (batches are
    split across them); a no-op on one GPU, a CPU, or another Keras backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) < 2:
        return contextlib.nullcontext()
    strategy = tf.distribute.MirroredStrategy()
    log.info("training on %d GPUs (MirroredStrategy)", strategy.num_replicas_in_sync)
    return strategy.scope()


def train(config: TrainConfig) -> Path:
    """Run both phases and write ``model.keras`` + ``run.json`` into ``config.out``."""
    import keras

    try:
        check_resize(config.resize)
    except ValueError as exc:
        raise SmartbinError(f"resize: {exc}") from None
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)

    samples, problems = discover([Path(p) for p in config.data])
    for problem in problems:
        log.warning("skipped %s: %s", problem.path, problem.reason)
    split = split_samples(
        _limit(samples, config.limit_per_class), config.val_fraction, problems=problems
    )
    if config.fold is not None:
        fold, folds = config.fold
        split = split.without_fold(fold, folds)
        log.info("fold %d of %d left out of training (a cross-fitted teacher)", fold, folds)
    if not split.train or not split.validation:
        raise SmartbinError("not enough images for a train/validation split")
    log.info("train %d images, validation %d", len(split.train), len(split.validation))

    with distribution_scope():
        return _train(config, split, problems, out)


def _train(config: TrainConfig, split: DataSplit, problems: list[Problem], out: Path) -> Path:
    """Build, cache, fit both phases and save (inside the distribution scope)."""
    import keras

    from smartbin.train.model import FULL_FINE_TUNE, build_model, set_backbone_trainable

    model = build_model(
        config.input_size, config.weights, config.alpha, config.dropout, config.cut_layer
    )
    size, workers = config.input_size, config.workers
    try:
        train_images = load_images(split.train, size, config.resize, workers, "load train")
        val_images = load_images(split.validation, size, config.resize, workers, "load validation")
    except ImageReadError as exc:  # discover verified them; a file changed since
        raise SmartbinError(f"image became unreadable during training: {exc}") from None
    if config.weights is None:
        estimate_batchnorm(model.full, train_images[:256])
    augment = _augmenter(config.seed, config.translate, config.free_aspect)
    int8_bottom = None
    if config.int8_bottom > 0:
        from smartbin.train.int8_bottom import quantize_bottom

        int8_bottom = quantize_bottom(model.bottom, train_images, split.train, config.int8_bottom)
    train_cache = cache_views(
        model.bottom, train_images, config.views, augment, 64, "cache train", int8_bottom
    )
    val_cache = cache_views(model.bottom, val_images, 1, None, 64, "cache validation", int8_bottom)
    del train_images, val_images

    head_weights = {h: class_weights(split.train, h) for h in HEADS}
    y_train, w_train = targets(split.train, head_weights)
    y_val, w_val = targets(split.validation, None)
    if config.teachers:
        soft = teacher_predictions(config.teachers, split.train, config.workers)
        y_train = blend_with_teacher(y_train, soft, config.distill_weight)
    history: dict = {}

    # Phase 1: heads on pooled features of the frozen backbone (skipped with head_epochs=0,
    # e.g. for a student trained from scratch, whose random backbone has nothing to pool).
    if config.head_epochs > 0:
        set_backbone_trainable(model, False)
        pooled_train = ViewCache(
            [
                np.asarray(model.pooled.predict(train_cache.view(v), batch_size=64, verbose=0))
                for v in range(len(train_cache.views))
            ]
        )
        pooled_val = np.asarray(model.pooled.predict(val_cache.view(0), batch_size=64, verbose=0))
        _compile(model.heads, config.lr_head, config.label_smoothing)
        fit = model.heads.fit(
            _make_view_dataset(
                pooled_train, y_train, w_train, config.batch_size, config.seed, config.mixup
            ),
            validation_data=(pooled_val, y_val, w_val),
            epochs=config.head_epochs,
            callbacks=_callbacks(config.patience, out / "heads.best.weights.h5"),
            verbose=2,
        )
        history["heads"] = {k: [float(x) for x in v] for k, v in fit.history.items()}

    # Phase 2: fine-tune the top of the backbone with the heads, cosine-decayed learning rate.
    if config.epochs > 0:
        # A whole backbone trained from scratch (a distilled student) learns its BatchNorm
        # statistics too; pretrained ones, or a frozen random bottom, keep theirs.
        from_scratch = config.weights is None and config.cut_layer == FULL_FINE_TUNE
        set_backbone_trainable(model, True, batchnorm=from_scratch)
        dataset = _make_view_dataset(
            train_cache, y_train, w_train, config.batch_size, config.seed, config.mixup
        )
        # One epoch of warm-up: full-size Adam steps on freshly unfrozen pretrained kernels
        # wreck them (seen: material accuracy 0.88 -> 0.51 in the first epoch without it).
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=max(1, (config.epochs - 1) * len(dataset)),
            warmup_target=config.lr,
            warmup_steps=len(dataset),
        )
        _compile(model.top, schedule, config.label_smoothing)
        callbacks = _callbacks(config.patience, out / "top.best.weights.h5")
        if config.ema > 0:
            from smartbin.train.weight_average import WeightAverage

            # First: early stopping and the checkpoint must see the averaged weights.
            callbacks.insert(0, WeightAverage(config.ema))
        fit = model.top.fit(
            dataset,
            validation_data=(val_cache.view(0), y_val, w_val),
            epochs=config.epochs,
            callbacks=callbacks,
            verbose=2,
        )
        history["fine_tune"] = {k: [float(x) for x in v] for k, v in fit.history.items()}

    val_probs = model.top.predict(val_cache.view(0), batch_size=64, verbose=0)
    model.full.save(out / "model.keras")
    run = {
        "command": " ".join(["smartbin", *sys.argv[1:]]) if sys.argv else "",
        "config": asdict(config),
        "data": split.summary(),
        "problems": [{"path": str(p.path), "reason": p.reason} for p in problems],
        "split": {
            "train": [_entry(s) for s in split.train],
            "validation": [_entry(s) for s in split.validation],
        },
        "history": history,
        "validation_float": _validation_accuracy(val_probs, split.validation),
    }
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
    features = "float top on the int8 bottom" if config.int8_bottom else "float"
    log.info("validation (%s): %s", features, json.dumps(run["validation_float"]))
    return out
