"""Evaluation of a bundle (int8, device runtime) or a float Keras model on labelled folders.

Everything but the forward pass is shared: both kinds of model are a :class:`Predictor`
(uint8 batch in, both heads' probabilities out), images go through THE preprocessing
(``prepare_image``), and the metrics are plain numpy. ``smartbin convert`` reuses the same
functions to measure what int8 quantisation costs.

The bundle path imports neither TensorFlow nor sklearn nor matplotlib, so ``smartbin evaluate``
works on a bin with the device install; a ``.keras`` model imports TensorFlow lazily.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from smartbin.device.decision import Prediction, decide
from smartbin.device.labels import (
    BINARY_CLASSES,
    HEAD_CLASSES,
    HEADS,
    MATERIAL_CLASSES,
    ORGANIC,
    TRASH,
    UNKNOWN,
)
from smartbin.device.preprocess import (
    DEFAULT_RESIZE,
    load_image_rgb,
    prepare_image,
    resize_of_run,
)
from smartbin.errors import ImageReadError, SmartbinError
from smartbin.folders import ensure_out_dir

log = logging.getLogger(__name__)

RECYCLABLE_MATERIALS = frozenset(m for i, m in enumerate(MATERIAL_CLASSES) if i != TRASH)


class Labelled(Protocol):
    """An image and what its folder says (``train.data.Sample`` fits; None = unknown)."""

    path: Path
    binary: int | None
    material: int | None
    source: str


class Predictor(Protocol):
    """A model's forward pass: the only thing that differs between float and int8."""

    input_size: int
    resize: str  # the preprocessing's resize rule the model was trained with
    unknown_threshold: float

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, S, S, 3) prepared images -> (binary (N, 2), material (N, 6)) probabilities."""
        ...

    def describe(self) -> dict[str, Any]:
        """What was evaluated (goes into the report's ``model``)."""
        ...


class BundlePredictor:
    """The int8 bundle through the bin's own :class:`~smartbin.device.classifier.Classifier`."""

    batch_size = 1  # the interpreter runs one image per invoke, as on the bin

    def __init__(self, bundle: Any, num_threads: int | None = None, use_edgetpu: bool = False):
        from smartbin.device.classifier import Classifier

        self.bundle = bundle
        self.classifier = Classifier(bundle, num_threads=num_threads, use_edgetpu=use_edgetpu)
        self.input_size = bundle.input_size
        self.resize = bundle.preprocess.resize
        self.unknown_threshold = bundle.unknown_threshold

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        preds = [self.classifier.classify_prepared(image).prediction for image in batch]
        return np.stack([p.binary for p in preds]), np.stack([p.material for p in preds])

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "bundle",
            "path": str(self.bundle.folder),
            "model_version": self.bundle.model_version,
            "sha256": self.bundle.model_sha256,
            "runtime": self.classifier.runtime,
            "edgetpu": self.classifier.on_edgetpu,
            "input_size": self.input_size,
            "resize": self.resize,
        }


class KerasPredictor:
    """The float Keras model (TensorFlow), fed exactly the same prepared uint8 pixels."""

    batch_size = 16

    def __init__(
        self,
        model: Any,
        path: Path | None = None,
        unknown_threshold: float = 0.5,
        resize: str = DEFAULT_RESIZE,
    ):
        self.model = model
        self.path = path
        self.input_size = int(model.input_shape[1])
        self.resize = resize
        self.unknown_threshold = unknown_threshold

    @classmethod
    def from_file(cls, path: Path, unknown_threshold: float = 0.5) -> KerasPredictor:
        from smartbin.train.model import load_full_model

        return cls(load_full_model(path), path, unknown_threshold, keras_model_resize(path))

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.model(batch.astype(np.float32), training=False)
        return np.asarray(out["binary"], np.float32), np.asarray(out["material"], np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "keras",
            "path": str(self.path) if self.path else None,
            "input_size": self.input_size,
            "resize": self.resize,
        }


def keras_model_resize(path: Path) -> str:
    """The resize rule of a ``.keras`` model: its training run's (``run.json`` beside it),
    else the current default. A .keras file does not carry it; a bundle does."""
    run_file = path.with_name("run.json")
    if not run_file.is_file():
        return DEFAULT_RESIZE
    try:
        config = json.loads(run_file.read_text(encoding="utf-8")).get("config", {})
        return resize_of_run(config)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, ValueError) as exc:
        raise SmartbinError(f"{run_file}: cannot tell the model's preprocessing ({exc})") from None


