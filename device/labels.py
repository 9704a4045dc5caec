"""Class names of both heads and the folder-name convention that maps data to labels.

One model, two heads: ``binary`` (organic vs recyclable) and ``material`` (the material of a
recyclable item, or ``trash`` for general waste). A folder of images may carry only one of
the two labels; the other one is *unknown* (``None``) and is masked in training, never invented.
"""

from __future__ import annotations

from dataclasses import dataclass

BINARY_CLASSES: tuple[str, ...] = ("organic", "recyclable")
MATERIAL_CLASSES: tuple[str, ...] = ("cardboard", "glass", "metal", "paper", "plastic", "trash")
UNKNOWN = "unknown"
#: The model's two outputs, by name; bundles, training targets and reports list them in
#: this order.
HEADS: tuple[str, ...] = ("binary", "material")
HEAD_CLASSES: dict[str, tuple[str, ...]] = {"binary": BINARY_CLASSES, "material": MATERIAL_CLASSES}

ORGANIC = BINARY_CLASSES.index("organic")
RECYCLABLE = BINARY_CLASSES.index("recyclable")
TRASH = MATERIAL_CLASSES.index("trash")


@dataclass(frozen=True)
class FolderLabel:
    """What a class folder says about its images. ``None`` = that head's label is unknown."""

    binary: int | None
    material: int | None

    @property
    def name(self) -> str:
        if self.material is not None:
            return MATERIAL_CLASSES[self.material]
        assert self.binary is not None
        return BINARY_CLASSES[self.binary]


def _build_aliases() -> dict[str, FolderLabel]:
    aliases: dict[str, FolderLabel] = {}
    for index, material in enumerate(MATERIAL_CLASSES):
        # `trash` is general waste: neither organic nor recyclable, so no binary label.
        binary = None if index == TRASH else RECYCLABLE
        aliases[material] = FolderLabel(binary=binary, material=index)
    for name in ("organic", "o", "biological"):
        aliases[name] = FolderLabel(binary=ORGANIC, material=None)
    for name in ("recyclable", "r"):
        aliases[name] = FolderLabel(binary=RECYCLABLE, material=None)
    return aliases


FOLDER_ALIASES: dict[str, FolderLabel] = _build_aliases()


def label_for_folder(name: str) -> FolderLabel | None:
    """The labels of a class folder by its name (case-insensitive), or None if not a class."""
    return FOLDER_ALIASES.get(name.strip().lower())
