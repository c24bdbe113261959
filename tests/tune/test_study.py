"""`ember tune` in one process: trials as run directories, resume, best.yaml, pruning, failures."""

import csv
import json

import optuna
import pytest
from omegaconf import OmegaConf
from tune_support import LR, TINY, WIDTH

from ember.config import compose
from ember.config.compose import file_overrides
from ember.errors import ConfigError
from ember.tune import tune_command
from ember.tune.budget import counts
from ember.tune.study import _create, _work, load, make_plan


def _study_dirs(runs):
    return sorted((runs / "mnist1d-mlp").glob("tune-*"))


def test_study_writes_runs_and_reports_resumes_and_best_yaml_reproduces(runs, capsys):
    overrides = TINY + [
        f"run.root={runs}",
        "tune.sampler=random",
        "tune.metric=val/accuracy",
        "tune.trials=3",
        LR,
        WIDTH,
    ]
    assert tune_command(overrides) == 0
    out = capsys.readouterr().out
    assert "starting study mnist1d-mlp-" in out and "trial 2: val/accuracy" in out and "best: trial" in out

    (study_dir,) = _study_dirs(runs)
    for n in range(3):
        summary = json.loads((study_dir / f"trial-{n}" / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["monitor"] == "val/accuracy"
    info = json.loads((study_dir / "study.json").read_text())
    assert info["direction"] == "maximize" and info["results"]["trials"]["complete"] == 3
    rows = list(csv.DictReader((study_dir / "leaderboard.csv").open()))
    values = [float(r["val/accuracy"]) for r in rows]
    assert values == sorted(values, reverse=True) and {r["state"] for r in rows} == {"complete"}
    history = list(csv.DictReader((study_dir / "history.csv").open()))
    assert [r["trial"] for r in history] == ["0", "1", "2"] and float(history[-1]["best_value"]) == max(values)

    # The same command with a larger budget continues the same study.
    assert tune_command(overrides[:-3] + ["tune.trials=4", LR, WIDTH]) == 0
    assert "continuing study" in capsys.readouterr().out
    assert _study_dirs(runs) == [study_dir]
    assert sorted(p.name for p in study_dir.glob("trial-*")) == ["trial-0", "trial-1", "trial-2", "trial-3"]

    # best.yaml is the best trial's config: `ember train --config best.yaml` trains it again.
    best = json.loads((study_dir / "study.json").read_text())["results"]["best"]
    trial_cfg = OmegaConf.to_container(OmegaConf.load(study_dir / f"trial-{best['trial']}" / "config.yaml"))
    again = compose(
        file_overrides(study_dir / "best.yaml") + [f"run.dir={study_dir / 'again'}", "trainer.progress=none"]
    )
    again_cfg = OmegaConf.to_container(again)
    for key in ("model", "data", "optim", "sched"):
        assert again_cfg[key] == trial_cfg[key]
    assert {k: v for k, v in again_cfg["trainer"].items() if k != "progress"} == {
        k: v for k, v in trial_cfg["trainer"].items() if k != "progress"
    }
    from ember.api import train
    from ember.track.console import Console

    result = train(again, Console("none"))
    assert result.metrics["val/accuracy"] == pytest.approx(best["value"], abs=1e-6)

    assert tune_command(overrides, status=True) == 0
    status = capsys.readouterr().out
    assert f"best: trial {best['trial']}" in status and "4 complete" in status
    assert tune_command([f"run.dir={study_dir}"], status=True) == 0  # the study's own command, from its directory
    assert f"best: trial {best['trial']}" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"was started with another config \(changed: trainer.max_epochs 2 -> 3\)"):
        tune_command(overrides + [f"run.dir={study_dir}", "trainer.max_epochs=3"])


def test_pruned_and_failed_trials_are_recorded_and_the_study_goes_on(runs):
    space = "++tune.space.optim.lr={type:categorical,choices:[0.01,1.0e-7,1.0e+30]}"
    overrides = TINY + [
        "trainer.max_epochs=3",
        f"run.root={runs}",
        "tune.metric=val/accuracy",
        "tune.trials=3",
        "tune.pruner=median",
        "tune.pruner_args={n_startup_trials:1}",
        space,
    ]
    plan = make_plan(overrides)
    study = _create(plan)
    for lr in (0.01, 1e-7, 1e30):  # a good trial, one the median pruner stops, one the NaN guard stops
        study.enqueue_trial({"optim.lr": lr})
    assert _work(plan, 0) == 0
    study = load(plan)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]
    pruned = json.loads((plan.dir / "trial-1" / "summary.json").read_text())
    assert pruned["status"] == "pruned" and pruned["pruned"].startswith("pruned at epoch 1") and "error" not in pruned
    failed = json.loads((plan.dir / "trial-2" / "summary.json").read_text())
    assert failed["status"] == "failed" and "NonFiniteError" in failed["error"]
    assert "NonFiniteError: non-finite loss" in study.trials[2].user_attrs["error"]
    assert counts(study) == (3, 0, 0)


def test_mistakes_stop_before_any_trial(runs):
    base = TINY + [f"run.root={runs}"]
    with pytest.raises(ConfigError, match="tune.space is empty"):
        tune_command(base)
    with pytest.raises(ConfigError, match="tune.space.optim.lrr: the config has no key"):
        tune_command(base + ["++tune.space.optim.lrr={type:float,low:0.001,high:0.1}"])
    with pytest.raises(
        ConfigError,
        match="tune.sampler='bayes' is not a valid choice; .*choose one of: grid, random, tpe, gp, cmaes, qmc, pso",
    ):
        tune_command(base + ["tune.sampler=bayes", LR])
    with pytest.raises(ConfigError, match="tune.sampler_args.n_startup is not an argument of TPESampler"):
        tune_command(base + ["tune.sampler_args={n_startup:3}", LR])
    with pytest.raises(ConfigError, match="tune.metric='test/accuracy' must be a validation metric"):
        tune_command(base + ["tune.metric=test/accuracy", LR])
    assert not runs.exists()
    # A metric the runs do not compute stops the study at its first trial.
    with pytest.raises(
        ConfigError,
        match="tune.metric='val/acc' is not a validation metric of this run; choose one of: val/loss, val/accuracy",
    ):
        tune_command(base + ["tune.metric=val/acc", "tune.trials=5", LR])
    (study_dir,) = _study_dirs(runs)
    assert sorted(p.name for p in study_dir.glob("trial-*")) == []


@pytest.mark.parametrize("sampler", ["grid", "tpe", "gp", "cmaes", "qmc", "pso"])
def test_every_sampler_runs_a_study(runs, sampler):
    # Optuna's own samplers on a cheap objective through ember's space and sampler factory.
    from ember.tune.samplers import make_sampler
    from ember.tune.space import parse_space, suggest

    params = parse_space(
        {
            "x": {"type": "float", "low": -2.0, "high": 2.0},
            "n": {"type": "int", "low": 1, "high": 4},
            "c": {"type": "categorical", "choices": ["a", "b"]},
        }
    )
    storage = optuna.storages.InMemoryStorage()
    made = make_sampler(sampler, {"points": 3} if sampler == "grid" else {}, 0, params, storage)
    study = optuna.create_study(storage=storage, sampler=made)

    def objective(trial):
        v = suggest(trial, params)
        return v["x"] ** 2 + v["n"] + (v["c"] == "b")

    study.optimize(objective, n_trials=12)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 12 and study.best_value < 4.0
