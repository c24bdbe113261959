"""ember eval run=DIR rollout=N: a forecasting run fed its own forecasts, beside persistence and
climatology, per lead time."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ember.api import train
from ember.config import compose
from ember.errors import ConfigError
from ember.inspection.evaluation import evaluate_run
from ember.report import build_report
from ember.track.console import Console


def _advected(path, t=80, lat=6, lon=12, seed=0):
    """A field moving one cell east per step: persistence is poor, the dynamics learnable."""
    rng = np.random.default_rng(seed)
    x = np.zeros((t, lat, lon))
    x[0] = rng.normal(size=(lat, lon))
    for i in range(1, t):
        x[i] = 0.9 * np.roll(x[i - 1], 1, axis=1) + 0.4 * rng.normal(size=(lat, lon))
    coords = {
        "time": pd.date_range("2000-01-01", periods=t, freq="6h"),
        "lat": np.linspace(-50, 50, lat),
        "lon": np.linspace(0, 330, lon),
    }
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), (280 + 3 * x).astype(np.float32), {"units": "K"})}, coords=coords)
    ds.to_netcdf(path, engine="h5netcdf")
    return ds


def _train(tmp_path, *extra):
    cfg = compose(
        [
            "data=gridded",
            f"data.path={tmp_path / 'era.nc'}",
            "data.variables=[t2m]",
            "data.num_workers=0",
            "model=mlp",
            "trainer.max_epochs=3",
            "trainer.progress=none",
            f"run.root={tmp_path / 'runs'}",
            *extra,
        ]
    )
    return train(cfg, console=Console("none")).run_dir


def test_rollout_scores_each_lead_beside_persistence_and_climatology(tmp_path):
    ds = _advected(tmp_path / "era.nc")
    run = _train(tmp_path, "data.lead=2")
    rows = evaluate_run(run, rollout=3, console=Console("none"))
    result = json.loads((run / "rollout.json").read_text())
    assert result["lead"] == [2, 4, 6] and set(result["scores"]) == {"model", "persistence", "climatology"}
    assert {"model/lead 2 wrmse", "persistence/lead 6 acc", "climatology/lead 4 wrmse"} <= set(rows)
    # Persistence at lead k is the start state held: recompute it from the file, in kelvin.
    test_rows = json.loads((run / "splits.json").read_text())["test"]
    starts = np.array([r for r in test_rows if r + 6 < ds.sizes["time"]])
    assert result["forecasts"] == len(starts)
    t2m = ds.t2m.values.astype(np.float64)
    w = np.cos(np.deg2rad(ds.lat.values))
    w = (w / w.mean())[None, :, None]
    for i, lead in enumerate(result["lead"]):
        err = t2m[starts + lead] - t2m[starts]
        assert result["scores"]["persistence"][i]["wrmse"] == pytest.approx(np.sqrt((w * err**2).mean()), rel=1e-4)
    # The report charts it.
    html = build_report([run], evaluate=False).read_text()
    assert "Rollout" in html and "wrmse against lead time" in html


def test_rollout_needs_a_forecasting_run(tmp_path, ember_cli):
    _advected(tmp_path / "era.nc")
    ds = xr.open_dataset(tmp_path / "era.nc")
    ds.assign(t2m_obs=ds.t2m + 1).to_netcdf(tmp_path / "pair.nc", engine="h5netcdf")
    run = _train(tmp_path, "data.target=t2m_obs", f"data.path={tmp_path / 'pair.nc'}")
    with pytest.raises(ConfigError, match="rollout= needs a forecasting run"):
        evaluate_run(run, rollout=2, console=Console("none"))
    for bad in ("rollout=0", "rollout=two"):
        r = ember_cli("eval", f"run={run}", bad)
        assert (
            r.returncode == 2 and r.stderr.startswith("error: rollout=") and len(r.stderr.strip().splitlines()) == 1
        ), r.stderr
