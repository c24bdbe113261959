"""`tune.sampler` and `tune.pruner` names -> Optuna objects (all but pso are Optuna's own)."""

import inspect
from typing import Any

import optuna

from ember.errors import ConfigError
from ember.tune.pso import PSOSampler
from ember.tune.space import Param, grid
from ember.tune.storage import quiet


def _samplers() -> dict[str, Any]:
    s = optuna.samplers
    return {
        "grid": s.GridSampler,
        "random": s.RandomSampler,
        "tpe": s.TPESampler,
        "gp": s.GPSampler,  # Bayesian optimization with a Gaussian process (torch, scipy)
        "cmaes": s.CmaEsSampler,  # the cmaes package
        "qmc": s.QMCSampler,  # scipy's Sobol / Halton sequences
        "pso": PSOSampler,
    }


def _pruners() -> dict[str, Any]:
    p = optuna.pruners
    return {
        "none": p.NopPruner,
        "median": p.MedianPruner,
        "successive_halving": p.SuccessiveHalvingPruner,
        "hyperband": p.HyperbandPruner,
    }


SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "pso")
PRUNERS = ("none", "median", "successive_halving", "hyperband")


def check_names(sampler: str, pruner: str) -> None:
    if sampler not in SAMPLERS:
        raise ConfigError(f"tune.sampler={sampler!r} is not a sampler; choose one of: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"tune.pruner={pruner!r} is not a pruner; choose one of: {', '.join(PRUNERS)}")


def make_sampler(name: str, args: dict, seed: int, params: list[Param]) -> optuna.samplers.BaseSampler:
    cls = _samplers()[name]
    kwargs = dict(args)
    if name == "grid":
        kwargs = {"search_space": grid(params, kwargs.pop("points", 5)), **kwargs}
    if "seed" in inspect.signature(cls).parameters:
        kwargs.setdefault("seed", seed)
    return _build(f"tune.sampler={name}", cls, kwargs, "sampler_args")


def make_pruner(name: str, args: dict) -> optuna.pruners.BasePruner:
    return _build(f"tune.pruner={name}", _pruners()[name], dict(args), "pruner_args")


def _build(what: str, cls, kwargs: dict, key: str):
    accepted = inspect.signature(cls).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        names = ", ".join(k for k in accepted if k not in ("self", "search_space"))
        raise ConfigError(f"tune.{key}.{unknown[0]} is not an argument of {cls.__name__}; {what} takes: {names}")
    try:
        with quiet():  # GP, QMC and some arguments are marked experimental in Optuna
            return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} with tune.{key}={kwargs}: {e}") from None
    except ImportError as e:
        raise ConfigError(f"{what} needs {e.name or 'a package'} ({e}); pip install 'ember[tune]'") from None
