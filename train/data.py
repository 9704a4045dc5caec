"""Training data: find labelled images in class-per-folder trees, check them, split them.

Folder names carry the labels (:func:`smartbin.device.labels.label_for_folder`): a material
name is a recyclable item of that material, ``organic``/``O`` is organic, ``recyclable``/``R``
is recyclable of unknown material, ``trash`` is general waste (material only, no binary label).
Trees are walked recursively and the innermost class-named folder decides, so the original
downloads work unchanged (TrashNet ``dataset-resized/<class>/``, Kaggle
``DATASET/TRAIN|TEST/O|R``) as well as the project's ``<data set>/<class>/`` folders.

The split is a pure function of the image *bytes* (sha1 + seed), not of file names or of the
order of discovery, so adding or renaming files never moves an existing image across the
train/validation border, and a byte-identical copy filed elsewhere cannot leak into validation.

No TensorFlow here: evaluation of a .tflite bundle uses this module with the device install.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from smartbin.device.labels import (
    FOLDER_ALIASES,
    HEAD_CLASSES,
    HEADS,
    UNKNOWN,
    FolderLabel,
    label_for_folder,
)
from smartbin.device.preprocess import IMAGE_SUFFIXES
from smartbin.errors import SmartbinError

# Folders that archive tools add next to the data (macOS zip metadata): never data.
_SKIPPED_DIRS = frozenset({"__macosx"})


@dataclass(frozen=True)
class Sample:
    """One usable image. ``None`` for a head = this image's folder does not say (masked)."""

    path: Path
    binary: int | None
    material: int | None
    sha1: str
    source: str
    folder: str

    @property
    def label(self) -> FolderLabel:
        return FolderLabel(binary=self.binary, material=self.material)

    @property
    def label_name(self) -> str:
        """Canonical name of the folder's label (``O`` and ``organic`` both give ``organic``)."""
        return self.label.name

    def head_label(self, head: str) -> int | None:
        """The label of ``head`` ("binary" or "material"), or None when unknown."""
        if head == "binary":
            return self.binary
        if head == "material":
            return self.material
        raise ValueError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")


@dataclass
class Problem:
    """A file that was skipped, and why (shown to the user, never silently dropped)."""

    path: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


@dataclass(frozen=True)
class DuplicateGroup:
    """Byte-identical files (same sha1). ``conflicting``: their folders give different labels."""

    sha1: str
    samples: tuple[Sample, ...]

    @property
    def conflicting(self) -> bool:
        return len({s.label for s in self.samples}) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha1": self.sha1,
            "conflicting": self.conflicting,
            "files": [
                {"path": str(s.path), "source": s.source, "label": s.label_name}
                for s in self.samples
            ],
        }


def known_class_names() -> list[str]:
    """Folder names that are recognised as classes (for error messages and docs)."""
    return sorted(FOLDER_ALIASES)


def _source_names(roots: Sequence[Path]) -> list[str]:
    """One name per root (its folder name), made unique when two roots share a name."""
    names: list[str] = []
    seen: Counter[str] = Counter()
    for root in roots:
        base = root.resolve().name or str(root)
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def _walk_root(root: Path) -> tuple[list[tuple[Path, str]], list[Problem], int]:
    """Files under class folders as (path, class folder name), problems, number of class dirs.

    The innermost class-named directory (the root itself included) decides a file's class.
    Hidden files/folders and archive metadata folders are skipped silently: they are never data.
    """
    files: list[tuple[Path, str]] = []
    problems: list[Problem] = []
    class_dirs = 0
    folder_of: dict[str, str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d.lower() not in _SKIPPED_DIRS
        )
        here = Path(dirpath)
        inherited = folder_of.get(os.path.dirname(dirpath)) if dirpath != str(root) else None
        own = here.name if label_for_folder(here.name) is not None else None
        folder = own or inherited
        folder_of[dirpath] = folder
        if own is not None:
            class_dirs += 1
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            is_image = path.suffix.lower() in IMAGE_SUFFIXES
            if folder is None:
                if is_image:
                    problems.append(Problem(path, "image outside any class folder; ignored"))
                continue
            if not is_image:
                problems.append(Problem(path, f"not an image (suffix {path.suffix or 'none'!r})"))
                continue
            files.append((path, folder))
    return files, problems, class_dirs


