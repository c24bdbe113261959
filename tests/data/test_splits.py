"""Carved splits (stratified, seeded, recorded) and normalization, in memory and from files."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from ember import load_data
from ember.config import compose
from ember.data import Splits, build_data
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.data.splits import _order, carve, normalize
from ember.errors import ConfigError, DataError


def _splits(y, test=None):
    x = torch.arange(len(y), dtype=torch.float32).unsqueeze(1)
    spec = DataSpec(input_shape=(1,), task="classification", num_classes=int(y.max()) + 1)
    return Splits(train=TensorData(x, y), test=test, spec=spec)


def test_stratified_order_keeps_every_prefix_in_proportion():
    y = torch.cat([torch.zeros(900), torch.ones(90), torch.full((10,), 2)]).long()[torch.randperm(1000)]
    order = _order(1000, y, seed=0)
    assert sorted(order.tolist()) == list(range(1000))
    for m in (100, 200, 500):
        counts = torch.bincount(y[order[:m]], minlength=3)
        assert torch.allclose(counts.float(), torch.tensor([0.9, 0.09, 0.01]) * m, atol=1.01)
    assert not torch.equal(order, _order(1000, y, seed=1))


def test_carve_test_then_validation_disjoint_and_recorded():
    y = torch.arange(100) % 4
    out = carve(_splits(y), test_fraction=0.2, val_fraction=0.1, seed=0, stratify=True)
    assert (len(out.train), len(out.val), len(out.test)) == (70, 10, 20)
    for name in ("train", "val", "test"):
        data, rows = getattr(out, name), out.indices[name]
        assert data.x[:, 0].long().tolist() == rows  # the recorded rows are the samples held
    assert torch.bincount(out.test.y).tolist() == [5, 5, 5, 5]
    assert set(out.indices["train"]).isdisjoint(out.indices["test"] + out.indices["val"])
    # A predefined test split is kept; only validation is carved, and test is not recorded.
    fixed = _splits(y, test=TensorData(torch.zeros(5, 1), torch.zeros(5).long()))
    out = carve(fixed, test_fraction=0.2, val_fraction=0.1, seed=0, stratify=False)
    assert len(out.test) == 5 and set(out.indices) == {"train", "val"}


def test_split_mistakes_and_empty_splits():
    y = torch.arange(10) % 2
    with pytest.raises(ConfigError, match="data.test_fraction=0.01 leaves no test sample out of 10"):
        carve(_splits(y), test_fraction=0.01, val_fraction=0.1, seed=0, stratify=True)
    with pytest.raises(ConfigError, match="leave no train sample out of 10"):
        carve(_splits(y), test_fraction=0.5, val_fraction=0.5, seed=0, stratify=True)
    with pytest.raises(
        ConfigError, match="data.split='holdout' is not a valid choice; choose one of: train, val, test"
    ):
        compose(["data.split=holdout"])


def test_an_empty_predefined_split_is_an_error(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x=np.zeros((20, 2)),
        y=np.arange(20) % 2,
        x_test=np.zeros((0, 2)),
        y_test=np.zeros(0, dtype=np.int64),
    )
    with pytest.raises(DataError, match="the test split of data=numpy is empty"):
        load_data("numpy", path=str(tmp_path / "d.npz"))


def test_the_same_config_gives_the_same_splits_and_the_training_seed_does_not_move_them(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(50, 3)), y=np.arange(50) % 2)
    base = ["data=numpy", f"data.path={tmp_path / 'd.npz'}"]
    a = build_data(compose(base + ["trainer.seed=1"]).data)
    b = build_data(compose(base + ["trainer.seed=2"]).data)
    c = build_data(compose(base + ["data.split_seed=3"]).data)
    assert a.indices == b.indices and a.indices != c.indices


def test_file_backed_normalization_matches_the_in_memory_path(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[[5.0], [-2.0]], scale=[[3.0], [0.5]], size=(300, 2, 10)).astype(np.float32)
    y = (x[:, 0, 0] > 5).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"] = x, y
    mem = load_data("numpy", path=str(tmp_path / "d.npz"))
    lazy = load_data("hdf5", path=str(tmp_path / "d.h5"), num_workers=0)
    assert mem.indices == lazy.indices  # same labels, same stratified carve
    assert np.allclose(mem.spec.mean, lazy.spec.mean, atol=1e-5) and np.allclose(mem.spec.std, lazy.spec.std, atol=1e-5)
    xb, _ = lazy.test[list(range(len(lazy.test)))]
    assert torch.allclose(xb, mem.test.x, atol=1e-5)


def test_normalize_can_take_a_runs_statistics_for_data_on_another_grid():
    x, y = torch.randn(40, 2, 16) * 3 + 1, torch.randn(40, 1, 16) * 5 - 2
    spec = DataSpec(input_shape=(2, 16), task="regression", target_shape=(1, 16))
    run = DataSpec(
        input_shape=(2, 8),
        task="regression",
        target_shape=(1, 8),
        mean=[1.0, 2.0],
        std=[3.0, 4.0],
        target_mean=[-2.0],
        target_std=[5.0],
    )
    splits = normalize(Splits(train=TensorData(x, y), spec=spec), stats_from=run)
    assert splits.spec.mean == [1.0, 2.0] and splits.spec.target_std == [5.0] and splits.spec.input_shape == (2, 16)
    assert torch.allclose(splits.train.x[:, 1], (x[:, 1] - 2.0) / 4.0) and torch.allclose(
        splits.train.y, (y + 2.0) / 5.0
    )
    # Statistics for another number of channels do not apply: the data's own are computed.
    other = DataSpec(input_shape=(3, 8), task="regression", target_shape=(1, 8), mean=[0.0] * 3, std=[1.0] * 3)
    own = normalize(Splits(train=TensorData(x, y), spec=spec), stats_from=other)
    assert own.spec.mean != [0.0, 0.0] and abs(own.train.x[:, 0].mean()) < 1e-5


# Splits in time (contract C2): a source with times carves train, then validation, then test,
# with `gap` samples left out at each border.


def _timed(times, gap=0, test=None, test_times=None):
    """Regression samples numbered 0..n-1 (x holds the number) at the given target times."""
    n = len(times)
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    spec = DataSpec(input_shape=(1,), task="regression", target_shape=(1,))
    splits = Splits(train=TensorData(x, x.clone()), spec=spec, test=test, gap=gap)
    splits.times = {"train": times} | ({"test": test_times} if test_times is not None else {})
    return splits


def _months_360(start="2000-01-01", n=72):
    import xarray as xr

    return xr.date_range(start, periods=n, freq="MS", calendar="360_day", use_cftime=True)


def _check_held(out):
    """Every split's rows are the samples it holds, and its times are those samples' times."""
    for name in ("train", "val", "test"):
        data = getattr(out, name)
        if data is not None and name in out.indices:
            assert data.x[:, 0].long().tolist() == out.indices[name]
            assert len(out.times[name]) == len(data)


def test_time_indexed_data_splits_in_time_with_a_gap_at_each_border():
    times = pd.date_range("1870-01-01", periods=100, freq="MS")
    out = carve(_timed(times, gap=3), test_fraction=0.2, val_fraction=0.1, seed=0, stratify=True)
    rows = {k: out.indices[k] for k in ("train", "val", "test")}
    assert (
        rows["test"] == list(range(80, 100)) and rows["val"] == list(range(67, 77)) and rows["train"] == list(range(64))
    )
    # No sample within `gap` of another split's: max(train) + gap < min(val), max(val) + gap < min(test).
    assert max(rows["train"]) + 3 < min(rows["val"]) and max(rows["val"]) + 3 < min(rows["test"])
    _check_held(out)
    assert out.times["test"][0] == pd.Timestamp("1876-09-01") and out.times["train"][-1] == pd.Timestamp("1875-04-01")
    assert out.notes == [
        (
            "split in time: train 1870-01-01..1875-04-01 (64), gap 3, val 1875-08-01..1876-05-01 (10), gap 3, "
            "test 1876-09-01..1878-04-01 (20); 3 sample(s) left out at each border so that no split holds "
            "another's inputs or targets"
        )
    ]
    assert out.record()["periods"] == {
        "train": ["1870-01-01", "1875-04-01"],
        "val": ["1875-08-01", "1876-05-01"],
        "test": ["1876-09-01", "1878-04-01"],
    }
    # A test file from the source stays; validation comes from the end of train.
    given = TensorData(torch.zeros(5, 1), torch.zeros(5, 1))
    out = carve(
        _timed(times, gap=2, test=given, test_times=pd.date_range("1990-01-01", periods=5, freq="MS")),
        0.2,
        0.1,
        0,
        True,
    )
    assert out.test is given and out.indices["val"] == list(range(90, 100)) and out.indices["train"] == list(range(88))
    assert "test 1990-01-01..1990-05-01 (5, data.test_path)" in out.notes[0] and len(out.times["val"]) == 10


def test_periods_in_a_360_day_calendar_choose_the_splits():
    times = _months_360()  # 2000-01 .. 2005-12, 30-day months
    periods = {"train": "2000-02-30:2003-12", "val": "2004:2004", "test": "2005-01-01:2005-12-30"}
    out = carve(_timed(times, gap=1), 0.2, 0.1, 0, True, periods=periods)
    _check_held(out)
    assert out.indices["test"] == list(range(60, 72)) and out.times["test"].calendar == "360_day"
    # Validation loses its last month to the gap before the test period; train its last before validation.
    assert out.indices["val"] == list(range(48, 59)) and out.indices["train"] == list(range(2, 47))
    assert out.record()["periods"]["train"] == ["2000-03-01", "2003-11-01"]
    # Only a test period: validation is carved from the latest samples before it, train gets the rest.
    out = carve(_timed(times, gap=1), 0.0, 0.1, 0, True, periods={"test": "2000:2000"})
    assert (
        out.indices["test"] == list(range(12))
        and out.indices["val"] == list(range(65, 72))
        and out.indices["train"] == list(range(13, 64))
    )


@pytest.mark.parametrize(
    "periods, split_by, match",
    [
        (
            {"test": "2050:2060"},
            "auto",
            r"data.test_period='2050:2060' holds no sample: the data runs from 2000-01-01 to 2005-12-01",
        ),
        ({"val": "2001-02-31:2002"}, "auto", r"'2001-02-31' is not a date of this data's calendar \(360_day\)"),
        ({"train": "2003:2001"}, "auto", "ends before it starts"),
        (
            {"train": "2000:2003", "val": "2003-06:2004"},
            "auto",
            "data.train_period=2000:2003 and data.val_period=2003-06:2004 overlap",
        ),
        ({"test": "2005:2005"}, "random", "splits in time, but data.split_by=random"),
        ({}, "sideways", "data.split_by='sideways' is not a valid choice"),
    ],
)
def test_bad_periods_are_one_line_errors(periods, split_by, match):
    with pytest.raises(ConfigError, match=match):
        carve(_timed(_months_360(), gap=1), 0.2, 0.1, 0, True, split_by=split_by, periods=periods)


def test_splits_in_time_need_times_and_a_given_test_split_takes_no_period():
    y = torch.arange(100) % 2
    with pytest.raises(ConfigError, match="data.split_by=time needs data with times"):
        carve(_splits(y), 0.2, 0.1, 0, True, split_by="time")
    with pytest.raises(ConfigError, match="data.test_period needs data with times"):
        carve(_splits(y), 0.2, 0.1, 0, True, periods={"test": "2000:2001"})
    given = TensorData(torch.zeros(5, 1), torch.zeros(5, 1))
    with pytest.raises(
        ConfigError, match="data.test_period carves the test split from data.path, but this source has its own"
    ):
        carve(
            _timed(_months_360(), test=given, test_times=_months_360("2010-01-01", 5)),
            0.2,
            0.1,
            0,
            True,
            periods={"test": "2005:2005"},
        )
    with pytest.raises(ConfigError, match="leave no train sample out of 72 once 30 sample"):
        carve(_timed(_months_360(), gap=30), 0.2, 0.1, 0, True)
    with pytest.raises(ConfigError, match="data.val_period='1990' is not a period; write START:END"):
        compose(["data.val_period=1990"])


def test_split_by_random_is_still_random_reproducible_and_keeps_the_times():
    times = pd.date_range("1870-01-01", periods=100, freq="MS")
    a = carve(_timed(times, gap=3), 0.2, 0.1, seed=0, stratify=True, split_by="random")
    b = carve(_timed(times, gap=3), 0.2, 0.1, seed=0, stratify=True, split_by="random")
    c = carve(_timed(times, gap=3), 0.2, 0.1, seed=1, stratify=True, split_by="random")
    assert a.indices == b.indices and a.indices != c.indices
    assert (len(a.train), len(a.val), len(a.test)) == (70, 10, 20)  # no gap left out
    assert a.indices["test"] != list(range(80, 100)) and min(a.indices["test"]) < max(a.indices["train"])
    _check_held(a)
    assert all(a.times[k].equals(times[a.indices[k]]) for k in ("train", "val", "test"))
    assert "split at random (data.split_by=random)" in a.notes[0]
    # Data without times keeps the random carve of before and says nothing about time.
    plain = carve(_splits(torch.arange(100) % 4), 0.2, 0.1, 0, True)
    assert plain.times is None and plain.notes == [] and plain.record() == plain.indices


def test_inputs_without_any_value_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 0)), y=np.arange(20) % 2)
    with pytest.raises(DataError, match=r"the inputs of data=numpy hold no value \(input shape \(0,\)\)"):
        load_data("numpy", path=str(tmp_path / "d.npz"))


def test_a_gridded_file_in_a_360_day_calendar_splits_by_the_periods_given(tmp_path):
    xr = pytest.importorskip("xarray")
    data = np.random.default_rng(0).normal(size=(72, 4, 5)).astype("f4")
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), data)},
        coords={"time": _months_360(), "lat": np.linspace(-30, 30, 4), "lon": np.arange(5.0)},
    )
    ds.to_netcdf(tmp_path / "m360.nc")
    options = {"path": str(tmp_path / "m360.nc"), "variables": ["tas"], "lead": 1, "num_workers": 0}
    s = load_data(
        "gridded",
        **options,
        train_period="2000-02-30:2003-12",
        val_period="2004-01:2004-12",
        test_period="2005-01-01:2005-12-30",
    )
    # Times are the targets' (lead 1); 2 samples (lead + 1) are left out before each later split.
    assert s.record()["periods"] == {
        "train": ["2000-03-01", "2003-10-01"],
        "val": ["2004-01-01", "2004-10-01"],
        "test": ["2005-01-01", "2005-12-01"],
    }
    assert s.times["test"].calendar == "360_day" and [len(s.times[k]) for k in ("train", "val", "test")] == [
        len(s.train),
        len(s.val),
        len(s.test),
    ]
    with pytest.raises(
        ConfigError, match="data.test_period='2010:2011' holds no sample: the data runs from 2000-02-01 to 2005-12-01"
    ):
        load_data("gridded", **options, test_period="2010:2011")
