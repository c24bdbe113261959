"""benchmarks/gpu_suite.py --smoke: the GPU suite's code path, on CPU with tiny models; and the
operator benchmark's paper recipe beside the config preset that repeats it; and its tiny budget
(columns, seeds, recipes).

The suite is meant for a GPU machine; its smoke mode keeps it from rotting where there is none.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ember.config import compose

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def test_gpu_suite_smoke_runs_both_models_through_both_loops(tmp_path):
    out = tmp_path / "gpu_suite.json"
    r = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] and result["device_type"] == "cpu" and result["device"]
    assert set(result["models"]) == {"resnet18", "vit_s16"}
    for name, m in result["models"].items():
        raw, ours = m["raw"], m["ember"]
        for loop in (raw, ours):
            assert loop["images_per_s"] > 0 and 0 < loop["mfu"] < 1, (name, loop)
        # Both loops count the same step of the same model: the MFUs differ only by speed.
        assert ours["flops_per_step"] == raw["flops_per_step"] > 0, name
        assert m["ember_over_raw"] == ours["over_raw"] == ours["images_per_s"] / raw["images_per_s"]
        assert "graphs" not in m  # CUDA graphs need a GPU
    assert "vit_s16" in r.stdout and "over raw" in r.stdout


def test_the_fno_darcy_experiment_trains_the_operator_benchmarks_paper_recipe(monkeypatch):
    """`ember train experiment=fno_darcy` and `benchmarks/operators.py --recipe paper` are one recipe
    written twice (a config and the script's ember.fit arguments): they must not drift apart."""
    monkeypatch.syspath_prepend(str(SUITE.parent))  # the script imports its sibling burgers_fno
    spec = importlib.util.spec_from_file_location("operators", SUITE.parent / "operators.py")
    operators = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(operators)
    cfg = compose(["experiment=fno_darcy"])
    recipe = operators.recipe_overrides("paper", cfg.trainer.max_epochs)
    assert {k: cfg.optim[k] for k in recipe["optim"]} == recipe["optim"]
    assert {k: cfg.sched[k] for k in recipe["sched"]} == recipe["sched"]
    assert {k: cfg.model[k] for k in operators.SIZES["darcy"]} == operators.SIZES[
        "darcy"
    ] and cfg.model.spectral_init == "paper"
    samples, epochs, lr = operators.BUDGETS["full"]["darcy"]
    assert (cfg.data.num_samples, cfg.trainer.max_epochs, cfg.optim.lr) == (samples + 100, epochs, lr)


def test_operators_tiny_budget_prints_three_columns_with_seeds_spreads_and_recipes(tmp_path):
    """`benchmarks/operators.py --budget tiny`: every column over its seeds, the spread, the worst
    test sample, the verdicts and each library's recipe in the JSON (one epoch: no timing claims)."""
    pytest.importorskip("neuralop")
    out = tmp_path / "operators.json"
    command = [
        sys.executable,
        str(SUITE.parent / "operators.py"),
        "--budget",
        "tiny",
        "--cases",
        "burgers",
        "--seeds",
        "0",
        "1",
        "--out",
        str(out),
    ]
    r = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    entry = json.loads(out.read_text())["tiny"]["cases"]["burgers"]
    columns = {"ember", "neuraloperator", "neuraloperator_same_loop"}
    assert set(entry["runs"]) == set(entry["summary"]) == set(entry["recipes"]) == columns
    assert all(set(runs) == {"0", "1"} for runs in entry["runs"].values())
    anchor = entry["recipes"]["neuraloperator"]
    assert anchor["trainer"] == "neuralop.Trainer" and "darcy_config" in anchor["source"] and anchor["epochs"] == 1
    assert entry["recipes"]["ember"]["trainer"] == "ember.fit"
    for column, summary in entry["summary"].items():
        s = summary["relative_l2"]
        assert s["n"] == 2 and s["min"] <= s["mean"] <= s["max"] and s["std"] >= 0, column
        assert summary["relative_l2_worst"]["max"] >= s["max"], column
    for row in entry["runs"]["neuraloperator"].values():
        assert row["params"] == row["params_anchor"]  # complex weights counted as two, as neuraloperator does
    assert set(entry["verdicts"]) == {"ember vs neuraloperator", "ember vs neuraloperator_same_loop"}
    assert all(v == "within spread" or v.startswith(("ahead", "behind")) for v in entry["verdicts"].values())
    table = [line for line in r.stdout.splitlines() if line.startswith("burgers s=1024") and " seed " not in line]
    assert [line.split()[2] for line in table] == ["ember", "neuraloperator", "neuraloperator_same_loop"]
    assert all(line.split()[4] == "2" for line in table)  # the seeds column