def check_image_bytes(data: bytes) -> str | None:
    """None if ``data`` decodes as an image, else the reason it does not.

    ``verify()`` catches structural damage (e.g. PNG checksums) and ``load()`` a full decode
    (e.g. truncated JPEG); a broken file must be reported here, not crash a training run later.
    """
    if not data:
        return "empty file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return "image has no pixels"
    except UnidentifiedImageError:
        return "not an image (unrecognised format)"
    except Exception as exc:  # PIL raises many types on malformed data; all mean "unreadable".
        return f"cannot decode image ({type(exc).__name__}: {exc})"
    return None


def discover(
    roots: Sequence[Path | str], verify_images: bool = True, progress: bool = True
) -> tuple[list[Sample], list[Problem]]:
    """All labelled images under ``roots`` (sorted by source, path) and the skipped files.

    Raises :class:`SmartbinError` (one line) when a root is missing, not a folder, or holds no
    class folder at all: that is a wrong path, not a data problem to report and skip.
    """
    root_paths = [Path(r).expanduser() for r in roots]
    if not root_paths:
        raise SmartbinError("no data folder given")
    names = _source_names(root_paths)
    listed: list[tuple[Path, str, str]] = []
    problems: list[Problem] = []
    for root, source in zip(root_paths, names, strict=True):
        if not root.exists():
            raise SmartbinError(f"data folder {root} does not exist")
        if not root.is_dir():
            raise SmartbinError(f"data folder {root} is not a folder")
        files, root_problems, class_dirs = _walk_root(root)
        if class_dirs == 0:
            raise SmartbinError(
                f"data folder {root} holds no class folders "
                f"(expected sub-folders named one of: {', '.join(known_class_names())})"
            )
        listed.extend((path, folder, source) for path, folder in files)
        problems.extend(root_problems)

    samples: list[Sample] = []
    for path, folder, source in tqdm(
        listed, desc="checking images", unit="img", disable=not progress, leave=False
    ):
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(Problem(path, f"cannot read file ({exc.strerror or exc})"))
            continue
        reason = check_image_bytes(data) if verify_images else ("empty file" if not data else None)
        if reason is not None:
            problems.append(Problem(path, reason))
            continue
        label = label_for_folder(folder)
        assert label is not None  # _walk_root only returns class folders
        samples.append(
            Sample(
                path=path,
                binary=label.binary,
                material=label.material,
                sha1=hashlib.sha1(data).hexdigest(),
                source=source,
                folder=folder,
            )
        )
    problems.sort(key=lambda p: str(p.path))
    return samples, problems


def find_duplicates(samples: Iterable[Sample]) -> list[DuplicateGroup]:
    """Groups of byte-identical samples (2+ files with one sha1), sorted by sha1."""
    by_hash: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_hash[sample.sha1].append(sample)
    return [
        DuplicateGroup(sha1=digest, samples=tuple(sorted(group, key=lambda s: str(s.path))))
        for digest, group in sorted(by_hash.items())
        if len(group) > 1
    ]


def split_fraction(sha1: str, seed: str = "smartbin") -> float:
    """Where content ``sha1`` falls in [0, 1) for ``seed``: the split's only input."""
    digest = hashlib.sha1(f"{seed}:{sha1}".encode("ascii")).hexdigest()
    return int(digest, 16) / float(1 << 160)


def fold_of(sha1: str, folds: int) -> int:
    """Content ``sha1``'s fold (1..folds) for cross-fitting; its own seed, so the folds cut across
    the validation split instead of following it. Duplicates share a hash, hence a fold."""
    return min(folds, int(split_fraction(sha1, "fold") * folds) + 1)


