"""The search space: `tune.space` entries -> Optuna distributions -> config overrides.

    tune:
      space:
        optim.lr:    {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
        model.width: {type: int, low: 16, high: 256, step: 16}
        optim.name:  {type: categorical, choices: [adam, adamw, sgd]}

Keys may also be nested (`optim: {lr: {type: float, ...}}`), which is what a YAML file given to
`--config` or `++tune.space.optim.lr=...` produce: an entry is the first mapping that has `type`.
A key that names a group (`model`, `optim`, ...) or `model.name`/`data.name`/`optim.name`/
`sched.name` selects that group's option, so the option's own defaults come with it.
"""

import math
from dataclasses import dataclass
from typing import Any

import optuna.distributions as D
from omegaconf import DictConfig, OmegaConf

from ember.config import GROUPS, compose, group_options, override_value
from ember.errors import ConfigError

TYPES = ("float", "int", "categorical")
FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}
# Space keys that select a group's option rather than set a value.
SELECTORS = {g: g for g in GROUPS if g != "experiment"} | {f"{g}.name": g for g in ("model", "data", "optim", "sched")}
_MISSING = object()


@dataclass(frozen=True)
class Param:
    key: str  # the config key, also the Optuna parameter name
    distribution: D.BaseDistribution

    @property
    def group(self) -> str | None:
        """The group this parameter selects an option of, if it does."""
        return SELECTORS.get(self.key)

    def override(self, value: Any) -> str:
        if self.group:
            return f"{self.group}={value}"
        return f"{self.key}={override_value(value)}"


def parse_space(space: Any) -> list[Param]:
    """`tune.space` as Params; a bad entry is a ConfigError naming the key and what to write."""
    if isinstance(space, DictConfig):
        space = OmegaConf.to_container(space, resolve=True)
    if not space:
        raise ConfigError(
            "tune.space is empty; give at least one key to search, e.g. "
            "ember tune 'tune.space.optim.lr={type:float,low:1e-4,high:1e-1,log:true}', "
            "or a tune.space mapping in --config FILE"
        )
    return [_param(key, entry) for key, entry in _entries(space, "")]


def _entries(node: dict, prefix: str):
    for key, value in node.items():
        full = f"{prefix}{key}"
        if not isinstance(value, dict):
            raise ConfigError(
                f"tune.space.{full} must be a mapping like {{type: float, low: 0.001, high: 0.1}}, got {value!r}"
            )
        if "type" in value:
            yield full, value
        else:
            yield from _entries(value, full + ".")


def _param(key: str, entry: dict) -> Param:
    where = f"tune.space.{key}"
    kind = entry["type"]
    if kind not in TYPES:
        raise ConfigError(f"{where}: unknown type {kind!r}; use one of: {', '.join(TYPES)}")
    unknown = set(entry) - FIELDS[kind] - {"type"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {min(unknown)!r} for type {kind}; its fields are: "
            f"{', '.join(sorted(FIELDS[kind]))}"
        )
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: a categorical needs a non-empty list of choices, e.g. choices: [adam, sgd]")
        bad = [c for c in choices if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad:
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, got {bad[0]!r}")
        return Param(key, D.CategoricalDistribution(choices))
    for bound in ("low", "high"):
        if bound not in entry:
            raise ConfigError(f"{where}: type {kind} needs low and high")
        value = entry[bound]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind == "int" and not isinstance(value, int))
        ):
            raise ConfigError(f"{where}: {bound}={value!r} must be {'an integer' if kind == 'int' else 'a number'}")
    low, high, log, step = entry["low"], entry["high"], bool(entry.get("log", False)), entry.get("step")
    if low > high:
        raise ConfigError(f"{where}: low={low} is above high={high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log=true needs low > 0, got low={low}")
    if step is not None:
        if log:
            raise ConfigError(f"{where}: step and log=true cannot be combined; drop one")
        if (
            isinstance(step, bool)
            or not isinstance(step, (int, float))
            or step <= 0
            or (kind == "int" and not isinstance(step, int))
        ):
            raise ConfigError(f"{where}: step={step!r} must be a positive {'integer' if kind == 'int' else 'number'}")
    if kind == "int":
        return Param(key, D.IntDistribution(low, high, log=log, step=step or 1))
    return Param(key, D.FloatDistribution(float(low), float(high), log=log, step=step))


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """Draw every parameter for an Optuna trial."""
    out = {}
    for p in params:
        d = p.distribution
        if isinstance(d, D.CategoricalDistribution):
            out[p.key] = trial.suggest_categorical(p.key, d.choices)
        elif isinstance(d, D.IntDistribution):
            out[p.key] = trial.suggest_int(p.key, d.low, d.high, step=d.step, log=d.log)
        else:
            out[p.key] = trial.suggest_float(p.key, d.low, d.high, step=d.step, log=d.log)
    return out


