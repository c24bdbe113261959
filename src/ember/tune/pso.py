"""Particle swarm optimization as an Optuna sampler (Optuna has none).

Each numeric parameter is mapped to [0, 1] (log-scaled where the distribution is log). A swarm of
`particles` moves through that cube; trial k is a move of particle k mod `particles`:

    v <- w v + c1 r1 (personal best - x) + c2 r2 (swarm best - x),  |v| <= max_velocity
    x <- clip(x + v, 0, 1)      (a particle that hits a wall loses that component of its speed)

with Clerc and Kennedy's constriction values w = 0.7298, c1 = c2 = 1.49618 by default. The swarm's
state is not kept in the sampler: each trial stores its particle, position and velocity in its
system attributes (through the storage given to `bind`), and the next move is computed from the
study's trials, so any number of processes sharing a storage drive one swarm, and a resumed
study continues where it stopped.
Categorical parameters (and the first trial, before the space is known) are drawn at random.
"""

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

PARTICLE, POSITION, VELOCITY = "pso:particle", "pso:position", "pso:velocity"


class PSOSampler(BaseSampler):
    def __init__(
        self,
        *,
        particles: int = 10,
        inertia: float = 0.7298,
        cognitive: float = 1.49618,
        social: float = 1.49618,
        max_velocity: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if particles < 1:
            raise ValueError(f"particles must be at least 1, got {particles}")
        self.particles, self.inertia, self.cognitive, self.social = particles, inertia, cognitive, social
        self.max_velocity = max_velocity
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._space = IntersectionSearchSpace()
        self.storage: optuna.storages.BaseStorage | None = None  # see bind

    def reseed_rng(self) -> None:
        self._rng = np.random.RandomState()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: "optuna.Study", trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {
            name: d
            for name, d in self._space.calculate(study).items()
            if isinstance(d, (FloatDistribution, IntDistribution)) and not d.single()
        }

    def sample_relative(
        self, study: "optuna.Study", trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        self._raise_error_if_multi_objective(study)
        names = sorted(search_space)
        trials = study.get_trials(deepcopy=False)
        swarm = [t for t in trials if PARTICLE in t.system_attrs and t.number != trial.number]
        particle = len(swarm) % self.particles
        own = [t for t in swarm if t.system_attrs[PARTICLE] == particle]
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]

        if own:
            last = max(own, key=lambda t: t.number)
            x = self._vector(last.system_attrs[POSITION], names)
            v = self._vector(last.system_attrs[VELOCITY], names, fill=0.0)
            numbers = {t.number for t in done}
            own_done = [t for t in own if t.number in numbers]
            personal = (
                self._position(min(own_done, key=lambda t: sign * t.value), names, search_space) if own_done else x
            )
            best = min(done, key=lambda t: sign * t.value) if done else None
            swarm_best = self._position(best, names, search_space) if best else personal
            r1, r2 = self._rng.uniform(size=len(names)), self._rng.uniform(size=len(names))
            v = self.inertia * v + self.cognitive * r1 * (personal - x) + self.social * r2 * (swarm_best - x)
            v = np.clip(v, -self.max_velocity, self.max_velocity)
            x = x + v
            wall = (x < 0) | (x > 1)
            x, v = np.clip(x, 0.0, 1.0), np.where(wall, 0.0, v)
        else:  # the particle's first position: uniform in the cube, at rest
            x, v = self._rng.uniform(size=len(names)), np.zeros(len(names))

        position, velocity = dict(zip(names, map(float, x))), dict(zip(names, map(float, v)))
        self._store(study, trial, {PARTICLE: particle, POSITION: position, VELOCITY: velocity})
        return {n: _from_unit(xi, search_space[n]) for n, xi in zip(names, x)}

    def bind(self, storage: optuna.storages.BaseStorage) -> "PSOSampler":
        """The storage of the study this sampler samples for: a sampler gets each trial frozen, and
        writing its state needs the storage (Optuna's own samplers reach the study's private one)."""
        self.storage = storage
        return self

    def _store(self, study: "optuna.Study", trial: FrozenTrial, attrs: dict[str, Any]) -> None:
        if self.storage is None:
            raise RuntimeError("PSOSampler.bind(storage) must be given the study's storage before it samples")
        study_id = self.storage.get_study_id_from_name(study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        for key, value in attrs.items():
            self.storage.set_trial_system_attr(trial_id, key, value)

    def sample_independent(
        self, study: "optuna.Study", trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _vector(self, stored: dict, names: list[str], fill: float | None = None) -> np.ndarray:
        """A stored position or velocity; a parameter new to the space starts at random (or `fill`)."""
        return np.array(
            [stored[n] if n in stored else (fill if fill is not None else self._rng.uniform()) for n in names]
        )

    def _position(self, t: FrozenTrial, names: list[str], space: dict[str, BaseDistribution]) -> np.ndarray:
        """Where a trial lies in the cube: its stored position, else its parameters mapped there."""
        stored = t.system_attrs.get(POSITION, {})
        return np.array(
            [
                stored[n] if n in stored else _to_unit(t.params[n], space[n]) if n in t.params else self._rng.uniform()
                for n in names
            ]
        )


def _bounds(d: FloatDistribution | IntDistribution) -> tuple[float, float]:
    return (math.log(d.low), math.log(d.high)) if d.log else (float(d.low), float(d.high))


def _to_unit(value: float, d: FloatDistribution | IntDistribution) -> float:
    lo, hi = _bounds(d)
    v = math.log(value) if d.log else float(value)
    return min(max((v - lo) / (hi - lo), 0.0), 1.0)


def _from_unit(x: float, d: FloatDistribution | IntDistribution) -> float | int:
    lo, hi = _bounds(d)
    v = lo + float(x) * (hi - lo)
    v = math.exp(v) if d.log else v
    step = d.step
    if step is not None and not d.log:
        v = d.low + round((v - d.low) / step) * step
    v = min(max(v, d.low), d.high)
    return round(v) if isinstance(d, IntDistribution) else float(v)