def _count(samples: Sequence[Sample]) -> dict[str, Any]:
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    for s in samples:
        by_source[s.source][s.label_name] += 1
    heads: dict[str, dict[str, int]] = {}
    for head, classes in HEAD_CLASSES.items():
        counts = Counter(s.head_label(head) for s in samples)
        heads[head] = {name: counts.get(i, 0) for i, name in enumerate(classes)}
        heads[head][UNKNOWN] = counts.get(None, 0)
    return {
        "total": len(samples),
        "by_label": dict(sorted(Counter(s.label_name for s in samples).items())),
        "by_source": {src: dict(sorted(c.items())) for src, c in sorted(by_source.items())},
        "by_head": heads,
    }


@dataclass
class DataSplit:
    """Train/validation samples plus what was found on the way (duplicates, skipped files)."""

    train: list[Sample]
    validation: list[Sample]
    duplicates: list[DuplicateGroup]
    problems: list[Problem] = field(default_factory=list)
    val_fraction: float = 0.2
    seed: str = "smartbin"

    def without_fold(self, fold: int, folds: int) -> DataSplit:
        """The split with training fold ``fold`` of ``folds`` left out (validation unchanged): a
        cross-fitted teacher's run, which can then give those images predictions it did not
        learn from them."""
        return replace(self, train=[s for s in self.train if fold_of(s.sha1, folds) != fold])

    @property
    def conflicting(self) -> list[DuplicateGroup]:
        return [g for g in self.duplicates if g.conflicting]

    def summary(self) -> dict[str, Any]:
        """Counts per source and label for both sides: the bundle's training-data summary."""
        sources = sorted({s.source for s in self.train} | {s.source for s in self.validation})
        return {
            "sources": sources,
            "split": {
                "method": "sha1(seed:sha1(image bytes)) < val_fraction; duplicates -> train",
                "val_fraction": self.val_fraction,
                "seed": self.seed,
            },
            "train": _count(self.train),
            "validation": _count(self.validation),
            "duplicates": {
                "groups": len(self.duplicates),
                "files": sum(len(g.samples) for g in self.duplicates),
                "conflicting": [g.to_dict() for g in self.conflicting],
            },
            "problems": {
                "count": len(self.problems),
                "examples": [p.to_dict() for p in self.problems[:20]],
            },
        }


def split_samples(
    samples: Sequence[Sample],
    val_fraction: float = 0.2,
    seed: str = "smartbin",
    problems: Sequence[Problem] = (),
) -> DataSplit:
    """Deterministic split by content hash; every member of a duplicate group goes to train.

    Duplicates stay out of validation so that a validation image is never also a training
    image under another name. Conflicting duplicates (same bytes, different labels) are kept in
    train as published and listed in ``DataSplit.duplicates`` / ``summary()`` for the user.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SmartbinError(f"validation fraction must be in [0, 1), got {val_fraction}")
    duplicates = find_duplicates(samples)
    duplicated = {g.sha1 for g in duplicates}
    train: list[Sample] = []
    validation: list[Sample] = []
    for sample in samples:
        to_val = sample.sha1 not in duplicated and split_fraction(sample.sha1, seed) < val_fraction
        (validation if to_val else train).append(sample)
    return DataSplit(
        train=train,
        validation=validation,
        duplicates=duplicates,
        problems=list(problems),
        val_fraction=val_fraction,
        seed=seed,
    )


def class_weights(samples: Iterable[Sample], head: str) -> dict[int, float]:
    """Balanced weights ``n / (k * n_c)`` over samples that carry ``head``'s label.

    Only classes present get a weight (``k`` = number of present classes); samples whose label
    for ``head`` is unknown are ignored, as they are masked out of that head's loss.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
    counts = Counter(label for label in (s.head_label(head) for s in samples) if label is not None)
    total = sum(counts.values())
    if total == 0:
        return {}
    return {c: total / (len(counts) * n) for c, n in sorted(counts.items())}
