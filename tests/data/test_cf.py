"""data=gridded on CF files as they come: bounds variables, a 360-day calendar, packed values
with _FillValue, land NaN, yearly files, renamed coordinates, vertical levels, subsets."""

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from data_support import fit

from ember import load_data
from ember.errors import ConfigError, DataError

YEARS = (2000, 2001, 2002)
LAT = np.array([20.0, 10.0, 0.0, -10.0, -20.0])  # north first, as many reanalyses
LON = np.arange(0.0, 360.0, 60.0)
LAND = [(0, 0), (0, 1), (2, 3)]  # (lat, lon) points that are land: NaN at every time


def sst_dataset(calendar="360_day", seed=0) -> xr.Dataset:
    """Monthly SST on a 5 x 6 grid, 3 years, with CF bounds and land NaN; one observation gap."""
    rng = np.random.default_rng(seed)
    time = xr.date_range("2000-01-01", periods=36, freq="MS", calendar=calendar, use_cftime=True)
    sst = 285 + 5 * np.cos(np.deg2rad(LAT))[None, :, None] + rng.normal(size=(36, 5, 6))
    for i, j in LAND:
        sst[:, i, j] = np.nan
    sst[7, 4, 5] = np.nan  # a gap: missing at one time only
    ds = xr.Dataset(
        {
            "sst": (
                ("time", "latitude", "longitude"),
                sst.astype(np.float32),
                {"units": "K", "standard_name": "sea_surface_temperature"},
            ),
            "time_bnds": (("time", "bnds"), np.stack([np.arange(36) * 30.0, np.arange(1, 37) * 30.0], axis=1)),
            "lat_bnds": (("latitude", "bnds"), np.stack([LAT + 5, LAT - 5], axis=1)),
            "forecast_reference_time_bnds": (("time", "bnds"), np.zeros((36, 2))),
            "nino34": (("time",), rng.normal(size=36)),  # a series, not a field on the grid
            "sftlf": (("latitude", "longitude"), np.isnan(sst[0]).astype(np.float32)),  # a fixed land fraction
        },
        coords={
            "time": time,
            "latitude": ("latitude", LAT, {"units": "degrees_north"}),
            "longitude": ("longitude", LON, {"units": "degrees_east"}),
        },
    )
    ds["time"].attrs["bounds"] = "time_bnds"
    ds["time"].encoding["units"] = "days since 2000-01-01"  # one unit for time and time_bnds, as CF asks
    ds["latitude"].attrs["bounds"] = "lat_bnds"
    return ds


