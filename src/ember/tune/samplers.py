"""`tune.sampler` and `tune.pruner` names -> Optuna objects (all but pso are Optuna's own).

Optuna's CMA-ES keeps its optimizer in the study storage as a pickle and unpickles it in every
worker: a row written into a shared study database would run its code there. ember's `cmaes` is
Optuna's sampler with that one read done by ember.safe_pickle, which admits only the classes of
the cmaes package and numpy's array rebuilders and refuses the row at any other name. The other
samplers store no pickle (TPE, GP, QMC, random and grid keep plain JSON attributes; pso too).
"""

import inspect
import pickle
from typing import Any

import optuna

from ember import safe_pickle
from ember.errors import ConfigError, EmberError, first_line
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
        "cmaes": CheckedCmaEsSampler,  # the cmaes package; its state read without running code
        "qmc": s.QMCSampler,  # scipy's Sobol / Halton sequences
        "pso": PSOSampler,
    }


# What a pickled cmaes optimizer names (CMA, SepCMA, CMAwM holding a CMA, numpy arrays and scalars);
# numpy.core before numpy 2, numpy._core after.
CMA_GLOBALS = frozenset(
    [
        ("cmaes._cma", "CMA"),
        ("cmaes._sepcma", "SepCMA"),
        ("cmaes._cmawm", "CMAwM"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
    ]
    + [(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")]
)


class CheckedCmaEsSampler(optuna.samplers.CmaEsSampler):
    refused: EmberError | None = None  # Optuna fails the trial on any error: the study loop stops on this one
    """Optuna's CmaEsSampler, restoring its optimizer with ember.safe_pickle instead of pickle.loads.

    Overrides Optuna's private `_restore_optimizer` (the one place it unpickles), in the same
    steps; tests/tune/test_samplers.py fails when Optuna renames what this relies on."""

    def _restore_optimizer(self, completed_trials):
        for trial in reversed(completed_trials):
            attrs = {k: v for k, v in trial.system_attrs.items() if k.startswith(self._attr_key_optimizer)}
            if attrs:
                fix = (
                    "delete that study (or its trials' cma: system attributes) or start a new one "
                    "with another tune.name"
                )
                where = f"trial {trial.number}'s CMA-ES state in the study storage"
                try:
                    return safe_pickle.loads(
                        bytes.fromhex(self._concat_optimizer_attrs(attrs)),
                        CMA_GLOBALS,
                        source=where,
                        kind="CMA-ES state",
                        fix=fix,
                    )
                except EmberError as e:
                    self.refused = e
                    raise
                # not hex, cut short, not a pickle
                except (ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
                    self.refused = EmberError(f"{where} is damaged ({first_line(e)}); {fix}")
                    raise self.refused from None
        return None


def _pruners() -> dict[str, Any]:
    p = optuna.pruners
    return {
        "none": p.NopPruner,
        "median": p.MedianPruner,
        "successive_halving": p.SuccessiveHalvingPruner,
        "hyperband": p.HyperbandPruner,
    }


def make_sampler(name: str, args: dict, seed: int, params: list[Param], storage=None) -> optuna.samplers.BaseSampler:
    """The sampler; `storage`, the study's, is where pso keeps its swarm (Optuna's own reach it themselves)."""
    cls = _samplers()[name]
    kwargs = dict(args)
    if name == "grid":
        kwargs = {"search_space": grid(params, kwargs.pop("points", 5)), **kwargs}
    if "seed" in inspect.signature(cls).parameters:
        kwargs.setdefault("seed", seed)
    sampler = _build(f"tune.sampler={name}", cls, kwargs, "sampler_args")
    return sampler.bind(storage) if isinstance(sampler, PSOSampler) else sampler


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
