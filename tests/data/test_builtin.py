"""scikit-learn's bundled data sets: shapes, and a short training run that learns on each."""

import pytest
from data_support import fit

from ember import load_data


@pytest.mark.parametrize(
    "name, shape, classes, n",
    [
        ("digits", (1, 8, 8), 10, 1797),
        ("wine", (13,), 3, 178),
        ("breast_cancer", (30,), 2, 569),
        ("diabetes", (10,), None, 442),
    ],
)
def test_bundled_sets_load_offline_with_carved_splits(name, shape, classes, n):
    splits = load_data(name)
    assert splits.spec.input_shape == shape and splits.spec.num_classes == classes
    assert len(splits.train) + len(splits.val) + len(splits.test) == n
    assert abs(len(splits.test) - 0.2 * n) <= 1 and abs(len(splits.val) - 0.1 * n) <= 1


@pytest.mark.parametrize(
    "name, metric, threshold, extra",
    [
        ("digits", "test/accuracy", 0.85, ["trainer.max_epochs=5"]),
        ("wine", "test/accuracy", 0.85, ["trainer.max_epochs=10"]),
        ("breast_cancer", "test/accuracy", 0.9, ["trainer.max_epochs=5"]),
        # The raw target (25..346) starts far from a fresh network's output: more steps, larger lr.
        ("diabetes", "test/r2", 0.3, ["trainer.max_epochs=40", "optim.lr=0.02"]),
    ],
)
def test_training_learns(tmp_path, name, metric, threshold, extra):
    result = fit(tmp_path, f"data={name}", "model=mlp", "model.width=64", "sched=none", "optim.lr=0.01", *extra)
    assert result.metrics[metric] > threshold, result.metrics
