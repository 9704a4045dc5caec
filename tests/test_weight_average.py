"""`smartbin train --ema`: the fine-tuning phase's weight average, validated and kept."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from fixtures_model import assert_option_refused, tiny_train_args

from smartbin.cli import main
from smartbin.train.weight_average import WeightAverage

MOMENTUM = 0.8


class _Recorder(keras.callbacks.Callback):
    """The raw weights after every step and at the start of every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.initial: list[np.ndarray] = []
        self.steps: list[list[np.ndarray]] = []
        self.epoch_starts: list[list[np.ndarray]] = []

    def _weights(self) -> list[np.ndarray]:
        return [v.numpy().copy() for v in self.model.trainable_weights]

    def on_train_begin(self, logs=None) -> None:
        self.initial = self._weights()

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.epoch_starts.append(self._weights())

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.steps.append(self._weights())


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    return model, (x[:64], y[:64]), (x[64:], y[64:])


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.allclose(u, v, atol=1e-6) for u, v in zip(a, b, strict=True))


def test_average_is_validated_kept_at_the_end_and_training_resumes_from_raw() -> None:
    model, train, val = _problem()
    average, recorder = WeightAverage(MOMENTUM), _Recorder()
    history = model.fit(
        *train, validation_data=val, epochs=2, batch_size=16, shuffle=False, verbose=0,
        callbacks=[average, recorder],
    )  # fmt: skip

    expected = [w.astype("float64") for w in recorder.initial]
    for t, step in enumerate(recorder.steps, start=1):
        m = min(MOMENTUM, (1 + t) / (10 + t))
        expected = [m * e + (1 - m) * w for e, w in zip(expected, step, strict=True)]
    assert _same(average.averaged_weights(), expected)
    assert not _same(expected, recorder.steps[-1])  # the average is not the last step

    # Epoch 2 trained from the raw weights of epoch 1's last step, not from the average.
    assert _same(recorder.epoch_starts[1], recorder.steps[3])
    # The model leaves fit with the average, and the last val_loss is the average's.
    assert _same([v.numpy() for v in model.trainable_weights], expected)
    assert np.isclose(history.history["val_loss"][-1], model.evaluate(*val, verbose=0), atol=1e-5)


def test_early_stopping_restores_an_averaged_epoch() -> None:
    model, train, val = _problem(seed=1)
    stop = keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)
    history = model.fit(
        *train, validation_data=val, epochs=4, batch_size=16, verbose=0,
        callbacks=[WeightAverage(MOMENTUM), stop],
    )  # fmt: skip
    best = min(history.history["val_loss"])
    assert np.isclose(model.evaluate(*val, verbose=0), best, atol=1e-5)


def test_momentum_out_of_range_is_refused() -> None:
    for bad in (0.0, 1.0, -0.5):
        try:
            WeightAverage(bad)
        except ValueError as exc:
            assert "momentum" in str(exc)
        else:
            raise AssertionError(f"momentum {bad} accepted")


def test_train_with_ema_through_the_cli(tmp_path: Path, tiny_data: Path, capsys) -> None:
    run = tmp_path / "run"
    args = tiny_train_args(tiny_data, run, epochs=2)
    assert_option_refused([*args, "--ema", "1.0"], "--ema", capsys)
    assert main([*args, "--ema", "0.9"]) == 0
    saved = json.loads((run / "run.json").read_text())
    assert saved["config"]["ema"] == 0.9
    assert len(saved["history"]["fine_tune"]["val_loss"]) == 2
