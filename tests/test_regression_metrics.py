"""Regression metrics in physical units: the relative L2 error of fields and vectors."""

import torch

from ember.data.spec import DataSpec
from ember.regression_metrics import RegressionMetrics
from ember.train.losses import RelativeL2Loss


def test_relative_l2_is_per_sample_in_physical_units_and_adds_up_over_shares():
    spec = DataSpec(input_shape=(2, 16), task="regression", target_shape=(2, 16), target_mean=[5.0, -1.0], target_std=[2.0, 0.1])
    pred, true = torch.randn(6, 2, 16), torch.randn(6, 2, 16)
    mean, std = torch.tensor([5.0, -1.0]).reshape(1, 2, 1), torch.tensor([2.0, 0.1]).reshape(1, 2, 1)
    p, t = pred * std + mean, true * std + mean
    expected = ((p - t).flatten(1).norm(dim=1) / t.flatten(1).norm(dim=1)).mean()
    whole = RegressionMetrics(spec)
    whole.update(pred, true)
    shares = RegressionMetrics(spec)
    shares.update(pred[:2], true[:2])
    shares.update(pred[2:], true[2:])  # a split evaluated in shares, as across processes
    assert torch.allclose(whole.compute()["relative_l2"].double(), expected.double(), rtol=1e-5)
    assert torch.allclose(shares.compute()["relative_l2"], whole.compute()["relative_l2"], rtol=1e-6)
    assert torch.allclose(RelativeL2Loss(spec)(pred, true), whole.compute()["relative_l2"], rtol=1e-5)
    # Baselines pass physical values as they are.
    raw = RegressionMetrics(spec)
    raw.update(p, t, standardized=False)
    assert torch.allclose(raw.compute()["relative_l2"], whole.compute()["relative_l2"], rtol=1e-5)


def test_vectors_have_relative_l2_and_scalars_do_not():
    vector = RegressionMetrics(DataSpec(input_shape=(3,), task="regression", target_shape=(8,)))
    assert vector.keys()[:5] == ["mse", "mae", "rmse", "r2", "relative_l2"]
    scalar = RegressionMetrics(DataSpec(input_shape=(3,), task="regression", target_shape=()))
    scalar.update(torch.randn(5), torch.randn(5))
    assert scalar.keys() == ["mse", "mae", "rmse", "r2"] and sorted(scalar.compute()) == ["mae", "mse", "r2", "rmse"]
