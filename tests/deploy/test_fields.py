"""ember predict on NetCDF and Zarr: the run's variables, masks and normalization in, the
predicted fields out on the input's coordinates, calendar and attributes, chunk by chunk."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import ember
from ember.data.spec import DataSpec
from ember.deploy.common import Deployed
from ember.deploy.fields import predict_fields
from ember.deploy.predict import Predictor
from ember.errors import DataError

NY, NX = 6, 8
LAND = np.zeros((NY, NX), bool)
LAND[:2, :3] = True


def write_sst(path, nt=30, start="2000-01-01", seed=0):
    """A monthly sea-surface temperature on a 360-day calendar, land NaN, with CF bounds."""
    rng = np.random.default_rng(seed)
    time = xr.date_range(start, periods=nt, freq="MS", calendar="360_day", use_cftime=True)
    lat, lon = np.linspace(-30, 30, NY), np.linspace(0, 350, NX)
    sst = 290 + 5 * np.cos(np.deg2rad(lat))[None, :, None] + rng.normal(0, 1, (nt, NY, NX))
    sst[:, LAND] = np.nan
    ds = xr.Dataset(
        {
            "sst": (
                ("time", "lat", "lon"),
                sst.astype("float32"),
                {"units": "K", "long_name": "sea surface temperature", "standard_name": "sea_surface_temperature"},
            ),
            "time_bnds": (("time", "bnds"), np.zeros((nt, 2))),
        },
        coords={
            "time": time,
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
        attrs={"title": "OSTIA-like test field", "history": "2026-01-01: made by the tests"},
    )
    ds.time.encoding.update(units="days since 1990-01-01", calendar="360_day")
    ds.to_netcdf(path, unlimited_dims=["time"])
    return path


@pytest.fixture
def predictor():
    torch.manual_seed(0)
    flat = np.flatnonzero(LAND).tolist()
    spec = DataSpec(
        input_shape=(1, NY, NX),
        task="regression",
        target_shape=(1, NY, NX),
        mean=[293.0],
        std=[2.0],
        target_mean=[293.0],
        target_std=[2.0],
        input_names=["sst"],
        target_names=["sst"],
        target_units=["K"],
        mask=flat,
        input_mask=flat,
        calendar="360_day",
    )
    return Predictor(
        Deployed(nn.Conv2d(1, 1, 3, padding=1), spec).eval(),
        spec,
        {"name": "gridded", "variables": ["sst"]},
        "runs/sst/20260101-000000",
    )


def _quiet(_):
    pass


def test_netcdf_round_trip_keeps_coordinates_calendar_attributes_and_land(predictor, tmp_path):
    src = write_sst(tmp_path / "new.nc")
    out = predict_fields(predictor, src, tmp_path / "corrected.nc", batch_size=4, chunk=7, echo=_quiet)
    raw_in, raw_out = (
        xr.open_dataset(src, decode_times=False),
        xr.open_dataset(tmp_path / "corrected.nc", decode_times=False),
    )
    # Time as stored: the same numbers, units and calendar.
    np.testing.assert_array_equal(raw_out.time.values, raw_in.time.values)
    assert raw_out.time.attrs["calendar"] == "360_day" and raw_out.time.attrs["units"] == raw_in.time.attrs["units"]
    # Time decoded: the same 360-day dates.
    inp = xr.open_dataset(src)
    assert isinstance(out.indexes["time"], xr.CFTimeIndex) and out.indexes["time"].calendar == "360_day"
    assert list(out.indexes["time"]) == list(inp.indexes["time"])
    for c in ("lat", "lon"):
        np.testing.assert_array_equal(out[c].values, inp[c].values)
        assert out[c].attrs == inp[c].attrs
    # The field on its grid, with the input variable's attributes, NaN exactly on land.
    assert out.sst.dims == ("time", "lat", "lon") and out.sst.shape == (30, NY, NX)
    assert {k: out.sst.attrs[k] for k in ("units", "long_name", "standard_name")} == {
        k: inp.sst.attrs[k] for k in ("units", "long_name", "standard_name")
    }
    values = out.sst.values
    assert np.isnan(values[:, LAND]).all() and np.isfinite(values[:, ~LAND]).all()
    assert out.attrs["title"] == inp.attrs["title"]
    first, second = out.attrs["history"].split("\n")
    assert "ember" in first and "predict run=runs/sst/20260101-000000" in first and second == inp.attrs["history"]
    assert "time_bnds" not in out  # the predicted variables only
    # The numbers are the model's on the input, land filled with the mean as in training.
    x = torch.from_numpy(np.nan_to_num(inp.sst.values, nan=293.0)[:, None])
    with torch.no_grad():
        want = predictor.run(x)[:, 0].numpy()
    np.testing.assert_allclose(values[:, ~LAND], want[:, ~LAND], rtol=1e-6)


def test_chunks_bound_each_step_and_change_nothing(predictor, tmp_path):
    src = write_sst(tmp_path / "new.nc", nt=23)
    sizes = []
    inner = predictor.run
    predictor.run = lambda x: (sizes.append(len(x)), inner(x))[1]
    chunked = predict_fields(predictor, src, tmp_path / "chunked.nc", batch_size=1000, chunk=5, echo=_quiet)
    assert max(sizes) == 5 and sum(sizes) == 23  # the model saw one chunk at a time, every step once
    sizes.clear()
    whole = predict_fields(predictor, src, tmp_path / "whole.zarr", batch_size=1000, chunk=None, echo=_quiet)
    assert sizes == [23]
    xr.testing.assert_allclose(chunked.sst, whole.sst)
    assert whole.indexes["time"].calendar == "360_day"


def test_zarr_in_and_a_glob_of_yearly_files_in(predictor, tmp_path):
    src = write_sst(tmp_path / "all.nc", nt=24)
    want = predict_fields(predictor, src, None, batch_size=8, chunk=None, echo=_quiet)
    assert isinstance(want, xr.Dataset)  # lazily: predicted as it is read
    xr.open_dataset(src).to_zarr(tmp_path / "all.zarr", zarr_format=2)
    from_zarr = predict_fields(predictor, tmp_path / "all.zarr", tmp_path / "z.nc", batch_size=8, chunk=5, echo=_quiet)
    write_sst(tmp_path / "y2000.nc", nt=12)
    write_sst(tmp_path / "y2001.nc", nt=12, start="2001-01-01", seed=1)
    years = predict_fields(predictor, str(tmp_path / "y*.nc"), tmp_path / "y.nc", batch_size=8, chunk=5, echo=_quiet)
    xr.testing.assert_allclose(from_zarr.sst, want.sst.compute())
    assert years.sizes["time"] == 24 and str(years.time.values[12]) == "2001-01-01 00:00:00"


def test_a_file_without_the_runs_variable_or_grid_is_one_line(predictor, tmp_path):
    src = write_sst(tmp_path / "new.nc")
    xr.open_dataset(src).rename({"sst": "tos"}).to_netcdf(tmp_path / "renamed.nc")
    with pytest.raises(
        DataError, match=r"the input lacks variable\(s\) 'sst' the run was trained on; it holds: tos, time_bnds"
    ):
        predict_fields(predictor, tmp_path / "renamed.nc", None, batch_size=8, chunk=None, echo=_quiet)
    xr.open_dataset(src).isel(lat=slice(0, 4)).to_netcdf(tmp_path / "small.nc")
    with pytest.raises(
        DataError,
        match=(
            r"variable 'sst' lies on a grid \{'time': 30, 'lat': 4, 'lon': "
            r"8\} but the run was trained on fields of shape \(6, 8\)"
        ),
    ):
        predict_fields(predictor, tmp_path / "small.nc", None, batch_size=8, chunk=None, echo=_quiet)


def test_cli_with_a_trained_run_and_its_onnx_export(sst_run, tmp_path, capsys):
    import json

    from ember.cli import main
    from ember.deploy.export import export_run

    run_dir, src = sst_run
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["calendar"] == "360_day" and spec["mask"] == np.flatnonzero(LAND).tolist()
    assert main(["predict", f"run={run_dir}", f"input={src}", f"output={tmp_path / 'p.nc'}", "chunk=9"]) == 0
    assert "wrote 40 time steps of sst to" in capsys.readouterr().out
    onnx = export_run(run_dir, "onnx", out=tmp_path / "m.onnx", echo=_quiet)
    assert main(["predict", f"run={onnx.path}", f"input={src}", f"output={tmp_path / 'o.zarr'}"]) == 0
    a, b = xr.open_dataset(tmp_path / "p.nc"), xr.open_dataset(tmp_path / "o.zarr", engine="zarr")
    assert (
        a.sst.shape == (40, NY, NX)
        and np.isnan(a.sst.values[:, LAND]).all()
        and np.isfinite(a.sst.values[:, ~LAND]).all()
    )
    xr.testing.assert_allclose(a.sst, b.sst, atol=1e-4)
    # A forecast one month ahead is stamped with its valid time; the input's time is its reference.
    inp = xr.open_dataset(src)
    assert list(a.forecast_reference_time.values) == list(inp.time.values) == list(b.forecast_reference_time.values)
    assert str(a.time.values[0]) == "2000-02-01 00:00:00" and str(a.time.values[-1]) == "2003-05-01 00:00:00"
    assert (
        a.indexes["time"].calendar == "360_day"
        and a.forecast_reference_time.attrs["standard_name"] == "forecast_reference_time"
    )
    assert main(["predict", f"run={run_dir}", f"input={src}"]) == 2
    assert "add output=predicted.nc" in capsys.readouterr().err
    # The same fields as an array, land NaN included: accepted from a gridded run, NaN back on land.
    np.save(tmp_path / "x.npy", inp.sst.values[:, None])
    arr = ember.predict(run_dir, tmp_path / "x.npy", echo=_quiet)
    np.testing.assert_allclose(arr.values.reshape(40, NY, NX), a.sst.values, atol=1e-5, equal_nan=True)
    assert np.isnan(arr.values.reshape(40, NY, NX)[:, LAND]).all()


def test_level_channels_and_the_runs_region(tmp_path):
    """A run on t at 500 and 850 hPa over lat -10..30 predicts a global file with three levels:
    the region and levels cut as in training, the levels back on the file's plev axis."""
    rng = np.random.default_rng(0)
    time = xr.date_range("2000-01-01", periods=10, freq="D", calendar="noleap", use_cftime=True)
    lat, plev = np.linspace(-30, 30, NY), np.array([1000.0, 850.0, 500.0])
    t = rng.normal(250, 10, (10, 3, NY, NX)).astype("float32")
    xr.Dataset(
        {"t": (("time", "plev", "lat", "lon"), t, {"units": "K", "standard_name": "air_temperature"})},
        coords={
            "time": time,
            "plev": ("plev", plev, {"units": "hPa", "axis": "Z"}),
            "lat": lat,
            "lon": np.arange(NX) * 45.0,
        },
    ).to_netcdf(tmp_path / "t.nc")
    rows = (lat >= -10) & (lat <= 30)
    names = ["t@500", "t@850"]
    spec = DataSpec(
        input_shape=(2, int(rows.sum()), NX),
        task="regression",
        target_shape=(2, int(rows.sum()), NX),
        input_names=names,
        target_names=names,
    )
    torch.manual_seed(0)
    model = Deployed(nn.Conv2d(2, 2, 1), spec).eval()
    data = {"name": "gridded", "lat": "-10:30", "level": [500, 850]}
    out = predict_fields(
        Predictor(model, spec, data, "runs/t"), tmp_path / "t.nc", tmp_path / "p.nc", batch_size=4, chunk=3, echo=_quiet
    )
    assert (
        out.t.dims == ("time", "plev", "lat", "lon")
        and list(out.plev.values) == [500.0, 850.0]
        and out.plev.attrs["units"] == "hPa"
    )
    np.testing.assert_array_equal(out.lat.values, lat[rows])
    assert out.t.attrs["standard_name"] == "air_temperature" and out.indexes["time"].calendar == "noleap"
    x = torch.from_numpy(t[:, [2, 1]][:, :, rows])
    with torch.no_grad():
        np.testing.assert_allclose(out.t.values, model(x).numpy(), rtol=1e-6)


