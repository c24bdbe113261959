"""Write a biased climate model's daily fields and the observations they should be corrected to,
as CMIP-style files: one NetCDF file a year for each, a noleap calendar, CF bounds variables.

    python make_data.py                 # model/ and obs/ here: 4 years of daily t2m, pr and tos on 16 x 32
    python make_data.py --years 2 --out /tmp/bc

Observations: near-surface temperature (t2m, K) with a latitude gradient, a seasonal cycle and
moving weather anomalies; precipitation (pr, mm/day), heavier where and when it is warm and
zero on dry days; sea-surface temperature (tos, K), NaN over two continents as in an ocean
model's output. The "model" sees the same weather with the errors climate models have: a
warm bias over part of the domain and a cold one elsewhere, too much variability, a drizzle bias
(too many light-rain days) and too little heavy rain, a seasonal SST bias, and noise of its own.
Its t2m is about 1.3 K off the observations, as in the task that motivated ember's
bias-correction defaults. Both sets use the model's noleap calendar (observations are put on the
model's calendar before a correction, as bias-adjustment tools require).
"""

import argparse
import datetime
from pathlib import Path

import numpy as np


def fields(days: int, nlat: int, nlon: int, seed: int):
    rng = np.random.default_rng(seed)
    lat = np.linspace(-60, 60, nlat)
    lon = np.linspace(0, 360, nlon, endpoint=False)
    t = np.arange(days)[:, None, None]
    la, lo = np.deg2rad(lat)[None, :, None], np.deg2rad(lon)[None, None, :]
    # Weather: a few travelling waves with random phases, smooth in space and time.
    weather = sum(
        rng.normal(0, 1.2) * np.sin(k * lo - 2 * np.pi * t / p + rng.uniform(0, 2 * np.pi)) * np.cos(la)
        for k, p in ((2, 9.0), (3, 6.0), (5, 4.0))
    )
    weather = weather + 0.6 * rng.normal(size=(days, nlat, nlon))
    season = 8 * np.sin(la) * np.cos(2 * np.pi * t / 365.25)
    t2m_obs = 288 - 30 * np.sin(la) ** 2 + season + 2.5 * weather
    wet = np.clip(0.6 * weather + 0.02 * (t2m_obs - 280) + rng.normal(0, 0.7, size=weather.shape), 0, None)
    pr_obs = 4.0 * wet**1.5
    bias = 1.9 * np.sin(lo) * np.cos(la) + 0.5 * np.sin(2 * la)  # warm here, cold there
    t2m_model = t2m_obs + bias + 0.1 * (t2m_obs - t2m_obs.mean(0)) + rng.normal(0, 0.35, size=weather.shape)
    pr_model = 0.8 * pr_obs + 0.6 + rng.gamma(0.5, 0.6, size=weather.shape)  # drizzle, muted extremes
    # SST: the slow part of the temperature, damped; the model's is too warm in summer.
    tos_obs = 291 - 18 * np.sin(la) ** 2 + 0.5 * season + 0.8 * weather
    tos_model = (
        tos_obs
        + 0.8 * np.cos(lo) * np.cos(la)
        + 0.6 * np.cos(2 * np.pi * (t - 200) / 365.25)
        + rng.normal(0, 0.25, size=weather.shape)
    )
    land = _land(lat, lon)
    tos_obs, tos_model = (np.where(land, np.nan, a) for a in (tos_obs, tos_model))
    return lat, lon, {"t2m": (t2m_obs, t2m_model), "pr": (pr_obs, pr_model), "tos": (tos_obs, tos_model)}


def _land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Two continents on the (lat, lon) grid: True over land."""
    la, lo = lat[:, None], lon[None, :]
    return ((lo > 40) & (lo < 130) & (la > -10) & (la < 50)) | ((lo > 250) & (lo < 310) & (la > -50) & (la < 40))


def write(out: Path, years: int = 4, nlat: int = 16, nlon: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """model/model_YYYY.nc and obs/obs_YYYY.nc under `out`, one file a year from 2000."""
    import cftime
    import xarray as xr

    days = 365 * years
    lat, lon, f = fields(days, nlat, nlon, seed)
    time = np.array(
        [cftime.DatetimeNoLeap(2000 + d // 365, 1, 1) + datetime.timedelta(days=d % 365) for d in range(days)]
    )
    units = {
        "t2m": ("K", "air_temperature"),
        "pr": ("mm/day", "precipitation_flux"),
        "tos": ("K", "sea_surface_temperature"),
    }
    for name, which in (("model", 1), ("obs", 0)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for year in range(years):
            days_of_year = slice(365 * year, 365 * (year + 1))
            data = {
                v: (
                    ("time", "lat", "lon"),
                    pair[which][days_of_year].astype(np.float32),
                    {"units": units[v][0], "standard_name": units[v][1]},
                )
                for v, pair in f.items()
            }
            ds = xr.Dataset(data, coords={"time": time[days_of_year], "lat": lat, "lon": lon})
            _bounds(ds, lat, lon)
            encoding = {
                "time": {"units": "days since 2000-01-01", "calendar": "noleap"},
                "time_bnds": {"units": "days since 2000-01-01", "calendar": "noleap"},
            }
            ds.to_netcdf(folder / f"{name}_{2000 + year}.nc", engine="h5netcdf", encoding=encoding)
    return out / "model", out / "obs"


def _bounds(ds, lat: np.ndarray, lon: np.ndarray) -> None:
    """CF cell bounds of time, lat and lon, as nearly every CF file carries them."""
    step_lat, step_lon = lat[1] - lat[0], lon[1] - lon[0]
    ds["time_bnds"] = (
        ("time", "bnds"),
        np.stack([ds.time.values, ds.time.values + datetime.timedelta(days=1)], axis=1),
    )
    ds["lat_bnds"] = (("lat", "bnds"), np.stack([lat - step_lat / 2, lat + step_lat / 2], axis=1))
    ds["lon_bnds"] = (("lon", "bnds"), np.stack([lon - step_lon / 2, lon + step_lon / 2], axis=1))
    ds.time.attrs["bounds"], ds.lat.attrs["bounds"], ds.lon.attrs["bounds"] = "time_bnds", "lat_bnds", "lon_bnds"
    ds.lat.attrs.update(units="degrees_north", standard_name="latitude")
    ds.lon.attrs.update(units="degrees_east", standard_name="longitude")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".")
    p.add_argument("--years", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model, obs = write(Path(a.out), a.years, seed=a.seed)
    print(f"wrote {a.years} yearly files each in {model}/ and {obs}/")
