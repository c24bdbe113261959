"""examples/bias_correction as a user runs it: write the NetCDF pair, train, evaluate, export, and
apply the exported corrector to raw model fields, scored in kelvin on held-out days."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bias_correction"


def test_the_exported_corrector_halves_the_uncorrected_error_in_kelvin(tmp_path, ember_cli):
    subprocess.run([sys.executable, str(EXAMPLE / "make_data.py"), "--days", "365", "--out", str(tmp_path)], check=True, capture_output=True)
    common = ["data=gridded", "data.path=model.nc", "data.target_path=obs.nc", "data.variables=[t2m,pr]"]
    r = ember_cli("train", *common, "model=mlp", "trainer.max_epochs=10", "trainer.progress=none", "run.dir=runs/bc")
    assert r.returncode == 0, r.stderr
    assert "predicts the correction to its input" in r.stdout and "identity" in r.stdout
    assert "warning: the model does not beat" not in r.stdout
    summary = json.loads((tmp_path / "runs/bc/summary.json").read_text())
    assert summary["skill"]["best"] == "identity" and summary["skill"]["skill"] > 0.3
    # The report maps the error per grid point of the model beside the best baseline's, per variable.
    html = (tmp_path / "runs/bc/report.html").read_text()
    assert "t2m: error per grid point" in html and "pr: error per grid point" in html and "identity: mean bias" in html and "Beside the baselines" in html
    r = ember_cli("eval", "run=runs/bc")
    assert r.returncode == 0 and "identity" in r.stdout and "rmse/t2m" in r.stdout, r.stderr
    r = ember_cli("export", "run=runs/bc", "format=onnx")
    assert r.returncode == 0, r.stderr

    import onnxruntime as ort

    test_days = json.loads((tmp_path / "runs/bc/splits.json").read_text())["test"]
    model, obs = xr.open_dataset(tmp_path / "model.nc"), xr.open_dataset(tmp_path / "obs.nc")
    raw = np.stack([model.t2m.values[test_days], model.pr.values[test_days]], axis=1).astype(np.float32)
    truth = obs.t2m.values[test_days]
    session = ort.InferenceSession(str(tmp_path / "runs/bc/export/model.onnx"))
    corrected = session.run(None, {session.get_inputs()[0].name: raw})[0]
    rmse = lambda a: float(np.sqrt(np.mean((a - truth) ** 2)))  # noqa: E731
    uncorrected, after = rmse(raw[:, 0]), rmse(corrected[:, 0])
    assert 1.0 < uncorrected < 1.6  # the biased model's realistic error, in kelvin
    assert after < 0.5 * uncorrected, (after, uncorrected)
    # The run's own test RMSE is the same number: the export maps raw fields to kelvin.
    assert abs(summary["metrics"]["test/rmse/t2m"] - after) < 1e-3 * uncorrected
