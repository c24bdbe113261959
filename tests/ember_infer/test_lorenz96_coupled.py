"""benchmarks/lorenz96_coupled.py --quick on the session's build: an ember network called from the
Fortran Lorenz '96 model at every step forecasts the two-scale truth better than no closure, and
its run stays bounded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "lorenz96_coupled.py"

pytestmark = pytest.mark.cpp


def test_the_coupled_network_beats_no_closure_and_stays_bounded(ember_infer, tmp_path):
    out = tmp_path / "l96.json"
    program = ember_infer.tests / "lorenz96" / "lorenz96"
    done = subprocess.run(
        [
            sys.executable,
            "-P",
            str(BENCHMARK),
            "--quick",
            "--program",
            str(program),
            "--work",
            str(tmp_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    rmse, leads = r["forecast"]["rmse"], r["forecast"]["leads"]
    for lead in (0.5, 1.0):
        i = leads.index(lead)
        assert rmse["net-torchscript"][i] < rmse["none"][i], (lead, rmse["net-torchscript"][i], rmse["none"][i])
    assert rmse["net-torchscript"][0] == rmse["none"][0] == 0  # the same initial states as the truth
    net, truth = r["climate"]["net-torchscript"], r["climate"]["truth"]
    assert net["finite"] and net["max_abs"] < 3 * (abs(truth["mean"]) + 3 * truth["std"]), net
    assert 0 <= net["hellinger"] < 1 and all(us > 0 for us in r["us_per_step"].values())
    assert "| net-torchscript |" in done.stdout
