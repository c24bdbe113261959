"""Write a biased climate model's daily fields and the observations they should be corrected to.

    python make_data.py                 # model.nc and obs.nc here: 2 years of daily t2m and pr on 16 x 32
    python make_data.py --days 120 --out /tmp/bc

Observations: near-surface temperature (t2m, K) with a latitude gradient, a seasonal cycle and
moving weather anomalies; precipitation (pr, mm/day), heavier where and when it is warm and
zero on dry days. The "model" sees the same weather with the errors climate models have: a
warm bias over part of the domain and a cold one elsewhere, too much variability, a drizzle bias
(too many light-rain days) and too little heavy rain, and noise of its own. Its t2m is about
1.3 K off the observations, as in the task that motivated ember's bias-correction defaults.
"""

import argparse
from pathlib import Path

import numpy as np


def fields(days: int, nlat: int, nlon: int, seed: int):
    rng = np.random.default_rng(seed)
    lat = np.linspace(-60, 60, nlat)
    lon = np.linspace(0, 360, nlon, endpoint=False)
    t = np.arange(days)[:, None, None]
    la, lo = np.deg2rad(lat)[None, :, None], np.deg2rad(lon)[None, None, :]
    # Weather: a few travelling waves with random phases, smooth in space and time.
    weather = sum(rng.normal(0, 1.2) * np.sin(k * lo - 2 * np.pi * t / p + rng.uniform(0, 2 * np.pi)) * np.cos(la) for k, p in ((2, 9.0), (3, 6.0), (5, 4.0)))
    weather = weather + 0.6 * rng.normal(size=(days, nlat, nlon))
    season = 8 * np.sin(la) * np.cos(2 * np.pi * t / 365.25)
    t2m_obs = 288 - 30 * np.sin(la) ** 2 + season + 2.5 * weather
    wet = np.clip(0.6 * weather + 0.02 * (t2m_obs - 280) + rng.normal(0, 0.7, size=weather.shape), 0, None)
    pr_obs = 4.0 * wet**1.5
    bias = 1.9 * np.sin(lo) * np.cos(la) + 0.5 * np.sin(2 * la)  # warm here, cold there
    t2m_model = t2m_obs + bias + 0.1 * (t2m_obs - t2m_obs.mean(0)) + rng.normal(0, 0.35, size=weather.shape)
    pr_model = 0.8 * pr_obs + 0.6 + rng.gamma(0.5, 0.6, size=weather.shape)  # drizzle, muted extremes
    return lat, lon, {"t2m": (t2m_obs, t2m_model), "pr": (pr_obs, pr_model)}


def write(out: Path, days: int = 730, nlat: int = 16, nlon: int = 32, seed: int = 0) -> tuple[Path, Path]:
    import pandas as pd
    import xarray as xr

    lat, lon, f = fields(days, nlat, nlon, seed)
    coords = {"time": pd.date_range("2000-01-01", periods=days, freq="D"), "lat": lat, "lon": lon}
    units = {"t2m": "K", "pr": "mm/day"}
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, which in (("model.nc", 1), ("obs.nc", 0)):
        ds = xr.Dataset({v: (("time", "lat", "lon"), pair[which].astype(np.float32), {"units": units[v]}) for v, pair in f.items()}, coords=coords)
        ds.lat.attrs["units"], ds.lon.attrs["units"] = "degrees_north", "degrees_east"
        ds.to_netcdf(out / name, engine="h5netcdf")
        paths.append(out / name)
    return paths[0], paths[1]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".")
    p.add_argument("--days", type=int, default=730)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model, obs = write(Path(a.out), a.days, seed=a.seed)
    print(f"wrote {model} and {obs}")
