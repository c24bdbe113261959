"""data=gridded: NetCDF files and a Zarr store the tests write with xarray."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from data_support import cli_train

from ember import load_data
from ember.data import EpochLoader
from ember.data.lazy import LazyDataset
from ember.errors import ConfigError, DataError


def _dataset(t=60, lat=4, lon=8, seed=0, start="2000-01-01"):
    rng = np.random.default_rng(seed)
    t2m = 280 + 5 * rng.normal(size=(t, lat, lon))
    z500 = 5500 + 50 * rng.normal(size=(t, lat, lon))
    coords = {
        "time": pd.date_range(start, periods=t, freq="D"),
        "lat": np.linspace(-30, 30, lat),
        "lon": np.linspace(0, 315, lon),
    }
    dims = ("time", "lat", "lon")
    return xr.Dataset(
        {
            "t2m": (dims, t2m.astype(np.float32)),
            "z500": (dims, z500.astype(np.float32)),
            "precip": (dims, (0.1 * t2m - 0.001 * z500).astype(np.float32)),
            "elevation": (("lat", "lon"), rng.normal(size=(lat, lon)).astype(np.float32)),
        },
        coords=coords,
    )


def _nc(ds, path):
    ds.to_netcdf(path, engine="h5netcdf")
    return str(path)


def test_variables_become_channels_and_the_target_is_read_lazily(tmp_path):
    ds = _dataset()
    path = _nc(ds, tmp_path / "era.nc")
    splits = load_data("gridded", path=path, variables=["t2m", "z500"], target="precip", num_workers=0)
    assert isinstance(splits.train, LazyDataset)
    assert (
        splits.spec.input_shape == (2, 4, 8)
        and splits.spec.target_shape == (1, 4, 8)
        and splits.spec.task == "regression"
    )
    # chronological, gaps at the borders
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60 - 2 * splits.gap
    rows = np.array(splits.indices["train"])
    raw = np.stack([ds.t2m.values[rows], ds.z500.values[rows]], axis=1)
    assert np.allclose(splits.spec.mean, raw.mean(axis=(0, 2, 3)), rtol=1e-5)
    x, y = next(iter(EpochLoader(splits.train, 8, shuffle=False)))
    assert x.shape == (8, 2, 4, 8) and y.shape == (8, 1, 4, 8)
    assert abs(x.mean().item()) < 1.0  # normalized
    # Targets standardized with the train split's statistics; the spec keeps them for the way back.
    train_precip = ds.precip.values[rows]
    assert np.allclose(splits.spec.target_mean, [train_precip.mean()], rtol=1e-5) and np.allclose(
        splits.spec.target_std, [train_precip.std(ddof=1)], rtol=1e-4
    )
    back = y[:, 0] * splits.spec.target_std[0] + splits.spec.target_mean[0]
    assert torch.allclose(back, torch.from_numpy(train_precip[:8]), atol=1e-4)
    assert (
        splits.spec.target_names == ["precip"] and splits.spec.identity_channels is None and len(splits.spec.lat) == 4
    )


def test_forecasting_with_a_lead_and_a_zarr_store(tmp_path):
    ds = _dataset(t=30)
    ds.to_zarr(tmp_path / "era.zarr", consolidated=False)
    splits = load_data(
        "gridded",
        path=str(tmp_path / "era.zarr"),
        variables=["t2m"],
        lead=3,
        normalize=False,
        normalize_target=False,
        val_fraction=0,
        test_fraction=0,
        num_workers=0,
    )
    assert len(splits.train) == 27 and splits.spec.target_shape == (1, 4, 8)
    x, y = splits.train[[0, 5]]
    assert torch.equal(x[:, 0], torch.from_numpy(ds.t2m.values[[0, 5]]))
    assert torch.equal(y[:, 0], torch.from_numpy(ds.t2m.values[[3, 8]]))  # the same field 3 steps later


def test_paired_datasets_are_matched_on_time(tmp_path):
    model = _dataset(t=40, seed=1)
    obs = _dataset(t=40, seed=2, start="2000-01-11")  # overlaps days 10..39 of the model run
    splits = load_data(
        "gridded",
        path=_nc(model, tmp_path / "model.nc"),
        target_path=_nc(obs, tmp_path / "obs.nc"),
        variables=["t2m"],
        normalize=False,
        normalize_target=False,
        val_fraction=0,
        test_fraction=0,
        num_workers=0,
    )
    assert len(splits.train) == 30
    x, y = splits.train[[0]]
    assert torch.equal(x[0, 0], torch.from_numpy(model.t2m.values[10]))  # 2000-01-11 in both
    assert torch.equal(y[0, 0], torch.from_numpy(obs.t2m.values[0]))


def test_gridded_bad_inputs(tmp_path):
    ds = _dataset(t=20)
    path = _nc(ds, tmp_path / "era.nc")
    with pytest.raises(
        DataError,
        match=(
            r"no variable 't2' in .*era.nc; did you mean 't2m'\? set data.variables to variables of the dataset: t2m, "
            r"z500, precip, elevation"
        ),
    ):
        load_data("gridded", path=path, variables=["t2"], target="precip")
    with pytest.raises(DataError, match="variable 'elevation' of .* has no 'time' dimension"):
        load_data("gridded", path=path, variables=["t2m", "elevation"], target="precip")
    mixed = ds.assign(coarse=(("time", "y", "x"), np.zeros((20, 2, 4), dtype=np.float32)))
    with pytest.raises(DataError, match=r"lie on different grids: t2m \(lat=4, lon=8\); coarse \(y=2, x=4\)"):
        load_data("gridded", path=_nc(mixed, tmp_path / "mixed.nc"), variables=["t2m", "coarse"], target="precip")
    with pytest.raises(ConfigError, match="data=gridded needs data.target"):
        load_data("gridded", path=path, variables=["t2m"])
    later = _dataset(t=20, start="2010-01-01")
    with pytest.raises(DataError, match="share no time value"):
        load_data("gridded", path=path, target_path=_nc(later, tmp_path / "later.nc"), variables=["t2m"])
    shorter = _dataset(t=15).drop_vars("time")
    with pytest.raises(DataError, match="has 20 time steps but .*shorter.nc has 15"):
        load_data(
            "gridded",
            path=_nc(ds.drop_vars("time"), tmp_path / "notime.nc"),
            target_path=_nc(shorter, tmp_path / "shorter.nc"),
            variables=["t2m"],
        )

    # NaN at a point is a mask (test_cf.py); an infinity is bad data, and a sample with no value
    # at all cannot be filled: refused, dropped with data.nan=drop.
    bad = ds.copy(deep=True)
    bad["t2m"][3, 0, 0] = np.inf
    bad["t2m"][5] = np.nan
    bpath = _nc(bad, tmp_path / "bad.nc")
    with pytest.raises(
        DataError,
        match=(
            r"bad.nc holds infinite values, or samples with no finite value \(33 in inputs\); "
            r"the first is in the inputs at sample 3, index \(0, 0, 0\); "
            r"fix the data .* or set data.nan=drop to drop the 2 samples"
        ),
    ):
        load_data("gridded", path=bpath, variables=["t2m"], target="precip")
    dropped = load_data(
        "gridded",
        path=bpath,
        variables=["t2m"],
        target="precip",
        nan="drop",
        val_fraction=0,
        test_fraction=0,
        num_workers=0,
    )
    assert len(dropped.train) == 18 and 3 not in dropped.indices["train"] and 5 not in dropped.indices["train"]
    filled = load_data(
        "gridded",
        path=bpath,
        variables=["t2m"],
        target="precip",
        fill_value=0.0,
        nan="drop",
        normalize=False,
        num_workers=0,
        val_fraction=0,
        test_fraction=0,
    )
    # the NaN sample filled, the inf one dropped
    assert filled.train[[0]][0][0, 0, 0, 0] == ds.t2m.values[0, 0, 0] and len(filled.train) == 19
    # Where every sample is bad, data.nan=drop would drop them all: it is not offered.
    empty = ds.copy(deep=True)
    empty["t2m"][:] = np.nan
    with pytest.raises(
        DataError, match=r"every sample of .*empty.nc holds .*data.nan=drop would drop them all: fix the data"
    ) as e:
        load_data("gridded", path=_nc(empty, tmp_path / "empty.nc"), variables=["t2m"], target="precip")
    assert "set data.nan=drop" not in str(e.value)

    with open(path, "rb") as f:
        data = f.read()
    with open(tmp_path / "cut.nc", "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(DataError, match="cannot open .*cut.nc with xarray"):
        load_data("gridded", path=str(tmp_path / "cut.nc"), variables=["t2m"], target="precip")


def test_cli_trains_on_netcdf_through_dataloader_workers(ember_cli, tmp_path):
    path = _nc(_dataset(t=40), tmp_path / "era.nc")
    r = cli_train(
        ember_cli,
        "data=gridded",
        f"data.path={path}",
        "data.variables=[t2m,z500]",
        "data.target=precip",
        "data.num_workers=1",
        "model=mlp",
        "model.width=32",
        "trainer.max_epochs=2",
    )
    assert r.returncode == 0, r.stderr
    assert "r2" in r.stdout
