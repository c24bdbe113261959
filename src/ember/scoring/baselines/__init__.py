"""The predictions that need no training, scored beside every model: a number without a
reference is not a result. The names (contract C3), in the order they are reported:

- `climatology` (fields, and any data with times): the train split's mean of each target
  element per calendar slot of the valid time: per calendar month for monthly data, per day of
  the year smoothed over 31 days for daily data, and per hour of the day too for sub-daily data
  (seasonal.py); the reference of every anomaly correlation (`acc`), WeatherBench 2's
  convention. `mean`: the same without time (the all-time train mean), for tables;
- `persistence` (forecasting `data.lead` steps ahead: the input at the forecast's start) or
  `identity` (targets are the inputs' own variables at the same time: the uncorrected field);
- `linear`: ridge regression of the targets on the inputs, closed form, penalty chosen on
  validation (vectors and tables; AR(p) where the inputs are lags; linear.py);
- bias correction (targets the inputs' variables on the same grid, no lead): `linear_scaling`
  (mean shift per grid point, variable and calendar month; a ratio for precipitation) and
  `quantile_mapping` (empirical, per grid point and variable; quantile.py), with
  `quantile_delta_mapping`, the trend-preserving variant, on request (baselines.qdm=true);
  their distributions are scored beyond RMSE (extremes.py);
- classification: `majority`, the train split's most frequent class.

All are fitted in one pass over the train split (fitting.py; the ridge penalty takes one pass
over validation). A baseline that cannot apply is left out with one line saying why. They go
through the model's own metrics (physical units, per variable), on whole splits in order
(scoring.py). The skill score compares the model with the best of them: 1 - MSE_model /
MSE_baseline, where MSE is in standardized units averaged over variables, so that kelvin do not
outweigh mm/day.
"""

import math

import torch

from ember.data.lazy import LazyDataset
from ember.data.loaders import TensorData
from ember.scoring.units import raw_inputs


def reference(splits, qdm: bool = False):
    """Every baseline of `splits` fitted on its train split (fitting.Fitted): what the trainer
    keeps as `trainer.reference` and scores at the end."""
    return fit(splits, qdm)


def climatology(splits) -> torch.Tensor | None:
    """The train split's all-time mean of each target element, in physical units (regression),
    or None where its targets are not numbers (rollout's and older callers' reference)."""
    spec, train = splits.spec, splits.train
    if spec.task != "regression":
        return None
    if isinstance(train, TensorData) and train.y.is_floating_point():
        mean = train.y.double().mean(0).cpu()
    elif isinstance(train, LazyDataset) and train.scan().target_sums is not None:
        return torch.from_numpy(train.target_mean_field()).double()  # read raw: already physical
    elif isinstance(train, (TensorData, LazyDataset)):
        return None
    else:  # a user's own Dataset (ember.fit): one pass over its targets, as they come
        total, n = 0.0, 0
        for y in targets(train):
            total, n = total + y.double().sum(0), n + len(y)
        return total / n if n else None
    if spec.target_mean is not None:  # standardized in memory: back to physical units
        c = spec.target_channels
        shape = (c,) + (1,) * (mean.ndim - 1) if mean.ndim else (1,)
        mean = mean * torch.tensor(spec.target_std, dtype=torch.float64).reshape(shape) + torch.tensor(
            spec.target_mean, dtype=torch.float64
        ).reshape(shape)
    return mean


def names(spec) -> list[str]:
    """The baselines that need no fitting beyond a mean (what model.residual starts from and the
    report's maps name); `fitting.candidates` lists them all."""
    if spec.task == "classification":
        return ["majority"]
    out = ["climatology" if len(spec.target_shape) >= 2 else "mean"]
    if spec.identity_channels is not None:
        out.append("persistence" if spec.lead else "identity")
    return out


def predict(name: str, x: torch.Tensor, spec, reference, n: int) -> torch.Tensor:
    """(With an all-time mean as `reference`; scoring.predict takes fitted baselines and times.)
    Baseline `name`'s predictions for a batch of (standardized) inputs `x`, in physical units
    (regression) or as one-hot scores (classification); `reference` is the climatology or class."""
    if name == "majority":
        return torch.nn.functional.one_hot(
            torch.full((n,), reference, dtype=torch.long, device=x.device), spec.num_classes
        ).float()
    if name in ("mean", "climatology"):
        return reference.to(x.device).expand(n, *reference.shape)
    # identity / persistence: the inputs' own variables, back in their units.
    return raw_inputs(x.double(), spec)[:, spec.identity_channels]


def standardized_mse(metrics: dict[str, float], spec) -> float | None:
    """MSE in standardized units averaged over target channels, from a split's metrics."""
    c, std = spec.target_channels, spec.target_std or [1.0] * spec.target_channels
    if c == 1:
        return metrics["mse"] / std[0] ** 2 if "mse" in metrics else None
    rmses = [metrics.get(f"rmse/{spec.target_name(i)}") for i in range(c)]
    if any(r is None for r in rmses):
        return None
    return sum((r / s) ** 2 for r, s in zip(rmses, std)) / c