def test_a_region_across_the_files_longitude_seam(tmp_path):
    """A run over lon -90..45 (data.lon=-90:45) predicts a 0..315 file: the region is read as two
    pieces, predicted as the one grid training saw and written on its continuous longitudes."""
    rng = np.random.default_rng(0)
    time = xr.date_range("2000-01-01", periods=6, freq="D", calendar="noleap", use_cftime=True)
    t = rng.normal(250, 10, (6, NY, NX)).astype("float32")
    xr.Dataset(
        {"t": (("time", "lat", "lon"), t, {"units": "K"})},
        coords={"time": time, "lat": np.linspace(-30, 30, NY), "lon": np.arange(NX) * 45.0},
    ).to_netcdf(tmp_path / "t.nc")
    spec = DataSpec(
        input_shape=(1, NY, 4), task="regression", target_shape=(1, NY, 4), input_names=["t"], target_names=["t"]
    )
    torch.manual_seed(0)
    model = Deployed(nn.Conv2d(1, 1, 3, padding=1), spec).eval()
    out = predict_fields(
        Predictor(model, spec, {"name": "gridded", "lon": "-90:45"}, "runs/t"),
        tmp_path / "t.nc",
        tmp_path / "p.nc",
        batch_size=4,
        chunk=2,
        echo=_quiet,
    )
    np.testing.assert_array_equal(out.lon.values, [-90.0, -45.0, 0.0, 45.0])
    with torch.no_grad():
        np.testing.assert_allclose(
            out.t.values, model(torch.from_numpy(t[:, None][..., [6, 7, 0, 1]])).numpy()[:, 0], rtol=1e-6
        )


def test_curvilinear_coordinates_pass_through(predictor, tmp_path):
    """NEMO-style names: dimensions y, x and 2-D nav_lat, nav_lon come back as they were."""
    src = xr.open_dataset(write_sst(tmp_path / "new.nc", nt=4)).rename({"lat": "y", "lon": "x"})
    nav_lat, nav_lon = np.meshgrid(src.y.values, src.x.values, indexing="ij")
    src = src.drop_vars(["y", "x"]).assign_coords(
        nav_lat=(("y", "x"), nav_lat, {"standard_name": "latitude"}), nav_lon=(("y", "x"), nav_lon)
    )
    src.to_netcdf(tmp_path / "nemo.nc")
    out = predict_fields(predictor, tmp_path / "nemo.nc", tmp_path / "p.nc", batch_size=4, chunk=2, echo=_quiet)
    assert out.sst.dims == ("time", "y", "x") and set(out.sst.coords) == {"time", "nav_lat", "nav_lon"}
    np.testing.assert_array_equal(out.nav_lat.values, nav_lat)
    assert out.nav_lat.attrs["standard_name"] == "latitude" and np.isnan(out.sst.values[:, LAND]).all()
