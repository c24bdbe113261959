"""Baselines and skill in every run, each baseline against a direct numpy computation, and
regression that is right whatever the target's units."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from ember.api import train
from ember.config import compose
from ember.data import Splits, TensorData
from ember.data.spec import DataSpec
from ember.inspection.evaluation import evaluate_run
from ember.scoring import baselines
from ember.scoring.baselines import quantile
from ember.scoring.baselines.seasonal import Calendar, resolution
from ember.scoring.regression import RegressionMetrics
from ember.track.console import Console


def fit(root, *overrides):
    return train(
        compose([*overrides, "trainer.progress=none", "trainer.tensorboard=false", f"run.root={root}"]),
        console=Console("none"),
    )


def _csv(path, scale=1.0, n=400, seed=0):
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n))
    y = (np.sin(2 * a) + b * c + 0.1 * rng.normal(size=n)) * scale
    pd.DataFrame({"a": a, "b": b, "c": c, "y": y}).to_csv(path, index=False)
    return str(path)


def _days(n, calendar="360_day", freq="D", start="2000-01-01"):
    return xr.date_range(start, periods=n, freq=freq, calendar=calendar, use_cftime=True)


def _standardized(raw, mean, std):
    shape = (1, -1) + (1,) * (raw.ndim - 2)
    return ((raw - np.reshape(mean, shape)) / np.reshape(std, shape)).astype(np.float32)


def _field_splits(model, obs, names=("tas", "pr"), units=("K", "mm/day"), times=None, n_test=0, **kw):
    """Bias-correction splits from raw model fields and observations (N, C, H, W): standardized
    inputs, physical targets; the last n_test samples are the test split."""
    c = model.shape[1]
    mean, std = model.mean((0, 2, 3)), model.std((0, 2, 3)) + 1e-9
    spec = DataSpec(
        input_shape=model.shape[1:],
        task="regression",
        target_shape=obs.shape[1:],
        mean=list(mean),
        std=list(std),
        input_names=list(names),
        target_names=list(names),
        target_units=list(units),
        identity_channels=list(range(c)),
        **kw,
    )
    x, y = torch.from_numpy(_standardized(model, mean, std)), torch.from_numpy(obs.astype(np.float32))
    k = len(x) - n_test
    test = TensorData(x[k:], y[k:]) if n_test else None
    t = None if times is None else {"train": times[:k], **({"test": times[k:]} if n_test else {})}
    return Splits(train=TensorData(x[:k], y[:k]), test=test, spec=spec, times=t)


# -- runs ----------------------------------------------------------------------------------------


def test_a_target_in_huge_units_reaches_the_same_r2(tmp_path):
    common = [
        "data=csv",
        "data.target=y",
        "data.task=regression",
        "model=mlp",
        "trainer.max_epochs=30",
        "optim.lr=3e-3",
    ]
    plain = fit(tmp_path / "a", *common, f"data.path={_csv(tmp_path / 'plain.csv')}")
    scaled = fit(tmp_path / "b", *common, f"data.path={_csv(tmp_path / 'scaled.csv', scale=1e5)}")
    assert plain.metrics["test/r2"] > 0.6
    assert abs(plain.metrics["test/r2"] - scaled.metrics["test/r2"]) < 0.01
    # Physical units out: the scaled run's RMSE is 1e5 times the plain one's.
    assert scaled.metrics["test/rmse"] == pytest.approx(1e5 * plain.metrics["test/rmse"], rel=0.05)
    # Without target scaling the same network cannot even reach the scale (the bug this fixes).
    raw = fit(
        tmp_path / "c", *common, f"data.path={_csv(tmp_path / 'scaled.csv', scale=1e5)}", "data.normalize_target=false"
    )
    assert raw.metrics["test/r2"] < 0.5


def test_every_regression_run_states_its_baselines_and_skill(tmp_path):
    result = fit(
        tmp_path,
        "data=csv",
        f"data.path={_csv(tmp_path / 'd.csv')}",
        "data.target=y",
        "data.task=regression",
        "model=mlp",
        "trainer.max_epochs=20",
        "optim.lr=3e-3",
    )
    summary = json.loads((result.run_dir / "summary.json").read_text())
    mean, linear = summary["baselines"]["mean"], summary["baselines"]["linear"]
    # The train mean predicts the test set with r2 close to 0 (not exactly: the means differ);
    # a linear fit of sin(2a) + bc explains a little of it, the network most.
    assert abs(mean["test/r2"]) < 0.1 and mean["val/rmse"] > 0
    assert 0.05 < linear["test/r2"] < 0.6
    assert summary["skill"]["best"] == "linear" and summary["skill"]["beaten"]
    assert result.metrics["test/skill"] == pytest.approx(1 - result.metrics["test/mse"] / linear["test/mse"], rel=1e-4)
    assert any("ridge regression" in line for line in summary["baseline_notes"])


def test_the_warning_names_the_baseline_that_wins(tmp_path, capsys):
    # y is linear in the inputs and the network does not train (lr 0): the linear baseline wins.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 300))
    pd.DataFrame({"a": a, "b": b, "y": 2 * a - b + 0.01 * rng.normal(size=300)}).to_csv(tmp_path / "l.csv", index=False)
    overrides = [
        "data=csv",
        f"data.path={tmp_path / 'l.csv'}",
        "data.target=y",
        "data.task=regression",
        "model=mlp",
        "trainer.max_epochs=1",
        "optim.lr=0",
        "trainer.progress=none",
        "trainer.tensorboard=false",
        f"run.root={tmp_path}",
        "run.report=false",
    ]
    result = train(compose(overrides), console=Console("lines"))
    out = capsys.readouterr().out
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["skill"]["best"] == "linear" and not summary["skill"]["beaten"]
    assert summary["baselines"]["linear"]["test/rmse"] < 0.02
    assert "warning: the model does not beat the linear baseline on test" in out
    # A new file: its baselines are the run's own (fitted on the run's train split), scored on it.
    a, b = rng.normal(size=(2, 50))
    pd.DataFrame({"a": a, "b": b, "y": 2 * a - b}).to_csv(tmp_path / "new.csv", index=False)
    metrics = evaluate_run(result.run_dir, [f"data.test_path={tmp_path / 'new.csv'}"], console=Console("lines"))
    out = capsys.readouterr().out
    assert "baselines: fitted on the run's own train split, scored on this data" in out
    assert "the model does not beat the linear baseline on test" in out and metrics["test/skill"] < 0
    # A whole file scored as data.split=train: the baselines were left out (the verdict looked for val).
    metrics = evaluate_run(result.run_dir, ["data.split=train"], console=Console("lines"))
    assert "beside the baselines on train" in capsys.readouterr().out and "train/skill" in metrics


def test_classification_scores_the_majority_class(tmp_path):
    result = fit(tmp_path, "data=spirals", "model=mlp", "trainer.max_epochs=2")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    majority = summary["baselines"]["majority"]
    assert 0.2 < majority["test/accuracy"] < 0.8 and summary["skill"]["best"] == "majority"


# -- metrics -------------------------------------------------------------------------------------


def _field_spec(**kw):
    return DataSpec(
        input_shape=(2, 3, 4),
        task="regression",
        target_shape=(2, 3, 4),
        target_names=["t2m", "pr"],
        lat=[-45.0, 0.0, 45.0],
        **kw,
    )


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


def test_the_anomaly_correlation_takes_each_samples_own_climatology():
    spec = DataSpec(input_shape=(1, 2, 3), task="regression", target_shape=(1, 2, 3))
    g = np.random.default_rng(0)
    clim, true = g.normal(size=(4, 1, 2, 3)), g.normal(size=(4, 1, 2, 3))
    pred = true + 0.5 * g.normal(size=true.shape)
    m = RegressionMetrics(spec, climatology=torch.zeros(1, 2, 3))
    m.update(torch.from_numpy(pred), torch.from_numpy(true), standardized=False, climatology=torch.from_numpy(clim))
    f, o = (pred - clim).reshape(4, -1), (true - clim).reshape(4, -1)
    expected = np.mean((f * o).sum(1) / np.sqrt((f * f).sum(1) * (o * o).sum(1)))
    assert float(m.compute()["acc"]) == pytest.approx(expected, rel=1e-5)


# -- climatology ---------------------------------------------------------------------------------


def test_the_monthly_climatology_is_the_mean_of_each_calendar_month():
    t = _days(48, freq="MS")
    cycle = 10 * np.sin(2 * np.pi * (np.asarray(t.month) - 1) / 12)
    g = np.random.default_rng(0)
    y = cycle[:, None, None, None] + g.normal(size=(48, 1, 2, 3))
    x = g.normal(size=(48, 1, 2, 3))
    splits = _field_splits(x, y, names=("tas",), units=("K",), times=t, n_test=12)
    fitted = baselines.fit(splits)
    assert resolution(t) == "month" and fitted.names[0] == "climatology"
    months = np.asarray(t.month)[:36] - 1
    expected = np.stack([y[:36][months == m].mean(0) for m in range(12)])
    assert np.allclose(fitted.table.numpy(), expected, atol=1e-5)
    scores, _ = baselines.score(splits.test, fitted, "test")
    err = y[36:] - expected[np.asarray(t.month)[36:] - 1]
    # what rollout takes
    assert np.allclose(fitted.at_times(t[36:]).numpy(), expected[np.asarray(t.month)[36:] - 1], atol=1e-5)
    assert scores["climatology"]["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-5)
    # The all-time mean would be far worse on a seasonal cycle of amplitude 10.
    assert scores["climatology"]["rmse"] < 2.0


def test_the_daily_climatology_is_smoothed_over_31_days_of_a_360_day_year():
    t = _days(360 * 3)
    doy = np.asarray(t.dayofyear) - 1
    y = (10 * np.sin(2 * np.pi * doy / 360) + np.random.default_rng(1).normal(size=len(t)))[:, None, None]
    spec = DataSpec(input_shape=(1, 1), task="regression", target_shape=(1, 1), calendar="360_day")
    x = torch.zeros(len(t), 1, 1)
    fitted = baselines.fit(Splits(train=TensorData(x, torch.from_numpy(y).float()), spec=spec, times={"train": t}))
    per_day = np.stack([y[doy == d, 0, 0].mean() for d in range(360)])
    expected = np.array([per_day[np.arange(d - 15, d + 16) % 360].mean() for d in range(360)])
    assert Calendar("day", t, "360_day").slots == 360
    assert np.allclose(fitted.table.numpy().ravel(), expected, atol=1e-5)
    assert "31-day window" in baselines.lines(fitted)[0]


def test_sub_daily_data_has_a_climatology_per_hour_too():
    t = _days(4 * 360 * 2, freq="6h")
    cal = Calendar(resolution(t), t, "360_day")
    assert cal.kind == "hour" and cal.slots == 360 * 4
    keys = cal.keys(t)
    assert keys[0] == 0 and keys[1] == 1 and keys[4] == 4 and keys[4 * 360] == 0


def test_data_without_time_keeps_the_all_time_mean():
    spec = DataSpec(input_shape=(2,), task="regression", target_shape=())
    y = torch.tensor([1.0, 2.0, 3.0, 6.0])
    fitted = baselines.fit(Splits(train=TensorData(torch.randn(4, 2), y), spec=spec))
    assert fitted.names[0] == "mean" and float(fitted.mean) == pytest.approx(3.0)


# -- linear --------------------------------------------------------------------------------------


def _table_splits(n=200, f=3, seed=0, nan=0):
    g = np.random.default_rng(seed)
    raw = g.normal(size=(n, f)) * [1.0, 10.0, 0.1][:f] + 5
    y = raw @ np.array([1.0, -0.2, 3.0][:f]) + 2 + 0.5 * g.normal(size=n)
    if nan:
        y[:nan] = np.nan
    mean, std = raw[: n // 2].mean(0), raw[: n // 2].std(0)
    x = torch.from_numpy(((raw - mean) / std).astype(np.float32))
    spec = DataSpec(input_shape=(f,), task="regression", target_shape=(), mean=list(mean), std=list(std))
    half = n // 2
    yt = torch.from_numpy(y.astype(np.float32))
    return Splits(train=TensorData(x[:half], yt[:half]), val=TensorData(x[half:], yt[half:]), spec=spec), raw, y


def test_linear_at_zero_penalty_is_numpys_lstsq_and_missing_targets_leave_it():
    splits, raw, y = _table_splits(nan=7)
    fitted = baselines.fit(Splits(train=splits.train, spec=splits.spec))  # no validation: penalty 0
    assert "linear" in fitted.names and fitted.alpha == 0
    ok = np.isfinite(y[:100])
    a = np.concatenate([raw[:100], np.ones((100, 1))], axis=1)
    w = np.linalg.lstsq(a[ok], y[:100][ok], rcond=None)[0]
    pred = baselines.scoring.predict(fitted, "linear", splits.val.x, "val", 0, 100).numpy()
    assert np.allclose(pred, np.concatenate([raw[100:], np.ones((100, 1))], axis=1) @ w, rtol=1e-4, atol=1e-4)


def test_the_ridge_penalty_is_chosen_on_validation():
    splits, _, _ = _table_splits(n=60, f=3, seed=3)
    fitted = baselines.fit(splits)
    assert fitted.alpha in baselines.linear.ALPHAS
    choice = baselines.linear.PenaltyChoice(_ridge(splits), np.ones(1))
    choice.add(splits.val.x.double().numpy(), splits.val.y.double().numpy().reshape(-1, 1))
    assert fitted.alpha == baselines.linear.ALPHAS[int(np.argmin(choice.sse))]


def _ridge(splits):
    r = baselines.linear.RidgeFit(splits.spec.in_features, 1)
    r.add(splits.train.x.double().numpy(), splits.train.y.double().numpy().reshape(-1, 1))
    return r


# -- bias correction -----------------------------------------------------------------------------


def test_quantile_mapping_maps_exactly_inside_the_train_range_and_holds_the_correction_beyond():
    g = np.random.default_rng(0)
    model = g.gamma(2.0, 2.0, size=(200, 2, 2, 3)) + np.array([270.0, 0.0]).reshape(1, 2, 1, 1)
    obs = 2 * model + 1
    obs[:, 1] = 2 * model[:, 1]  # precipitation: a ratio
    fitted = baselines.fit(_field_splits(model, obs))
    assert "quantile_mapping" in fitted.names
    inside = model[:5].reshape(5, -1)
    # float32 data: exact to float32's precision; the tables themselves in float64, exactly.
    assert np.allclose(fitted.qmap(torch.from_numpy(inside)).numpy(), obs[:5].reshape(5, -1), rtol=1e-6)
    flat_m, flat_o = model.reshape(200, -1), obs.reshape(200, -1)
    exact = quantile.QuantileMap(
        quantile.nan_quantiles(flat_m, 200), quantile.nan_quantiles(flat_o, 200), np.zeros(12, dtype=bool)
    )
    between = (flat_m[:5] + flat_m[5:10]) / 2  # values between the train samples: interpolated
    assert np.allclose(exact(torch.from_numpy(between)).numpy()[:, :6], 2 * between[:, :6] + 1, rtol=1e-12)
    assert np.allclose(exact(torch.from_numpy(between)).numpy()[:, 6:], 2 * between[:, 6:], rtol=1e-12)
    # Beyond the train range the correction at its end is held: +(obs_max - model_max) for tas.
    hi = model[:, 0].max(0).reshape(-1)
    beyond = np.tile(model[:1].reshape(1, -1), (1, 1))
    beyond[0, :6] = hi + 5.0
    out = fitted.qmap(torch.from_numpy(beyond)).numpy()[0, :6]
    assert np.allclose(out, hi + 5.0 + (2 * hi + 1 - hi))


def test_quantile_mapping_agrees_with_python_cmethods():
    cmethods = pytest.importorskip("cmethods")
    g = np.random.default_rng(2)
    model = g.normal(280, 3, size=(400, 1, 1, 1))
    obs = g.normal(282, 5, size=(400, 1, 1, 1))
    later = g.normal(280.5, 3, size=(100, 1, 1, 1))
    fitted = baselines.fit(_field_splits(model, obs, names=("tas",), units=("K",)))
    ours = fitted.qmap(torch.from_numpy(later.reshape(100, 1))).numpy().ravel()
    time = xr.date_range("2000-01-01", periods=400, freq="D")

    def da(values, times):  # cmethods takes one xarray series per input
        return xr.DataArray(values.ravel(), coords={"time": times}, dims="time", name="tas")

    ref = cmethods.adjust(
        method="quantile_mapping",
        obs=da(obs, time),
        simh=da(model, time),
        simp=da(later, time[:100]),
        n_quantiles=1000,
        kind="+",
    )
    theirs = np.asarray(ref["tas"] if "tas" in getattr(ref, "data_vars", ()) else ref).ravel()
    inside = (later.ravel() > model.min()) & (later.ravel() < model.max())
    # cmethods bins the CDFs over the pooled range; ember interpolates the samples themselves.
    assert np.abs(ours - theirs)[inside].mean() < 0.05  # measured 0.018 K


def test_quantile_delta_mapping_keeps_the_evaluated_periods_trend():
    g = np.random.default_rng(3)
    hist = g.normal(280, 2, size=(100, 1, 1, 2))
    future = hist + 3.0  # the later period is 3 K warmer in the model
    model = np.concatenate([hist, future])
    splits = _field_splits(model, model + 1.0, names=("tas",), units=("K",), n_test=100)
    fitted = baselines.fit(splits, qdm=True)
    scores, _ = baselines.score(splits.test, fitted, "test")
    # QDM: the observed +1 plus the model's own +3; plain QM clips to the train range's end.
    assert scores["quantile_delta_mapping"]["rmse"] < 1e-4
    assert scores["identity"]["rmse"] == pytest.approx(1.0, rel=1e-4)


def test_linear_scaling_shifts_each_calendar_month_and_scales_precipitation():
    t = _days(36, freq="MS")
    month = np.asarray(t.month) - 1
    g = np.random.default_rng(4)
    model = g.gamma(2.0, 1.0, size=(36, 2, 1, 2)) + np.array([280.0, 0.0]).reshape(1, 2, 1, 1)
    obs = model.copy()
    obs[:, 0] += month[:, None, None] * 0.5  # tas: +0.5 K per month number
    obs[:, 1] *= 1.5  # pr: 1.5 times
    fitted = baselines.fit(_field_splits(model, obs, times=t))
    pred = baselines.scoring.predict(
        fitted, "linear_scaling", _field_splits(model, obs).train.x, "train", 0, 36
    ).numpy()
    assert np.allclose(pred, obs, atol=1e-3)


def test_masked_points_are_left_out_of_every_baseline():
    g = np.random.default_rng(5)
    model = g.normal(280, 2, size=(60, 1, 2, 2))
    obs = model + 1.0 + 0.1 * g.normal(size=model.shape)
    obs[:, :, 0, 0] = np.nan  # land: missing at every time
    obs[::7, :, 1, 1] = np.nan  # gaps
    splits = _field_splits(model, obs, names=("tas",), units=("K",), n_test=20)
    fitted = baselines.fit(splits)
    scores, _ = baselines.score(splits.test, fitted, "test")
    ok = np.isfinite(obs[40:])
    for name in ("identity", "quantile_mapping", "linear_scaling", "climatology"):
        pred = baselines.scoring.predict(fitted, name, splits.test.x, "test", 0, 20).numpy()
        assert scores[name]["rmse"] == pytest.approx(np.sqrt(((pred - obs[40:])[ok] ** 2).mean()), rel=1e-4), name
    assert scores["identity"]["rmse"] == pytest.approx(np.sqrt(((model[40:] - obs[40:])[ok] ** 2).mean()), rel=1e-4)


def test_a_baseline_that_cannot_apply_is_left_out_with_one_line():
    g = np.random.default_rng(6)
    model = g.normal(size=(12, 1, 2, 2))
    fitted = baselines.fit(_field_splits(model, model + 1, names=("tas",), units=("K",)), qdm=True)
    assert "quantile_mapping" not in fitted.names and "quantile_delta_mapping" not in fitted.names
    lines = baselines.lines(fitted)
    assert any(
        "quantile_mapping left out: 12 train samples at some grid point, fewer than the 20" in line for line in lines
    )
    assert "linear_scaling" in fitted.names  # the others still apply


def test_percentile_biases_and_wet_days_for_the_model_and_each_baseline():
    g = np.random.default_rng(7)
    model = g.gamma(0.5, 4.0, size=(120, 2, 2, 2)) + np.array([280.0, 0.0]).reshape(1, 2, 1, 1)
    obs = model * np.array([1.0, 1.3]).reshape(1, 2, 1, 1) + np.array([2.0, 0.0]).reshape(1, 2, 1, 1)
    splits = _field_splits(model, obs, n_test=40)
    fitted = baselines.fit(splits)

    def model_fn(x):  # the "model" predicts the model field itself over the test years
        return torch.from_numpy(model[80:]).double()[: len(x)]

    scores, mine = baselines.score(splits.test, fitted, "test", model=model_fn)
    t, o = model[80:], obs[80:]
    p95 = np.percentile(t[:, 0], 95, axis=0) - np.percentile(o[:, 0], 95, axis=0)
    assert scores["identity"]["p95_bias/tas"] == pytest.approx(p95.mean(), rel=1e-6)
    assert mine["p95_bias/tas"] == pytest.approx(p95.mean(), rel=1e-6)
    assert mine["wet_days/pr"] == pytest.approx((t[:, 1] > 1).mean()) and mine["wet_days_observed/pr"] == pytest.approx(
        (o[:, 1] > 1).mean()
    )
    assert abs(scores["quantile_mapping"]["p50_bias/tas"]) < abs(scores["identity"]["p50_bias/tas"])


def test_the_identity_baseline_of_a_bias_correction_is_the_uncorrected_field():
    spec = _field_spec(
        mean=[279.0, 3.0], std=[9.0, 2.0], target_mean=[280.0, 2.0], target_std=[10.0, 1.0], identity_channels=[0, 1]
    )
    g = torch.Generator().manual_seed(1)
    raw_x = torch.randn(30, 2, 3, 4, generator=g) * torch.tensor([9.0, 2.0]).reshape(1, 2, 1, 1) + torch.tensor(
        [279.0, 3.0]
    ).reshape(1, 2, 1, 1)
    raw_y = raw_x + 1.5  # the model is 1.5 units off everywhere
    x = (raw_x - torch.tensor([279.0, 3.0]).reshape(1, 2, 1, 1)) / torch.tensor([9.0, 2.0]).reshape(1, 2, 1, 1)
    y = (raw_y - torch.tensor([280.0, 2.0]).reshape(1, 2, 1, 1)) / torch.tensor([10.0, 1.0]).reshape(1, 2, 1, 1)
    splits = Splits(train=TensorData(x, y), spec=spec)
    fitted = baselines.fit(splits)
    assert torch.allclose(fitted.mean, raw_y.double().mean(0), atol=1e-4)
    assert fitted.names == ["climatology", "identity", "linear_scaling", "quantile_mapping"]
    scores, _ = baselines.score(splits.train, fitted, "train")
    assert scores["identity"]["rmse/t2m"] == pytest.approx(1.5, rel=1e-4) and scores["identity"][
        "bias/pr"
    ] == pytest.approx(-1.5, rel=1e-4)
    assert scores["linear_scaling"]["rmse/t2m"] < 1e-4
    assert baselines.candidates(DataSpec(**{**spec.to_dict(), "lead": 2}), False)[:2] == ["climatology", "persistence"]


def test_a_bias_correction_run_end_to_end_scores_every_baseline(tmp_path):
    g = np.random.default_rng(8)
    t, shape = 72, (72, 3, 4)
    coords = {
        "time": xr.date_range("2000-01-01", periods=t, freq="MS", calendar="360_day", use_cftime=True),
        "lat": [-30.0, 0.0, 30.0],
        "lon": [0.0, 90.0, 180.0, 270.0],
    }
    season = 5 * np.cos(2 * np.pi * np.arange(t) / 12)[:, None, None]
    tas = 280 + season + g.normal(size=shape)
    model = xr.Dataset({"tas": (("time", "lat", "lon"), tas, {"units": "K"})}, coords=coords)
    obs = xr.Dataset(
        {"tas": (("time", "lat", "lon"), 1.2 * tas - 55 + 0.1 * g.normal(size=shape), {"units": "K"})}, coords=coords
    )
    model.to_netcdf(tmp_path / "model.nc", engine="h5netcdf")
    obs.to_netcdf(tmp_path / "obs.nc", engine="h5netcdf")
    # lr 0 and residual learning: the model is exactly the uncorrected field, the identity baseline.
    result = fit(
        tmp_path / "runs",
        "data=gridded",
        f"data.path={tmp_path / 'model.nc'}",
        f"data.target_path={tmp_path / 'obs.nc'}",
        "data.variables=[tas]",
        "data.num_workers=0",
        "model=unet",
        "model.residual=true",
        "optim.lr=0",
        "trainer.max_epochs=1",
        "run.report=false",
    )
    summary = json.loads((result.run_dir / "summary.json").read_text())
    base = summary["baselines"]
    assert {"identity", "linear_scaling", "quantile_mapping", "climatology"} <= set(base)
    assert base["quantile_mapping"]["test/rmse"] < base["identity"]["test/rmse"]
    assert "per calendar month" in summary["baseline_notes"][0]
    # The trainer's anomaly correlation takes the same seasonal climatology as the baselines'.
    for key in ("test/rmse", "test/acc", "test/p95_bias", "val/acc"):
        assert result.metrics[key] == pytest.approx(base["identity"][key], rel=1e-4, abs=1e-5), key
    assert result.metrics["test/acc"] < 0.99  # against the all-time mean, the season would make it ~1


def test_a_sharded_evaluation_batch_gets_the_climatology_of_its_own_rows():
    from ember.data.loaders import EpochLoader

    t = _days(48, freq="MS")
    y = np.asarray(t.month, dtype=np.float64)[:, None, None, None] * np.ones((48, 1, 1, 2))
    splits = _field_splits(np.zeros((48, 1, 1, 2)), y, names=("tas",), units=("K",), times=t, n_test=10)
    fitted = baselines.fit(splits)
    loader = EpochLoader(splits.test, 3, False, rank=1, world=2, evaluation=True)  # batches 1 and 3 of 4
    clim = baselines.batch_climatology(fitted, "test", loader)
    got = [clim(i, len(x)).numpy()[:, 0, 0, 0] for i, (x, _) in enumerate(loader)]
    months = np.asarray(t.month)[38:]
    assert [list(g) for g in got] == [list(months[3:6].astype(float)), list(months[9:10].astype(float))]


def test_precipitation_is_known_by_name_or_units_and_wet_days_by_units():
    from ember.scoring.baselines.extremes import is_precipitation, wet_threshold

    assert (
        is_precipitation("pr", "kg m-2 s-1")
        and is_precipitation("precip", "")
        and is_precipitation("rain_total", "mm/day")
    )
    assert not is_precipitation("tas", "K") and not is_precipitation("pressure", "Pa")
    assert (
        wet_threshold("kg m-2 s-1") == pytest.approx(1 / 86400)
        and wet_threshold("mm/day") == 1.0
        and wet_threshold("furlongs") is None
    )


def test_too_many_train_values_for_quantile_mapping_is_one_line(monkeypatch):
    from ember.scoring.baselines import fitting

    monkeypatch.setattr(fitting, "QM_VALUES", 100)
    model = np.random.default_rng(9).normal(size=(40, 1, 2, 2))
    fitted = baselines.fit(_field_splits(model, model + 1, names=("tas",), units=("K",)))
    assert "quantile_mapping" not in fitted.names and "linear_scaling" in fitted.names
    assert any(
        "quantile_mapping left out: the train split's 40 x 4 values are more than the 100 held for it" in line
        for line in baselines.lines(fitted)
    )