@dataclass
class PredictionSet:
    """Both heads' probabilities for every readable image, aligned with ``items``."""

    items: list[Labelled]
    binary: np.ndarray
    material: np.ndarray
    failed: list[dict[str, str]] = field(default_factory=list)

    def labels(self, head: str) -> np.ndarray:
        """Class index per item, -1 where the folder does not say."""
        return np.array(
            [-1 if getattr(i, head) is None else getattr(i, head) for i in self.items], dtype=int
        )

    def probs(self, head: str) -> np.ndarray:
        return self.binary if head == "binary" else self.material

    def subset(self, mask: np.ndarray) -> PredictionSet:
        keep = np.flatnonzero(mask)
        return PredictionSet(
            [self.items[i] for i in keep], self.binary[keep], self.material[keep], []
        )


def predict_items(
    predictor: Predictor, items: Sequence[Labelled], desc: str = "evaluating"
) -> PredictionSet:
    """Run ``predictor`` over the items' pictures; unreadable files are listed, not fatal."""
    batch_size = int(getattr(predictor, "batch_size", 16))
    kept: list[Labelled] = []
    failed: list[dict[str, str]] = []
    binary: list[np.ndarray] = []
    material: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    pending_items: list[Labelled] = []

    def flush() -> None:
        if pending:
            b, m = predictor.predict(np.stack(pending))
            binary.append(b)
            material.append(m)
            kept.extend(pending_items)
            pending.clear()
            pending_items.clear()

    for item in tqdm(items, desc=desc, unit="img", leave=False):
        try:
            image = load_image_rgb(item.path)
            pending.append(prepare_image(image, predictor.input_size, predictor.resize))
            pending_items.append(item)
        except ImageReadError as exc:
            failed.append({"path": str(item.path), "reason": exc.reason})
            continue
        if len(pending) >= batch_size:
            flush()
    flush()
    if not kept:
        raise SmartbinError(f"none of the {len(items)} images could be read")
    return PredictionSet(
        kept,
        np.concatenate(binary).astype(np.float32),
        np.concatenate(material).astype(np.float32),
        failed,
    )


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def per_class_scores(matrix: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support per class (None where undefined, e.g. no support)."""
    scores = {}
    for i, name in enumerate(names):
        tp = matrix[i, i]
        precision = _ratio(tp, matrix[:, i].sum())
        recall = _ratio(tp, matrix[i, :].sum())
        f1 = None
        if precision is not None and recall is not None:
            f1 = _ratio(2 * precision * recall, precision + recall) or 0.0
        scores[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(matrix[i, :].sum()),
        }
    return scores


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over all thresholds, from (0,0) to (1,1)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order].astype(int)
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.r_[0.0, np.zeros(len(tps))]
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.r_[0.0, np.zeros(len(fps))]
    return fpr, tpr


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None with one class only."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def head_metrics(probs: np.ndarray, labels: np.ndarray, head: str) -> dict[str, Any] | None:
    """Metrics of one head over the items that carry its label (None if there are none)."""
    known = labels >= 0
    if not known.any():
        return None
    names = HEAD_CLASSES[head]
    truth = labels[known]
    predicted = probs[known].argmax(axis=1)
    matrix = confusion_matrix(truth, predicted, len(names))
    result: dict[str, Any] = {
        "accuracy": float((truth == predicted).mean()),
        "n": int(known.sum()),
        "classes": list(names),
        "per_class": per_class_scores(matrix, names),
        "confusion": matrix.tolist(),
    }
    if head == "binary":
        positive = truth == ORGANIC
        scores = probs[known][:, ORGANIC]
        fpr, tpr = roc_curve(scores, positive)
        result["positive_class"] = BINARY_CLASSES[ORGANIC]
        result["auc"] = roc_auc(scores, positive)
        result["roc"] = {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist()}
    return result


def expected_decision(item: Labelled) -> str:
    """What the bin should answer: organic, the material (incl. trash) or, for a recyclable
    item of unknown material, ``recyclable`` (any recyclable material is then right)."""
    if item.binary == ORGANIC:
        return BINARY_CLASSES[ORGANIC]
    if item.material is not None:
        return MATERIAL_CLASSES[item.material]
    return BINARY_CLASSES[1 - ORGANIC]


def decision_correct(label: str, expected: str) -> bool:
    if expected == BINARY_CLASSES[1 - ORGANIC]:
        return label in RECYCLABLE_MATERIALS
    return label == expected


def decision_metrics(pset: PredictionSet, threshold: float) -> dict[str, Any]:
    """The bin's final answer (``decide``), as the daemon would take it, per image."""
    decided = 0
    correct = 0
    correct_decided = 0
    for item, b, m in zip(pset.items, pset.binary, pset.material, strict=True):
        decision = decide(Prediction(b, m), threshold)
        ok = decision_correct(decision.label, expected_decision(item))
        correct += ok
        if decision.label != UNKNOWN:
            decided += 1
            correct_decided += ok
    n = len(pset.items)
    return {
        "unknown_threshold": threshold,
        "n": n,
        "accuracy": _ratio(correct, n),
        "unknown_rate": _ratio(n - decided, n),
        "accuracy_when_decided": _ratio(correct_decided, decided),
    }


def _short(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else {"accuracy": metrics["accuracy"], "n": metrics["n"]}


def compute_report(pset: PredictionSet, threshold: float) -> dict[str, Any]:
    """The whole report (heads, decision, per source) for one prediction set."""
    report: dict[str, Any] = {}
    for head in ("material", "binary"):
        metrics = head_metrics(pset.probs(head), pset.labels(head), head)
        if metrics is not None:
            report[head] = metrics
    report["decision"] = decision_metrics(pset, threshold)
    per_source: dict[str, Any] = {}
    sources = np.array([i.source for i in pset.items])
    for source in sorted(set(sources.tolist())):
        part = pset.subset(sources == source)
        entry = {}
        for head in ("material", "binary"):
            short = _short(head_metrics(part.probs(head), part.labels(head), head))
            if short is not None:
                entry[head] = short
        entry["decision"] = _short(decision_metrics(part, threshold))
        per_source[source] = entry
    report["per_source"] = per_source
    return report


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 6)


def accuracy_drop(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``reference - other`` accuracy per head, for the decision and per source (positive =
    ``other`` is worse): what int8 quantisation costs against the float model."""
    drop: dict[str, Any] = {}
    for key in ("material", "binary", "decision"):
        if key in reference and key in other:
            drop[key] = _diff(reference[key]["accuracy"], other[key]["accuracy"])
    per_source: dict[str, Any] = {}
    for source, ref in reference.get("per_source", {}).items():
        oth = other.get("per_source", {}).get(source, {})
        per_source[source] = {
            key: _diff(ref[key]["accuracy"], oth[key]["accuracy"])
            for key in ref
            if ref.get(key) and oth.get(key)
        }
    drop["per_source"] = per_source
    return drop


def agreement(a: PredictionSet, b: PredictionSet) -> dict[str, Any]:
    """How often two models pick the same class per head, and their largest probability gap."""
    if [str(i.path) for i in a.items] != [str(i.path) for i in b.items]:
        raise ValueError("prediction sets cover different images")
    out: dict[str, Any] = {}
    for head in HEADS:
        pa, pb = a.probs(head), b.probs(head)
        out[head] = {
            "same_top_class": float((pa.argmax(1) == pb.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(pa - pb).max()),
            "mean_abs_prob_diff": float(np.abs(pa - pb).mean()),
        }
    return out


# ----------------------------------------------------------------------------- printing


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def format_summary(report: dict[str, Any]) -> str:
    """A readable table of the report (what ``smartbin evaluate`` prints)."""
    lines = []
    for head in HEADS:
        metrics = report.get(head)
        if metrics is None:
            continue
        extra = ""
        if head == "binary" and metrics.get("auc") is not None:
            extra = f"  AUC {metrics['auc']:.3f}"
        lines.append(f"{head} head: accuracy {_pct(metrics['accuracy'])} on {metrics['n']}{extra}")
        lines.append(f"  {'class':<12}{'precision':>10}{'recall':>9}{'f1':>9}{'support':>9}")
        for name, s in metrics["per_class"].items():
            lines.append(
                f"  {name:<12}{_pct(s['precision']):>10}{_pct(s['recall']):>9}"
                f"{_pct(s['f1']):>9}{s['support']:>9}"
            )
    d = report["decision"]
    lines.append(
        f"decision (threshold {d['unknown_threshold']}): accuracy {_pct(d['accuracy'])}, "
        f"unknown {_pct(d['unknown_rate'])}, accuracy when decided "
        f"{_pct(d['accuracy_when_decided'])} on {d['n']}"
    )
    if len(report.get("per_source", {})) > 1:
        lines.append(f"  {'source':<20}{'binary':>10}{'material':>10}{'decision':>10}")
        for source, entry in report["per_source"].items():
            cells = [_pct((entry.get(k) or {}).get("accuracy")) for k in HEADS]
            cells.append(_pct((entry.get("decision") or {}).get("accuracy")))
            lines.append(f"  {source:<20}" + "".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command


def open_predictor(spec: str, threads: int | None, threshold: float | None) -> Predictor:
    """A ``.keras`` file -> float model (TensorFlow); anything else -> a bundle (no TF)."""
    path = Path(spec).expanduser()
    if path.suffix == ".keras":
        if not path.is_file():
            raise SmartbinError(f"no such model file: {path}")
        return KerasPredictor.from_file(path, 0.5 if threshold is None else threshold)
    from smartbin.device.bundle import load_bundle

    predictor = BundlePredictor(load_bundle(spec), num_threads=threads)
    if threshold is not None:
        predictor.unknown_threshold = threshold
    return predictor


def run_evaluate(args: Any) -> int:
    """``smartbin evaluate``: metrics JSON, a printed summary and (with matplotlib) plots."""
    from smartbin.train.data import discover

    out_json = Path(args.json).expanduser()
    try:  # made now, so a bad folder fails before minutes of evaluation, not after
        ensure_out_dir(out_json.parent)
    except SmartbinError as exc:
        raise SmartbinError(f"--json: {exc}") from None
    split_run = getattr(args, "split", None)
    if bool(args.data) == bool(split_run):
        raise SmartbinError("give either DATA_DIR folder(s) or --split RUN_DIR")
    predictor = open_predictor(args.model, args.threads, args.unknown_threshold)
    if split_run:
        # The run's own held-out images: what the README's figures are measured on.
        from smartbin.convert.pipeline import read_run

        run = read_run(Path(split_run).expanduser())
        samples, problems = labelled_from_entries(run["split"].get("validation", [])), []
        args.data = [f"{split_run} (validation split)"]
    else:
        samples, problems = discover(args.data)
    for problem in problems[:10]:
        log.warning("skipped %s: %s", problem.path, problem.reason)
    if len(problems) > 10:
        log.warning("... and %d more skipped files", len(problems) - 10)
    if not samples:
        raise SmartbinError(f"no labelled images under {', '.join(map(str, args.data))}")
    pset = predict_items(predictor, samples)
    report = compute_report(pset, predictor.unknown_threshold)
    report["model"] = predictor.describe()
    report["data"] = {
        "folders": [str(d) for d in args.data],
        "images": len(pset.items),
        "unreadable": pset.failed,
        "skipped": [p.to_dict() for p in problems],
    }
    out_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_summary(report))
    print(f"report written to {out_json}")
    from smartbin.train import plots

    report_dir = Path(args.report_dir).expanduser() if args.report_dir else out_json.parent
    written = plots.write_plots(report, report_dir, stem=out_json.stem)
    if written is None:
        print("matplotlib not installed: plots skipped", file=sys.stderr)
    else:
        for path in written:
            print(f"plot written to {path}")
    return 0


def labelled_from_entries(entries: Sequence[dict[str, Any]]) -> list[RunEntry]:
    """run.json split entries as :class:`Labelled` items."""
    return [
        RunEntry(
            path=Path(e["path"]),
            binary=e.get("binary"),
            material=e.get("material"),
            source=str(e.get("source", "")),
            sha1=e.get("sha1"),
        )
        for e in entries
    ]


@dataclass(frozen=True)
class RunEntry:
    """One image listed in a training run's split (``run.json``)."""

    path: Path
    binary: int | None
    material: int | None
    source: str
    #: Content hash (runs before 2026-12-07 did not record it).
    sha1: str | None = None


def per_head_counts(items: Sequence[Labelled]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for head, names in HEAD_CLASSES.items():
        c: dict[str, int] = defaultdict(int)
        for item in items:
            value = getattr(item, head)
            c[UNKNOWN if value is None else names[value]] += 1
        counts[head] = dict(c)
    return counts
