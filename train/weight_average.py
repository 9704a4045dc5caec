"""An exponential moving average of the weights during fine-tuning, and validation on it.

Why: the validation accuracy of a fine-tuning run jumps by up to 4 points from one epoch to
the next (the 24-view run of 2026-12-05), so the epoch that early stopping keeps is partly
luck. An average of the weights over the last few hundred steps sits in a flatter spot than
any one of them (Polyak averaging; the idea behind SWA and Keras' ``use_ema``). Measured on the
same recipe with ``--ema 0.998``: the largest fall between epochs 0.5 points (3.8 without); the
final figures moved within run-to-run noise (train/EXPERIMENTS.md, v13).

Keras' own ``use_ema`` validates the raw weights and only writes the average at the end, so
early stopping and the best checkpoint would choose an epoch by weights that are never shipped.
This callback instead swaps the average in for each validation pass and leaves it in place
through ``on_epoch_end``, so ``val_*`` figures, :class:`keras.callbacks.EarlyStopping` (with
``restore_best_weights``) and :class:`keras.callbacks.ModelCheckpoint` all see, keep and restore
the averaged weights; the raw ones come back before the next epoch trains. Training figures
(``loss``, ``*_accuracy``) stay those of the raw weights. List it *before* those callbacks.

Only trainable weights are averaged: the fine-tuned backbone's BatchNorm statistics are frozen
(pretrained), so the other weights do not move.
"""

from __future__ import annotations

import keras
import numpy as np


class WeightAverage(keras.callbacks.Callback):
    """Per-step EMA of the trainable weights: ``avg = m * avg + (1 - m) * w``.

    The momentum ramps up as ``min(momentum, (1 + t) / (10 + t))`` after ``t`` steps, so the
    first epoch's average is not dominated by the starting weights.
    """

    def __init__(self, momentum: float) -> None:
        super().__init__()
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"EMA momentum must be between 0 and 1, got {momentum}")
        self.momentum = momentum
        self.steps = 0
        self._average: list[np.ndarray] | None = None
        self._raw: list[np.ndarray] | None = None

    def _variables(self) -> list:
        return list(self.model.trainable_weights)

    def _assign(self, values: list[np.ndarray]) -> None:
        for value, variable in zip(values, self._variables(), strict=True):
            variable.assign(value.astype(variable.dtype))

    def on_train_begin(self, logs=None) -> None:
        self.steps = 0
        self._average = [np.array(v.numpy(), dtype="float64") for v in self._variables()]
        self._raw = None

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.steps += 1
        m = min(self.momentum, (1.0 + self.steps) / (10.0 + self.steps))
        for average, variable in zip(self._average, self._variables(), strict=True):
            average *= m
            average += (1.0 - m) * variable.numpy()

    def on_test_begin(self, logs=None) -> None:
        if self._average is None or self._raw is not None:
            return  # not in fit, or the average is already in place
        self._raw = [v.numpy() for v in self._variables()]
        self._assign(self._average)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if self._raw is not None:
            self._assign(self._raw)
            self._raw = None

    def on_train_end(self, logs=None) -> None:
        # Without a validation pass in the last epoch the raw weights are in place; the model
        # leaves fit holding the average either way (EarlyStopping, listed after, may then
        # restore its best averaged epoch).
        if self._average is not None and self._raw is None:
            self._assign(self._average)
        self._raw = None

    def averaged_weights(self) -> list[np.ndarray]:
        """The current average (trainable weights, in ``model.trainable_weights`` order)."""
        if self._average is None:
            raise RuntimeError("no average yet: the callback has not seen training")
        return [a.astype("float32") for a in self._average]
