"""The particle swarm sampler on known functions.

Tolerances: on the shifted sphere (x - 1.5)^2 + (y + 2)^2 over [-5, 5]^2, 150 trials with 5
particles find the optimum (1.5, -2) to within 0.2 in each coordinate for every seed tried, and the
median best value over seeds is below 1e-3 (random search with the same budget: about 0.04).
"""

import math
import statistics

import optuna
import pytest

from ember.tune.pso import PSOSampler

optuna.logging.set_verbosity(optuna.logging.ERROR)


def sphere(trial):
    x, y = trial.suggest_float("x", -5, 5), trial.suggest_float("y", -5, 5)
    return (x - 1.5) ** 2 + (y + 2) ** 2


def test_finds_the_minimum_of_a_sphere_within_tolerance():
    best = []
    for seed in range(8):
        storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(storage=storage, sampler=PSOSampler(particles=5, seed=seed).bind(storage))
        study.optimize(sphere, n_trials=150)
        assert abs(study.best_params["x"] - 1.5) < 0.2 and abs(study.best_params["y"] + 2) < 0.2, (
            seed,
            study.best_params,
        )
        best.append(study.best_value)
    random = []
    for seed in range(8):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        study.optimize(sphere, n_trials=150)
        random.append(study.best_value)
    assert statistics.median(best) < 1e-3
    assert statistics.median(best) < statistics.median(random) / 10


def test_maximizes_over_log_and_int_parameters_with_categoricals_alongside():
    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        width = trial.suggest_int("width", 8, 256, step=8)
        act = trial.suggest_categorical("act", ["relu", "gelu"])
        assert width % 8 == 0 and 1e-5 <= lr <= 1.0
        return -((math.log10(lr) + 3) ** 2) - ((width - 96) / 64) ** 2 + (0.1 if act == "gelu" else 0.0)

    storage = optuna.storages.InMemoryStorage()
    sampler = PSOSampler(particles=5, seed=0).bind(storage)
    study = optuna.create_study(direction="maximize", storage=storage, sampler=sampler)
    study.optimize(objective, n_trials=150)
    assert study.best_params["lr"] == pytest.approx(1e-3, rel=0.3)
    assert abs(study.best_params["width"] - 96) <= 16
    assert study.best_value > 0.0  # gelu found as well (the only way above 0)


def test_swarm_state_lives_in_the_study_so_workers_share_it():
    # Two samplers (two workers) alternate on one storage: they drive one swarm of 5 particles.
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    samplers = [PSOSampler(particles=5, seed=i).bind(storage) for i in range(2)]
    workers = [optuna.load_study(study_name="s", storage=storage, sampler=s) for s in samplers]
    for i in range(60):
        workers[i % 2].optimize(sphere, n_trials=1)
    trials = workers[0].trials
    particles = [t.system_attrs.get("pso:particle") for t in trials[1:]]
    assert sorted(set(particles)) == [0, 1, 2, 3, 4] and particles[:10] == [0, 1, 2, 3, 4] * 2
    assert workers[0].best_value < 0.05
