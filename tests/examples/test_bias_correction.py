"""examples/bias_correction as a user runs it: write the yearly NetCDF files (noleap calendar,
bounds variables, tos NaN over land), train, evaluate, export, and apply the exported corrector to
raw model fields, scored in kelvin on the held-out last days."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bias_correction"


def test_the_exported_corrector_halves_the_uncorrected_error_in_kelvin(tmp_path, ember_cli):
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--years", "2", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    common = ["data=gridded", "data.path=model", "data.target_path=obs", "data.variables=[t2m,pr,tos]"]
    r = ember_cli("train", *common, "model=mlp", "trainer.max_epochs=10", "trainer.progress=none", "run.dir=runs/bc")
    assert r.returncode == 0, r.stderr
    assert "predicts the correction to its input" in r.stdout and "split in time" in r.stdout and "tos 111" in r.stdout
    summary = json.loads((tmp_path / "runs/bc/summary.json").read_text())
    # The field's own methods stand beside the network, fitted on the train years.
    assert {"climatology", "identity", "linear_scaling", "quantile_mapping"} <= set(summary["baselines"])
    identity = summary["baselines"]["identity"]["test/rmse/t2m"]
    assert summary["metrics"]["test/rmse/t2m"] < 0.6 * identity
    # The test split is the latest days: after every train and validation day.
    splits = json.loads((tmp_path / "runs/bc/splits.json").read_text())
    assert min(splits["test"]) > max(splits["train"] + splits["val"])
    r = ember_cli("eval", "run=runs/bc")
    assert r.returncode == 0 and "quantile_mapping" in r.stdout and "rmse/t2m" in r.stdout, r.stderr
    r = ember_cli("export", "run=runs/bc", "format=onnx")
    assert r.returncode == 0, r.stderr

    import onnxruntime as ort

    test_days = splits["test"]
    model, obs = (
        xr.open_mfdataset(str(tmp_path / f"{d}/*.nc"), data_vars="minimal", coords="minimal", compat="override")
        for d in ("model", "obs")
    )
    raw = np.stack([model[v].values[test_days] for v in ("t2m", "pr", "tos")], axis=1).astype(np.float32)
    truth = obs.t2m.values[test_days]
    session = ort.InferenceSession(str(tmp_path / "runs/bc/export/model.onnx"))
    corrected = session.run(None, {session.get_inputs()[0].name: raw})[0]
    rmse = lambda a: float(np.sqrt(np.mean((a - truth) ** 2)))  # noqa: E731
    uncorrected, after = rmse(raw[:, 0]), rmse(corrected[:, 0])
    assert 1.0 < uncorrected < 1.6  # the biased model's realistic error, in kelvin
    assert after < 0.6 * uncorrected, (after, uncorrected)
    # The run's own test RMSE is the same number: the export maps raw fields to kelvin.
    assert abs(summary["metrics"]["test/rmse/t2m"] - after) < 1e-3 * uncorrected
    # Land stays NaN in the corrected SST, and only there.
    land = np.isnan(raw[:, 2])
    assert land.any() and np.array_equal(np.isnan(corrected[:, 2]), land)