def to_overrides(params: list[Param], values: dict[str, Any]) -> list[str]:
    """Group selections first, so the keys of a selected option can be set after them."""
    by_key = {p.key: p for p in params}
    ordered = sorted(values, key=lambda k: by_key[k].group is None)
    return [by_key[k].override(values[k]) for k in ordered]


def grid(params: list[Param], points: int = 5) -> dict[str, list]:
    """The grid sampler's values: choices, every step, or `points` values (log-spaced with log)."""
    out = {}
    for p in params:
        d = p.distribution
        if isinstance(d, D.CategoricalDistribution):
            out[p.key] = list(d.choices)
        elif isinstance(d, D.IntDistribution) and not d.log:
            out[p.key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, D.FloatDistribution) and d.step is not None:
            n = round((d.high - d.low) / d.step)
            out[p.key] = [round(d.low + i * d.step, 12) for i in range(n + 1)]
        else:
            lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
            values = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
            values = [math.exp(v) for v in values] if d.log else values
            out[p.key] = sorted({round(v) for v in values}) if isinstance(d, D.IntDistribution) else values
    size = math.prod(len(v) for v in out.values())
    if size > 100_000:
        raise ConfigError(
            f"tune.sampler=grid: the grid has {size:,} points; give floats a coarser step or use another sampler"
        )
    return out


def validate(params: list[Param], base: list[str]) -> None:
    """Every key exists in the composed config and every value composes, before any trial runs.

    Composes the config with all lows, with all highs, and with every choice of each categorical,
    so an unknown key, a value of the wrong type or an unknown option is found now, not in trial 7.
    """
    cfg = compose(base)
    for p in params:
        if p.group:
            options = group_options(p.group)
            if not isinstance(p.distribution, D.CategoricalDistribution):
                raise ConfigError(
                    f"tune.space.{p.key} picks the {p.group} option: make it {{type: categorical, choices: "
                    f"[...]}} with choices among: {', '.join(options)}"
                )
            bad = [c for c in p.distribution.choices if c not in options]
            if bad:
                raise ConfigError(
                    f"tune.space.{p.key}: {bad[0]!r} is not a {p.group} option; choose among: {', '.join(options)}"
                )
        elif OmegaConf.select(cfg, p.key, default=_MISSING) is _MISSING:
            parent = p.key.rpartition(".")[0]
            node = OmegaConf.select(cfg, parent) if parent else cfg
            valid = ", ".join(str(k) for k in node) if isinstance(node, DictConfig) else ""
            raise ConfigError(
                f"tune.space.{p.key}: the config has no key {p.key!r}"
                + (f"; valid keys of {parent or 'the config'}: {valid}" if valid else "")
            )
        elif isinstance(OmegaConf.select(cfg, p.key), DictConfig):
            raise ConfigError(
                f"tune.space.{p.key}: {p.key} is a section of the config, not a value; search one of its keys"
            )
    samples = [{p.key: _end(p.distribution, 0) for p in params}, {p.key: _end(p.distribution, -1) for p in params}]
    for p in params:
        if isinstance(p.distribution, D.CategoricalDistribution):
            samples += [{**samples[0], p.key: c} for c in p.distribution.choices[1:-1]]
    for values in samples:
        try:
            compose(base + to_overrides(params, values))
        except ConfigError as e:
            shown = " ".join(f"{k}={v}" for k, v in values.items())
            raise ConfigError(f"tune.space does not compose with {shown}: {e}") from None


def _end(d: D.BaseDistribution, i: int):
    if isinstance(d, D.CategoricalDistribution):
        return d.choices[i]
    return d.low if i == 0 else d.high