def skill(model_mse: float, baseline_mse: float) -> float:
    """1 - MSE_model / MSE_baseline: 1 is perfect, 0 no better than the baseline, < 0 worse."""
    return 1.0 - model_mse / baseline_mse if baseline_mse > 0 else (0.0 if model_mse == 0 else -math.inf)


def compare(model: dict[str, float], baselines: dict[str, dict[str, float]], spec) -> dict | None:
    """The best baseline of one split and the model's skill against it, or None (classification:
    the best baseline by accuracy, no skill score)."""
    if not baselines:
        return None
    if spec.task == "classification":
        best = max(baselines, key=lambda b: baselines[b].get("accuracy", 0.0))
        return {"best": best, "beaten": model.get("accuracy", 0.0) > baselines[best].get("accuracy", 0.0)}
    mse = {b: standardized_mse(m, spec) for b, m in baselines.items()}
    best = min(mse, key=lambda b: mse[b] if mse[b] is not None else float("inf"))
    mine = standardized_mse(model, spec)
    if mine is None or mse[best] is None:
        return None
    s = skill(mine, mse[best])
    return {"best": best, "skill": s, "beaten": s > 0}


def verdict(final: dict[str, float], base: dict[str, dict[str, float]], spec, split: str | None = None) -> dict | None:
    """The model against its best baseline on `split` (default test, val where there is no test
    split): {"split", "best", "skill" (regression), "beaten"}."""
    split = split or ("test" if any(k.startswith("test/") for k in final) else "val")

    def of_split(m: dict[str, float]) -> dict[str, float]:
        return {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(split + "/")}

    result = compare(of_split(final), {b: of_split(m) for b, m in base.items()}, spec)
    return None if result is None else {"split": split, **result}


def warning(v: dict | None, final: dict[str, float], base: dict[str, dict[str, float]]) -> str | None:
    """One line when the model does not beat its best baseline, naming it."""
    if not v or v["beaten"]:
        return None
    split, best = v["split"], v["best"]
    metric = "rmse" if f"{split}/rmse" in final else "accuracy"
    mine, theirs = final.get(f"{split}/{metric}"), base[best].get(f"{split}/{metric}")
    skill_part = f"skill {v['skill']:.3f}, " if "skill" in v else ""
    return (
        f"warning: the model does not beat the {best} baseline on {split} ({skill_part}{metric} {mine:.4g} vs "
        f"{theirs:.4g}); train longer, change the model, or check the data"
    )


def title(spec, split: str) -> str:
    """The comparison table's title: the split, and the units for regression ('t2m in K, pr in
    mm/day' where the data names them)."""
    if spec.task == "classification":
        return f"beside the baselines on {split}"
    named = [f"{spec.target_name(c)} in {u}" for c, u in enumerate(spec.target_units or []) if u]
    units = ", ".join(named) if named else "in the data's units"
    return f"beside the baselines on {split} ({units})"


def table(final: dict[str, float], base: dict[str, dict[str, float]], split: str) -> dict[str, float]:
    """The model's metrics on `split` beside each baseline's, keyed `column/metric` for Console.table."""
    rows = {
        f"model/{k.split('/', 1)[1]}": v for k, v in final.items() if k.startswith(split + "/") and k != f"{split}/loss"
    }
    for name, metrics in base.items():
        rows |= {f"{name}/{k.split('/', 1)[1]}": v for k, v in metrics.items() if k.startswith(split + "/")}
    return rows


def show(console, heading: str, metrics: dict, base: dict, verdict: dict | None, spec, notes: list[str] = ()) -> None:
    """The metrics table, the model beside its baselines (after `notes` on them: how the
    climatology is taken, which baselines are left out and why), and a warning where the model
    does not beat the best of them."""
    console.table(heading, metrics)
    for line in notes:
        console.print(line)
    if verdict:
        console.table(title(spec, verdict["split"]), table(metrics, base, verdict["split"]))
        if line := warning(verdict, metrics, base):
            console.print(line)


def lines(fitted) -> list[str]:
    """What the run says of its baselines: the climatology's kind, each one left out and why."""
    if not isinstance(fitted, Fitted):
        return []
    out = [f"baselines: {note}" for note in fitted.notes]
    out += [f"baselines: {name} left out: {why}" for name, why in fitted.skipped.items()]
    if "linear" in fitted.names:
        out.append(
            f"baselines: linear is ridge regression, penalty {fitted.alpha:g} x the train sample count "
            "(chosen on validation)"
        )
    return out


# The fitted baselines and their scoring (the submodules import nothing from here).
from ember.scoring.baselines.fitting import Fitted, bias_correction, candidates, fit, majority, targets  # noqa: E402
from ember.scoring.baselines.scoring import (  # noqa: E402
    batch_climatology,
    defined,
    model_predictor,
    predictors,
    score,
    score_run,
)

__all__ = [
    "Fitted", "batch_climatology", "bias_correction", "candidates", "compare", "defined", "fit", "lines", "majority",
    "model_predictor", "predictors", "score", "score_run", "show", "verdict", "warning",
]  # fmt: skip
