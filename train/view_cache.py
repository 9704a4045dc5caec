"""The cached outputs of the frozen bottom, one array per augmented view, held compactly.

Why: this cache is what training costs in memory (16 views of 4,000 training images at
``block_2_add``: 10 GB as float16). When the bottom is the int8 model (``--int8-bottom``),
its outputs are 8-bit codes on a known grid, so they are kept as int8 codes, exactly and in
half the memory, and turned back into floats one batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ViewCache:
    """``views[v][i]``: view ``v`` of image ``i``; float16 values, or int8 codes on ``grid``."""

    views: Sequence[np.ndarray]
    grid: tuple[float, int] | None = None  # (scale, zero_point): value = scale * (code - zp)

    @staticmethod
    def encode(values: np.ndarray, grid: tuple[float, int] | None) -> np.ndarray:
        """How float ``values`` are stored: int8 codes on ``grid`` (they were computed on it,
        so this is exact), else float16."""
        if grid is None:
            return np.asarray(values, np.float16)
        scale, zero_point = grid
        return np.clip(np.rint(values / scale) + zero_point, -128, 127).astype(np.int8)

    @property
    def images(self) -> int:
        return len(self.views[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.views[0].shape[1:])

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """float32 values of stored entries (a slice or gather of one of ``views``)."""
        if self.grid is None:
            return codes.astype(np.float32)
        scale, zero_point = self.grid
        return (codes.astype(np.float32) - zero_point) * np.float32(scale)

    def view(self, v: int) -> np.ndarray:
        """All images of view ``v``, as float32."""
        return self.decode(self.views[v])

    def batch(self, index: np.ndarray, view_of: np.ndarray) -> np.ndarray:
        """float32 batch of images ``index``, image ``index[k]`` taken from view ``view_of[k]``."""
        out = np.empty((len(index), *self.feature_shape), dtype=np.float32)
        for v in range(len(self.views)):
            chosen = view_of == v
            out[chosen] = self.decode(self.views[v][index[chosen]])
        return out
