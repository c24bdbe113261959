"""Generated toy sets: spirals (the tutorial sets linear and sine are in test_sources.py)."""

import pytest
import torch
from data_support import fit

from ember import load_data
from ember.errors import ConfigError


def test_spirals_are_balanced_interleaved_arms():
    splits = load_data("spirals", num_samples=600, classes=4, normalize=False, val_fraction=0, test_fraction=0)
    x, y = splits.train.x, splits.train.y
    assert x.shape == (600, 2) and torch.bincount(y).tolist() == [150] * 4
    assert x.norm(dim=1).max() <= 1.0 + 1e-6
    # Not linearly separable: every class's points surround the origin.
    for k in range(4):
        assert x[y == k].mean(0).norm() < 0.35
    with pytest.raises(ConfigError, match="data.classes >= 2"):
        load_data("spirals", classes=1)


def test_training_on_spirals_learns(tmp_path):
    result = fit(
        tmp_path,
        "data=spirals",
        "data.num_samples=900",
        "model=mlp",
        "model.width=64",
        "trainer.max_epochs=25",
        "optim.lr=0.01",
        "sched=none",
    )
    assert result.metrics["test/accuracy"] > 0.8  # chance: 1/3
