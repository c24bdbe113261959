"""Baselines and skill in every run, and regression that is right whatever the target's units."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ember import baselines
from ember.api import train
from ember.config import compose
from ember.data import Splits, TensorData
from ember.data.spec import DataSpec
from ember.regression_metrics import RegressionMetrics
from ember.track.console import Console


def fit(root, *overrides):
    return train(compose([*overrides, "trainer.progress=none", "trainer.tensorboard=false", f"run.root={root}"]), console=Console("none"))


def _csv(path, scale=1.0, n=400, seed=0):
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n))
    y = (np.sin(2 * a) + b * c + 0.1 * rng.normal(size=n)) * scale
    pd.DataFrame({"a": a, "b": b, "c": c, "y": y}).to_csv(path, index=False)
    return str(path)


def test_a_target_in_huge_units_reaches_the_same_r2(tmp_path):
    common = ["data=csv", "data.target=y", "data.task=regression", "model=mlp", "trainer.max_epochs=30", "optim.lr=3e-3"]
    plain = fit(tmp_path / "a", *common, f"data.path={_csv(tmp_path / 'plain.csv')}")
    scaled = fit(tmp_path / "b", *common, f"data.path={_csv(tmp_path / 'scaled.csv', scale=1e5)}")
    assert plain.metrics["test/r2"] > 0.6
    assert abs(plain.metrics["test/r2"] - scaled.metrics["test/r2"]) < 0.01
    # Physical units out: the scaled run's RMSE is 1e5 times the plain one's.
    assert scaled.metrics["test/rmse"] == pytest.approx(1e5 * plain.metrics["test/rmse"], rel=0.05)
    # Without target scaling the same network cannot even reach the scale (the bug this fixes).
    raw = fit(tmp_path / "c", *common, f"data.path={_csv(tmp_path / 'scaled.csv', scale=1e5)}", "data.normalize_target=false")
    assert raw.metrics["test/r2"] < 0.5


def test_every_regression_run_states_its_baseline_and_skill(tmp_path):
    result = fit(tmp_path, "data=csv", f"data.path={_csv(tmp_path / 'd.csv')}", "data.target=y", "data.task=regression", "model=mlp", "trainer.max_epochs=20", "optim.lr=3e-3")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    mean = summary["baselines"]["mean"]
    # The train mean predicts the test set with r2 close to 0 (not exactly: the means differ).
    assert abs(mean["test/r2"]) < 0.1 and mean["val/rmse"] > 0
    assert summary["skill"]["best"] == "mean" and summary["skill"]["beaten"]
    assert result.metrics["test/skill"] == pytest.approx(1 - result.metrics["test/mse"] / mean["test/mse"], rel=1e-4)


def test_classification_scores_the_majority_class(tmp_path):
    result = fit(tmp_path, "data=spirals", "model=mlp", "trainer.max_epochs=2")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    majority = summary["baselines"]["majority"]
    assert 0.2 < majority["test/accuracy"] < 0.8 and summary["skill"]["best"] == "majority"


def _field_spec(**kw):
    return DataSpec(input_shape=(2, 3, 4), task="regression", target_shape=(2, 3, 4), target_names=["t2m", "pr"], lat=[-45.0, 0.0, 45.0], **kw)


def test_field_metrics_are_per_variable_in_physical_units_and_latitude_weighted():
    spec = _field_spec(target_mean=[280.0, 2.0], target_std=[10.0, 1.0])
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5, 2, 3, 4, generator=g)
    out = y + 0.1 * torch.randn(5, 2, 3, 4, generator=g)
    m = RegressionMetrics(spec, climatology=torch.tensor([280.0, 2.0]).reshape(2, 1, 1).expand(2, 3, 4))
    m.update(out, y)
    r = {k: float(v) for k, v in m.compute().items()}
    err = (out - y) * torch.tensor([10.0, 1.0]).reshape(1, 2, 1, 1)  # errors in kelvin and mm/day
    assert r["rmse/t2m"] == pytest.approx(float(err[:, 0].pow(2).mean().sqrt()), rel=1e-5)
    assert r["rmse/pr"] == pytest.approx(float(err[:, 1].pow(2).mean().sqrt()), rel=1e-5)
    assert r["bias/t2m"] == pytest.approx(float(err[:, 0].mean()), rel=1e-4, abs=1e-6)
    w = torch.cos(torch.deg2rad(torch.tensor([-45.0, 0.0, 45.0])))
    w = (w / w.mean()).reshape(1, 3, 1)
    assert r["wrmse/t2m"] == pytest.approx(float((w * err[:, 0] ** 2).mean().sqrt()), rel=1e-5)
    assert 0.9 < r["acc/t2m"] <= 1.0 and 0.9 < r["acc/pr"] <= 1.0
    assert set(m.keys()) == set(r)


def test_identity_baseline_of_a_bias_correction_is_the_uncorrected_field():
    spec = _field_spec(mean=[279.0, 3.0], std=[9.0, 2.0], target_mean=[280.0, 2.0], target_std=[10.0, 1.0], identity_channels=[0, 1])
    g = torch.Generator().manual_seed(1)
    raw_x = torch.randn(8, 2, 3, 4, generator=g) * torch.tensor([9.0, 2.0]).reshape(1, 2, 1, 1) + torch.tensor([279.0, 3.0]).reshape(1, 2, 1, 1)
    raw_y = raw_x + 1.5  # the model is 1.5 units off everywhere
    x = (raw_x - torch.tensor([279.0, 3.0]).reshape(1, 2, 1, 1)) / torch.tensor([9.0, 2.0]).reshape(1, 2, 1, 1)
    y = (raw_y - torch.tensor([280.0, 2.0]).reshape(1, 2, 1, 1)) / torch.tensor([10.0, 1.0]).reshape(1, 2, 1, 1)
    splits = Splits(train=TensorData(x, y), spec=spec)
    clim = baselines.climatology(splits)
    assert torch.allclose(clim, raw_y.double().mean(0), atol=1e-4)
    assert baselines.names(spec) == ["climatology", "identity"]
    scores = baselines.score([(x, y)], spec, clim, torch.device("cpu"))
    assert scores["identity"]["rmse/t2m"] == pytest.approx(1.5, rel=1e-4) and scores["identity"]["bias/pr"] == pytest.approx(-1.5, rel=1e-4)
    assert baselines.names(DataSpec(**{**spec.to_dict(), "lead": 2})) == ["climatology", "persistence"]
