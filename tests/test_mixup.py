"""`smartbin train --mixup`: blends stay inside a label group, so no missing label is invented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fixtures_model import assert_option_refused, tiny_train_args

from smartbin.cli import main
from smartbin.train.mixup import label_groups, mix_batch, partners

# Six examples: 0-2 carry both heads (a web material image), 3-4 only the binary head
# (organic), 5 only the material head (trash): three groups, one of them a single example.
WEIGHTS = {
    "binary": np.array([1.0, 1.0, 1.0, 2.0, 2.0, 0.0], np.float32),
    "material": np.array([1.0, 3.0, 1.0, 0.0, 0.0, 4.0], np.float32),
}
TARGETS = {
    "binary": np.array([[0, 1], [0, 1], [0, 1], [1, 0], [1, 0], [0, 0]], np.float32),
    "material": np.eye(6, dtype=np.float32)[[0, 1, 2, 0, 0, 5]] * [[1], [1], [1], [0], [0], [1]],
}


def test_groups_are_the_heads_an_example_is_labelled_for() -> None:
    assert label_groups(WEIGHTS).tolist() == [3, 3, 3, 1, 1, 2]


def test_partners_come_from_the_own_group_and_a_lone_example_keeps_itself() -> None:
    groups = label_groups(WEIGHTS)
    for seed in range(20):
        partner = partners(groups, np.random.default_rng(seed))
        assert (groups[partner] == groups).all()
        assert partner[5] == 5
        assert sorted(partner.tolist()) == list(range(6))  # a permutation


def test_blend_mixes_features_targets_and_weights_with_one_share_per_example() -> None:
    x = np.arange(6, dtype=np.float32).reshape(6, 1, 1) * 10
    mixed_x, mixed_y, mixed_w = mix_batch(
        x, TARGETS, WEIGHTS, label_groups(WEIGHTS), 0.4, np.random.default_rng(3)
    )
    assert mixed_x.dtype == np.float32
    changed = ~np.isclose(mixed_x[:, 0, 0], x[:, 0, 0])
    assert changed.any(), "alpha 0.4 blended nothing"
    for head in WEIGHTS:
        # Missing labels stay missing: zero weight and an all-zero target.
        missing = WEIGHTS[head] == 0
        assert (mixed_w[head][missing] == 0).all()
        assert (mixed_y[head][missing] == 0).all()
        # Known targets stay distributions, and weights stay between the two class weights.
        known = ~missing
        assert np.allclose(mixed_y[head][known].sum(axis=1), 1.0)
    assert (mixed_w["material"][:3] >= 1.0).all() and (mixed_w["material"][:3] <= 3.0).all()
    # The lone trash example is untouched.
    assert np.isclose(mixed_x[5, 0, 0], x[5, 0, 0]) and np.isclose(mixed_w["material"][5], 4.0)


def test_the_same_share_blends_the_features_and_the_targets() -> None:
    """Features 0/1 one-hot-like along the first axis make the share readable from both."""
    x = TARGETS["material"][:3, :3].reshape(3, 3, 1).copy()
    weights = {"binary": np.ones(3, np.float32), "material": np.ones(3, np.float32)}
    targets = {"binary": TARGETS["binary"][:3], "material": TARGETS["material"][:3]}
    mixed_x, mixed_y, _ = mix_batch(
        x, targets, weights, label_groups(weights), 1.0, np.random.default_rng(0)
    )
    assert np.allclose(mixed_x[:, :, 0], mixed_y["material"][:, :3])


def test_alpha_zero_is_the_identity() -> None:
    x = np.ones((6, 2), np.float32)
    out = mix_batch(x, TARGETS, WEIGHTS, label_groups(WEIGHTS), 0.0, np.random.default_rng(0))
    assert out[0] is x and out[1] is TARGETS and out[2] is WEIGHTS


def test_train_with_mixup_through_the_cli(tmp_path: Path, tiny_data: Path, capsys) -> None:
    run = tmp_path / "run"
    args = tiny_train_args(tiny_data, run)
    assert_option_refused([*args, "--mixup", "-1"], "--mixup", capsys)
    assert main([*args, "--mixup", "0.2"]) == 0
    saved = json.loads((run / "run.json").read_text())
    assert saved["config"]["mixup"] == 0.2
    assert np.isfinite(saved["history"]["fine_tune"]["loss"]).all()
