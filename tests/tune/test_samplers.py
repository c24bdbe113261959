"""tune.sampler: no sampler state read from a study storage runs code."""

import json
import sqlite3

import numpy as np
import optuna
import pytest

from ember.errors import EmberError, UnsafeFileError
from ember.tune.samplers import CMA_GLOBALS, CheckedCmaEsSampler, make_sampler

SPACE = {"x": optuna.distributions.FloatDistribution(-1.0, 1.0), "y": optuna.distributions.FloatDistribution(-1.0, 1.0)}


def _study_with_state(tmp_path, state_hex: str) -> optuna.Study:
    """A study in SQLite whose one completed trial carries `state_hex` as CMA-ES's stored optimizer,
    as a row written into a shared study database would."""
    db = tmp_path / "study.db"
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="s")
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1, "y": 0.2}, distributions=SPACE, value=1.0))
    with sqlite3.connect(db) as con:  # the row, written straight into the database
        con.execute(
            "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
            (study.trials[0]._trial_id, "cma:optimizer:0", json.dumps(state_hex)),
        )
    return optuna.load_study(study_name="s", storage=f"sqlite:///{db}")


def _sample(study: optuna.Study, sampler) -> dict:
    trial = study._storage.create_new_trial(study._study_id)
    return sampler.sample_relative(study, study._storage.get_trial(trial), SPACE)


def test_cmaes_state_that_would_run_code_is_refused_not_run(tmp_path, code_payload):
    study = _study_with_state(tmp_path, code_payload.bytes.hex())
    sampler = make_sampler("cmaes", {"n_startup_trials": 1}, 0, [])
    with pytest.raises(
        UnsafeFileError, match=r"trial 0's CMA-ES state in the study storage names (posix|os)\.system.*could run code"
    ):
        _sample(study, sampler)
    assert not code_payload.marker.exists()


def test_cmaes_state_that_is_not_a_pickle_is_one_line(tmp_path):
    study = _study_with_state(tmp_path, "zz-not-hex")
    with pytest.raises(EmberError, match=r"CMA-ES state in the study storage is damaged"):
        _sample(study, CheckedCmaEsSampler(n_startup_trials=1, seed=0))


def test_cmaes_state_it_wrote_itself_is_read_back(tmp_path):
    """The real optimizer round-trips through the restricted unpickler (numpy's arrays included)."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", sampler=CheckedCmaEsSampler(n_startup_trials=1, seed=0, popsize=4)
    )
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2 + t.suggest_float("y", -1, 1) ** 2, n_trials=8)
    stored = [t for t in study.trials if any(k.startswith("cma:optimizer") for k in t.system_attrs)]
    assert stored, "CMA-ES stored no optimizer: the test checks nothing"
    restored = study.sampler._restore_optimizer(study.trials)
    assert type(restored).__module__.startswith("cmaes") and np.isfinite(restored.mean).all()


def test_the_optuna_internals_the_check_relies_on_exist():
    """CheckedCmaEsSampler overrides a private method: a renamed one would bring pickle.loads back."""
    assert callable(getattr(optuna.samplers.CmaEsSampler, "_restore_optimizer", None))
    assert callable(getattr(optuna.samplers.CmaEsSampler, "_concat_optimizer_attrs", None))
    assert isinstance(CheckedCmaEsSampler()._attr_key_optimizer, str)
    assert ("cmaes._cma", "CMA") in CMA_GLOBALS and not any(m in ("builtins", "os", "posix") for m, _ in CMA_GLOBALS)
    assert isinstance(make_sampler("cmaes", {}, 0, []), CheckedCmaEsSampler)


def test_a_study_whose_storage_holds_such_a_row_stops_with_one_line(tmp_path, code_payload, capsys):
    from tune_support import LR, TINY

    from ember.tune import tune_command

    study_dir = tmp_path / "study"
    overrides = [
        *TINY,
        "trainer.max_epochs=1",
        "trainer.progress=none",
        f"run.dir={study_dir}",
        "tune.sampler=cmaes",
        LR,
    ]
    assert tune_command([*overrides, "tune.trials=2"]) == 0
    with sqlite3.connect(study_dir / "study.db") as con:  # into every trial: whichever CMA-ES reads last
        for (trial_id,) in con.execute("SELECT trial_id FROM trials").fetchall():
            con.execute(
                "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
                (trial_id, "cma:optimizer:0", json.dumps(code_payload.bytes.hex())),
            )
    capsys.readouterr()
    with pytest.raises(UnsafeFileError, match="CMA-ES state in the study storage names .*system, .*could run code"):
        tune_command([*overrides, "tune.trials=4"])
    assert not code_payload.marker.exists()


def test_the_schemas_choices_are_the_samplers_and_pruners_built():
    from ember.config.schema import PRUNERS, SAMPLERS
    from ember.tune.samplers import _pruners, _samplers

    assert set(_samplers()) == set(SAMPLERS) and set(_pruners()) == set(PRUNERS)
