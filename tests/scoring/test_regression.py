"""Regression metrics in physical units: the relative L2 error of fields and vectors."""

import numpy as np
import pytest
import torch

from ember.data.spec import DataSpec
from ember.scoring.regression import RegressionMetrics
from ember.train.losses import RelativeL2Loss


def test_relative_l2_is_per_sample_in_physical_units_and_adds_up_over_shares():
    spec = DataSpec(
        input_shape=(2, 16), task="regression", target_shape=(2, 16), target_mean=[5.0, -1.0], target_std=[2.0, 0.1]
    )
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


def test_a_masked_field_is_scored_over_the_unmasked_points_only_as_numpy_does():
    g = torch.Generator().manual_seed(0)
    lat = [60.0, 30.0, 0.0, -30.0]
    spec = DataSpec(
        input_shape=(1, 4, 5),
        task="regression",
        target_shape=(1, 4, 5),
        target_mean=[280.0],
        target_std=[4.0],
        lat=lat,
        mask=[0, 1],
    )
    pred, true = torch.randn(6, 1, 4, 5, generator=g), torch.randn(6, 1, 4, 5, generator=g)
    true[:, :, 0, :2] = float("nan")  # land
    true[2, 0, 3, 3] = float("nan")  # a gap
    climatology = 280 + torch.randn(1, 4, 5, generator=g, dtype=torch.float64)
    climatology[:, 0, :2] = float("nan")  # no climatology where there is never a value
    m = RegressionMetrics(spec, climatology)
    m.update(pred[:4], true[:4])
    m.update(pred[4:], true[4:])
    out = {k: float(v) for k, v in m.compute().items()}
    p, t = (a.double().numpy() * 4 + 280 for a in (pred, true))
    valid = np.isfinite(t)
    e = (p - t)[valid]
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)), rel=1e-5) and out["mae"] == pytest.approx(
        np.mean(np.abs(e)), rel=1e-5
    )
    assert out["bias"] == pytest.approx(np.mean(e), rel=1e-5, abs=1e-9)
    assert out["r2"] == pytest.approx(1 - np.sum(e**2) / np.sum((t[valid] - t[valid].mean()) ** 2), rel=1e-5)
    w = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], (4, 5))
    w = np.broadcast_to(w / w.mean(), t.shape)
    assert out["wrmse"] == pytest.approx(np.sqrt(np.sum(w[valid] * e**2) / np.sum(w[valid])), rel=1e-5)
    rel = [np.linalg.norm(np.nan_to_num(p[i] - t[i])) / np.linalg.norm(np.nan_to_num(t[i])) for i in range(6)]
    assert out["relative_l2"] == pytest.approx(np.mean(rel), rel=1e-5)
    c = climatology.numpy()
    accs = []
    for i in range(6):
        ok = valid[i, 0] & np.isfinite(c[0])
        f, o, ww = p[i, 0][ok] - c[0][ok], t[i, 0][ok] - c[0][ok], w[i, 0][ok]
        accs.append(np.sum(ww * f * o) / np.sqrt(np.sum(ww * f * f) * np.sum(ww * o * o)))
    assert out["acc"] == pytest.approx(np.mean(accs), rel=1e-5)
    assert all(np.isfinite(v) for v in out.values())


def test_a_large_batch_is_summed_in_slices_with_the_same_result(monkeypatch):
    import ember.scoring.regression as rm

    spec = DataSpec(input_shape=(2, 4, 6), task="regression", target_shape=(2, 4, 6), lat=[-60.0, -20.0, 20.0, 60.0])
    gen = torch.Generator().manual_seed(0)
    pred, true = torch.randn(9, 2, 4, 6, generator=gen), torch.randn(9, 2, 4, 6, generator=gen)
    true[:, 0, 0, 0] = float("nan")
    clim = torch.randn(9, 2, 4, 6, generator=gen).double()
    whole = RegressionMetrics(spec, climatology=torch.zeros(2, 4, 6))
    whole.update(pred, true, climatology=clim)
    monkeypatch.setattr(rm, "CHUNK_BYTES", 8 * 48 * 2)  # two rows a slice: five slices, the last of one
    sliced = RegressionMetrics(spec, climatology=torch.zeros(2, 4, 6))
    sliced.update(pred, true, climatology=clim)
    a, b = whole.compute(), sliced.compute()
    assert sorted(a) == sorted(b) and "acc/0" in a and "wrmse/1" in a
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-12), k
