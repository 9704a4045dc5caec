"""Mixup on the cached features: a regulariser for the layers that learn above the cut.

Why: with the shipped recipe the training loss sits at the label-smoothing floor from about
epoch 25 while validation accuracy stops moving, i.e. the top has fitted its training views.
Mixup (Zhang et al., 2018) trains on convex blends of two examples and of their targets; done
on the frozen bottom's cached output rather than on pixels it is "manifold mixup" (Verma et
al., 2019) and costs nothing extra per view.

The two heads make one rule necessary: an example may lack one head's label (an organic item
has no material; ``trash`` is neither organic nor recyclable), and a blend of an example that
has it with one that does not has no honest target. So examples are only blended with partners
that carry the same heads: the masks stay exact, and a missing label is never invented.

Measured (2026-12-06, train/EXPERIMENTS.md "Mixup (v15)"): the 24-view ``--ema`` recipe with
``--mixup 0.2`` lost 1.3 points of validation material accuracy at the same 40 epochs and was
still improving at the last one; it is kept as an option, off by default.
"""

from __future__ import annotations

import numpy as np


def label_groups(weights: dict[str, np.ndarray]) -> np.ndarray:
    """Per example, which heads carry a label (a bit per head, in ``weights``' order)."""
    heads = list(weights)
    group = np.zeros(len(weights[heads[0]]), dtype=np.int64)
    for bit, head in enumerate(heads):
        group |= (np.asarray(weights[head]) > 0).astype(np.int64) << bit
    return group


def partners(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random partner for every example among those of its own group (itself when alone)."""
    partner = np.arange(len(groups))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        partner[members] = rng.permutation(members)
    return partner


def mix_batch(
    x: np.ndarray,
    y: dict[str, np.ndarray],
    w: dict[str, np.ndarray],
    groups: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Blend each example with a partner of its group: ``lam * a + (1 - lam) * b`` for the
    features, every head's target and its sample weight (a class weight), with one
    ``lam ~ Beta(alpha, alpha)`` per example. ``alpha`` <= 0 returns the batch unchanged."""
    if alpha <= 0:
        return x, y, w
    partner = partners(groups, rng)
    lam = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)

    def blend(values: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (values.ndim - 1)
        weight = lam.reshape(shape)
        return (weight * values + (1 - weight) * values[partner]).astype(values.dtype)

    return blend(x), {h: blend(v) for h, v in y.items()}, {h: blend(v) for h, v in w.items()}