def write_years(ds: xr.Dataset, folder, prefix="sst") -> list[str]:
    """One file per year, SST packed as int16 with scale_factor/add_offset/_FillValue as CF files are."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    encoding = {
        "sst": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32767},
        "time": {"units": "days since 2000-01-01", "calendar": ds.time.dt.calendar},
    }
    for year in YEARS:
        path = folder / f"{prefix}_{year}.nc"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # xarray's note on time_bnds units: set above
            ds.sel(time=str(year)).to_netcdf(path, encoding=encoding)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def years(tmp_path_factory):
    """The packed yearly files of sst_dataset() and the dataset as the files decode it."""
    folder = tmp_path_factory.mktemp("cf") / "sst"
    paths = write_years(sst_dataset(), folder)
    decoded = xr.open_mfdataset(paths, data_vars="minimal", coords="minimal", compat="override").load()
    return folder, paths, decoded


def load(path, **options):
    return load_data("gridded", path=path, num_workers=0, **options)


def test_a_folder_of_yearly_cf_files_is_one_dataset_with_its_calendar_and_bounds_skipped(years):
    folder, paths, decoded = years
    splits = load(str(folder), lead=1, val_fraction=0, test_fraction=0, normalize=False, normalize_target=False)
    spec = splits.spec
    assert spec.input_names == ["sst"] and spec.target_names == ["sst"] and spec.input_shape == (1, 5, 6)
    assert spec.calendar == "360_day" and spec.time_units.startswith("days since 2000-01-01")
    assert spec.lat == LAT.tolist() and spec.lon == LON.tolist() and spec.target_units == ["K"]
    # Bounds variables were skipped, and the run says so once.
    notes = [n for n in splits.notes if "skipped" in n]
    # time_bnds and lat_bnds are coordinates once decoded (their `bounds` attributes); the bounds
    # variable nothing names is known by its bnds dimension.
    assert len(notes) == 1 and notes[0].endswith(
        "skipped forecast_reference_time_bnds (bounds), nino34 (not a field), sftlf (no time)"
    )
    # 36 months, lead 1: 35 samples; times are the targets' own, in the 360-day calendar.
    assert len(splits.train) == 35 and isinstance(splits.times["train"], xr.CFTimeIndex)
    assert splits.times["train"][0].month == 2 and splits.times["train"].calendar == "360_day" and splits.gap == 2
    # Values decoded by xarray (scale_factor, add_offset, _FillValue -> NaN), nothing around it.
    _, y = splits.train[[0, 30]]
    assert np.allclose(y[:, 0].numpy(), decoded.sst.values[[1, 31]], equal_nan=True, atol=1e-4)
    assert abs(float(np.nanmean(decoded.sst.values)) - 289.8) < 0.5  # unpacked: kelvin, not int16 counts
    # The same through a glob and a list of files.
    assert len(load(str(folder / "sst_*.nc"), lead=1, val_fraction=0, test_fraction=0).train) == 35
    assert len(load(paths[:2], lead=1, val_fraction=0, test_fraction=0).train) == 23


def test_land_is_a_mask_out_of_the_statistics_and_filled_in_the_inputs(years):
    folder, _, decoded = years
    splits = load(str(folder), lead=1, val_fraction=0, test_fraction=0)
    spec = splits.spec
    land = sorted(i * 6 + j for i, j in LAND)
    assert spec.mask == land and spec.input_mask == land
    assert any(
        n.startswith("masks: grid points NaN at every time, of 30 per variable: ") and " 3 in the targets" in n
        for n in splits.notes
    )
    assert any(n.startswith("1 target value missing at some times only") for n in splits.notes)
    # Statistics over the ocean only: numpy's nanmean and nanstd (unbiased, like the in-memory path).
    inputs, targets = decoded.sst.values[:35], decoded.sst.values[1:]
    assert np.allclose(spec.mean, [np.nanmean(inputs)], rtol=1e-6) and np.allclose(
        spec.std, [np.nanstd(inputs, ddof=1)], rtol=1e-5
    )
    assert np.allclose(spec.target_mean, [np.nanmean(targets)], rtol=1e-6) and np.allclose(
        spec.target_std, [np.nanstd(targets, ddof=1)], rtol=1e-5
    )
    x, y = splits.train[list(range(35))]
    assert torch.isfinite(x).all() and (x[:, 0, 0, 0] == 0).all()  # the standardized mean on land
    assert torch.isnan(y[:, 0, 0, 0]).all() and torch.isnan(y[6, 0, 4, 5]) and torch.isfinite(y).sum() == 35 * 27 - 1
    # data.mask_channel: the input mask as one more channel, 1 on land, left unstandardized.
    with_mask = load(str(folder), lead=1, val_fraction=0, test_fraction=0, mask_channel=True)
    assert (
        with_mask.spec.input_shape == (2, 5, 6)
        and with_mask.spec.mask_channel
        and with_mask.spec.input_names == ["sst", "mask"]
    )
    xm, _ = with_mask.train[[0, 1]]
    expected = np.zeros((5, 6), dtype=np.float32)
    for i, j in LAND:
        expected[i, j] = 1
    assert (
        torch.equal(xm[:, 1], torch.from_numpy(expected).expand(2, 5, 6))
        and with_mask.spec.mean[1] == 0
        and with_mask.spec.std[1] == 1
    )


def test_time_and_region_subsets_before_any_read(years):
    folder, _, decoded = years
    splits = load(
        str(folder),
        lead=1,
        time="2001-01-01:2001-12-30",
        lat="-15:15",
        lon="0:130",
        val_fraction=0,
        test_fraction=0,
        normalize=False,
        normalize_target=False,
    )
    # The 360-day calendar has a 30 December; the descending latitude is cut north to south.
    assert len(splits.train) == 11 and splits.spec.input_shape == (1, 3, 3) and splits.spec.lat == [10.0, 0.0, -10.0]
    _, y = splits.train[[0]]
    assert np.allclose(y[0, 0].numpy(), decoded.sst.values[13, 1:4, 0:3], equal_nan=True, atol=1e-4)
    with pytest.raises(
        DataError,
        match=(
            r"data.time=1979-01-01:1990-12-30 is outside .*sst_2000.nc \(and 2 more files\), "
            r"which covers 2000-01-01 to 2002-12-01; choose a period within it"
        ),
    ):
        load(str(folder), lead=1, time="1979-01-01:1990-12-30")
    with pytest.raises(DataError, match=r"data.lat=60:80 holds no point .*latitude runs from -20 to 20"):
        load(str(folder), lead=1, lat="60:80")
    with pytest.raises(ConfigError, match=r"data.time='2001' is not a range START:END"):
        load(str(folder), lead=1, time="2001")


def test_test_path_gives_a_test_split_with_its_times(years):
    _, paths, _ = years
    splits = load(paths[:2], test_path=paths[2], lead=1, val_fraction=0)
    assert len(splits.train) == 23 and len(splits.test) == 11
    assert splits.times["test"][0].year == 2002 and splits.times["train"][-1].year == 2001
    _, y = splits.test[[0]]
    assert torch.isnan(y[0, 0, 0, 0])  # the train mask holds in the test year too


def test_renamed_coordinates_nav_lat_and_levels_as_channels(tmp_path):
    rng = np.random.default_rng(1)
    time = xr.date_range("2000-01-01", periods=12, freq="MS", calendar="noleap", use_cftime=True)
    nav_lat = np.repeat(np.array([-10.0, 0.0, 10.0])[:, None], 4, axis=1)
    nav_lon = np.repeat(np.arange(4.0)[None, :], 3, axis=0)
    ds = xr.Dataset(
        {
            "thetao": (("time", "deptht", "y", "x"), rng.normal(size=(12, 3, 3, 4)).astype(np.float32)),
            "tos": (("time", "y", "x"), rng.normal(size=(12, 3, 4)).astype(np.float32)),
        },
        coords={
            "time": time,
            "deptht": ("deptht", [5.0, 50.0, 500.0], {"positive": "down"}),
            "nav_lat": (("y", "x"), nav_lat, {"standard_name": "latitude"}),
            "nav_lon": (("y", "x"), nav_lon, {"standard_name": "longitude"}),
        },
    )
    path = str(tmp_path / "nemo.nc")
    ds.to_netcdf(path)
    splits = load(path, target="tos", variables=["thetao"], val_fraction=0, test_fraction=0, normalize=False)
    assert splits.spec.input_shape == (3, 3, 4) and splits.spec.input_names == ["thetao@5", "thetao@50", "thetao@500"]
    assert splits.spec.lat == [-10.0, 0.0, 10.0] and splits.spec.calendar == "noleap"
    x, _ = splits.train[[2]]
    assert torch.equal(x[0], torch.from_numpy(ds.thetao.values[2]))
    picked = load(
        path, target="tos", variables=["thetao"], level=[500, 5], val_fraction=0, test_fraction=0, normalize=False
    )
    assert picked.spec.input_names == ["thetao@500", "thetao@5"] and torch.equal(
        picked.train[[2]][0][0, 0], torch.from_numpy(ds.thetao.values[2, 2])
    )
    with pytest.raises(
        DataError, match=r"data.level has 850, which is no deptht of .*nemo.nc; choose among: 5, 50, 500"
    ):
        load(path, target="tos", variables=["thetao"], level=[850])


def test_cf_mistakes_are_one_line_errors_naming_the_fix(tmp_path):
    model = sst_dataset(seed=3)
    obs_standard = sst_dataset(calendar="standard", seed=4)
    mpath, spath = str(tmp_path / "model.nc"), str(tmp_path / "obs_standard.nc")
    model.to_netcdf(mpath)
    obs_standard.to_netcdf(spath)
    with pytest.raises(
        DataError,
        match=(
            r"model.nc uses the 360_day calendar and .*obs_standard.nc the standard calendar, "
            r"so their times cannot be matched; convert one first, e.g. "
            r"xarray's ds.convert_calendar\('360_day', align_on='year'\)"
        ),
    ):
        load(mpath, target_path=spath, variables=["sst"])
    other_land = sst_dataset(seed=5)
    other_land["sst"][:, 4, 0] = np.nan  # a point that is land in the observations only
    opath = str(tmp_path / "obs.nc")
    other_land.to_netcdf(opath)
    with pytest.raises(
        DataError,
        match=(
            r"the masks of .*model.nc and .*obs.nc differ: 0 grid points are NaN at every time in the inputs only and "
            r"1 in the targets only .*mask both files alike"
        ),
    ):
        load(mpath, target_path=opath, variables=["sst"])
    # The same land in both: bias correction trains on the ocean.
    same = sst_dataset(seed=6)
    same.to_netcdf(tmp_path / "obs_same.nc")
    paired = load(mpath, target_path=str(tmp_path / "obs_same.nc"), variables=["sst"], val_fraction=0, test_fraction=0)
    assert len(paired.train) == 36 and len(paired.spec.mask) == 3
    notime = xr.Dataset({"sst": (("lat", "lon"), np.zeros((2, 3), dtype=np.float32))})
    notime.to_netcdf(tmp_path / "notime.nc")
    with pytest.raises(
        DataError, match=r"notime.nc has no 'time' dimension \(dimensions: lat, lon\); set data.time_dim"
    ):
        load(str(tmp_path / "notime.nc"), lead=1)
    empty = xr.Dataset(
        {"sst": (("time", "lat", "lon"), np.zeros((4, 0, 3), dtype=np.float32))},
        coords={"lat": np.zeros(0), "lon": np.arange(3.0)},
    )
    empty.to_netcdf(tmp_path / "empty.nc")
    with pytest.raises(DataError, match=r"variable 'sst' of .*empty.nc has an empty 'lat' dimension \(size 0\)"):
        load(str(tmp_path / "empty.nc"), lead=1)


def test_absurd_declared_sizes_say_what_to_reduce(tmp_path):
    import h5netcdf  # the gridded extra's engine; chunked variables allocate nothing until written

    path = tmp_path / "huge.nc"
    with h5netcdf.File(path, "w") as f:  # a header declaring a 10^6 x 10^6 grid, no data written
        f.dimensions = {"time": 3, "lat": 10**6, "lon": 10**6}
        f.create_variable("t2m", ("time", "lat", "lon"), "f4", chunks=(1, 1000, 1000))
    with pytest.raises(
        DataError,
        match=(
            r"one sample of .*huge.nc holds 2,000,000,000,000 values .*; reduce the sample \(fewer variables or "
            r"levels, a smaller region or a coarser grid\)"
        ),
    ):
        load(str(path), lead=1)
    steps = tmp_path / "steps.nc"
    with h5netcdf.File(steps, "w") as f:  # 10^12 time steps declared
        f.dimensions = {"time": 10**12, "lat": 2, "lon": 3}
        f.create_variable("t2m", ("time", "lat", "lon"), "f4", chunks=(1000, 2, 3))
    with pytest.raises(
        DataError,
        match=(
            r"steps.nc declares 1,000,000,000,000 time steps, more than this machine's memory can index; "
            r"reduce the period \(data.time=START:END\)"
        ),
    ):
        load(str(steps), lead=1)


def test_an_unknown_zarr_codec_is_one_line(ember_cli, tmp_path):
    ds = sst_dataset().drop_vars(["time_bnds", "lat_bnds", "forecast_reference_time_bnds", "nino34", "sftlf"])
    ds = ds.assign(a=ds.sst, b=ds.sst)
    store = tmp_path / "bad.zarr"
    ds.to_zarr(store, consolidated=False)
    for meta in store.rglob("zarr.json"):
        meta.write_text(meta.read_text().replace('"zstd"', '"nosuchcodec"'))
    r = ember_cli(
        "train", "data=gridded", f"data.path={store}", "data.variables=[sst]", "data.lead=1", "trainer.progress=none"
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        (
            f"error: cannot open {store} with xarray (Unknown codec: 'nosuchcodec'); "
            "the file may be truncated or not NetCDF/Zarr"
        )
    ], r.stderr


def test_train_end_to_end_on_yearly_360_day_files_with_land(tmp_path, years):
    folder, _, _ = years
    # One DataLoader worker: it opens the files (dask arrays) itself; the NaN guard sees a finite loss.
    result = fit(
        tmp_path,
        "data=gridded",
        f"data.path={folder}",
        "data.lead=1",
        "data.num_workers=1",
        "data.mask_channel=true",
        "model=mlp",
        "model.width=16",
        "trainer.max_epochs=1",
    )
    assert all(np.isfinite(v) for k, v in result.metrics.items() if k.endswith(("loss", "rmse", "r2")))
    assert result.metrics["test/rmse"] > 0


def test_netcdf4_files_are_read_by_h5netcdf_and_classic_ones_by_xarrays_choice(tmp_path):
    """netCDF4's library caches up to 64 MiB of chunks per variable of every open file: a pass
    over many yearly files kept gigabytes. NetCDF-4 files go to h5netcdf, whose cache is 1 MiB."""
    from ember.data.cf import Subset, netcdf_engine, open_fields

    ds = xr.Dataset(
        {"t": (("time", "lat", "lon"), np.ones((3, 2, 2), np.float32))},
        coords={"time": np.arange(3), "lat": [0.0, 1.0], "lon": [0.0, 1.0]},
    )
    ds.isel(time=[0, 1]).to_netcdf(tmp_path / "a.nc", engine="h5netcdf")
    ds.isel(time=[2]).to_netcdf(tmp_path / "b.nc", engine="h5netcdf")
    ds.isel(time=[2]).to_netcdf(tmp_path / "classic.nc", engine="scipy")
    four, mixed = [str(tmp_path / n) for n in ("a.nc", "b.nc")], [str(tmp_path / n) for n in ("a.nc", "classic.nc")]
    assert netcdf_engine(four) == "h5netcdf"
    assert netcdf_engine(mixed) is None and netcdf_engine([tmp_path / "missing.nc"]) is None
    for paths in (four, mixed):  # both read whole, whichever engine
        assert float(open_fields(tuple(paths), Subset())["t"].sum()) == 12.0


@pytest.mark.parametrize(("convention", "region", "columns", "lons"), [
    ("0..360", "-60:60", [5, 0, 1], [-60.0, 0.0, 60.0]),  # Europe-style bounds on ERA5's 0..360
    ("-180..180", "100:250", [5, 0, 1], [120.0, 180.0, 240.0]),  # the Pacific across -180..180's seam
    ("-180..180", "-120:-60", [1, 2], [-120.0, -60.0]),  # no seam: a plain slice
])
def test_longitudes_in_either_convention_and_across_the_seam(tmp_path, convention, region, columns, lons):
    ds = sst_dataset()
    if convention == "-180..180":
        ds = ds.assign_coords(longitude=LON - 180.0)
    path = tmp_path / "sst.nc"
    ds.to_netcdf(path)
    splits = load(
        str(path), lead=1, lon=region, val_fraction=0, test_fraction=0, normalize=False, normalize_target=False
    )
    assert splits.spec.lon == lons and splits.spec.input_shape == (1, 5, len(lons))
    _, y = splits.train[[0]]
    assert np.allclose(y[0, 0].numpy(), ds.sst.values[1][:, columns], equal_nan=True)
