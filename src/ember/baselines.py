"""The predictions that need no training, scored beside every model: a number without a
reference is not a result.

- regression: the train split's mean of each output element (`mean` for tables, `climatology` for
  fields: the mean of each grid point and variable); the input itself where targets are the
  inputs' own variables on the same grid (`identity`: the uncorrected field of a bias
  correction; `persistence` when forecasting `data.lead` steps ahead);
- classification: the train split's most frequent class (`majority`).

They go through the model's own metrics (physical units, per variable), on the same batches. The
skill score compares the model with the best of them: 1 - MSE_model / MSE_baseline, where MSE is in
standardized units averaged over variables, so that kelvin do not outweigh mm/day.
"""

import math

import numpy as np
import torch

from ember.data.lazy import LazyDataset
from ember.data.loaders import TensorData
from ember.metrics import build_metrics
from ember.units import raw_inputs


def reference(splits):
    """What the baselines of this data predict from: the climatology (regression) or the
    majority class (classification); None where there is none to compute."""
    if splits.spec.task == "classification":
        return majority(splits) if not splits.spec.target_shape else None
    return climatology(splits)


def climatology(splits) -> torch.Tensor | None:
    """The train split's mean of each target element, in physical units (regression), or None
    where its targets are not numbers."""
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
        for y in _targets(train):
            total, n = total + y.double().sum(0), n + len(y)
        return total / n if n else None
    if spec.target_mean is not None:  # standardized in memory: back to physical units
        c = spec.target_channels
        shape = (c,) + (1,) * (mean.ndim - 1) if mean.ndim else (1,)
        mean = mean * torch.tensor(spec.target_std, dtype=torch.float64).reshape(shape) + torch.tensor(spec.target_mean, dtype=torch.float64).reshape(shape)
    return mean


def majority(splits) -> int | None:
    """The train split's most frequent class, or None where it has no labels."""
    train = splits.train
    if isinstance(train, TensorData):
        y = train.y
    elif isinstance(train, LazyDataset):
        y = train.labels()
    else:
        y = torch.cat(list(_targets(train)) or [torch.zeros(0, dtype=torch.long)])
    if y is None or len(y) == 0:
        return None
    return int(np.bincount(np.asarray(torch.as_tensor(y).reshape(-1).long().cpu())).argmax())


def _targets(data, batch_size: int = 512):
    """The targets of a Dataset yielding (x, y), batch by batch."""
    from torch.utils.data import DataLoader

    for _, y in DataLoader(data, batch_size=batch_size):
        yield torch.as_tensor(y)


def names(spec) -> list[str]:
    """The baselines this data has, in the order they are reported."""
    if spec.task == "classification":
        return ["majority"]
    out = ["climatology" if len(spec.target_shape) >= 2 else "mean"]
    if spec.identity_channels is not None:
        out.append("persistence" if spec.lead else "identity")
    return out


def predict(name: str, x: torch.Tensor, spec, reference, n: int) -> torch.Tensor:
    """Baseline `name`'s predictions for a batch of (standardized) inputs `x`, in physical units
    (regression) or as one-hot scores (classification); `reference` is the climatology or class."""
    if name == "majority":
        return torch.nn.functional.one_hot(torch.full((n,), reference, dtype=torch.long, device=x.device), spec.num_classes).float()
    if name in ("mean", "climatology"):
        return reference.to(x.device).expand(n, *reference.shape)
    # identity / persistence: the inputs' own variables, back in their units.
    return raw_inputs(x.double(), spec)[:, spec.identity_channels]


def score(loader, spec, reference, device, to_device=lambda t: t) -> dict[str, dict[str, float]]:
    """Each baseline's metrics over one evaluation loader: {baseline: {metric: value}}."""
    if reference is None:
        return {}
    wanted = names(spec)
    clim = reference if spec.task == "regression" else None
    metrics = {name: build_metrics(spec, clim).to(device) for name in wanted}
    for x, y in loader:
        x, y = to_device(x), to_device(y)
        for name, m in metrics.items():
            pred = predict(name, x, spec, reference, len(y))
            if spec.task == "classification":
                m.update(pred, y)
            else:  # the targets come standardized, the baselines in physical units
                m.update(pred, m.physical(y), standardized=False)
    return {name: defined(name, {k: float(v) for k, v in m.compute().items()}) for name, m in metrics.items()}


def defined(name: str, metrics: dict[str, float]) -> dict[str, float]:
    """A baseline's metrics without those it has no value for: the climatology has no anomaly,
    so its anomaly correlation is undefined (not 0); one class has no top-5 (ties decide it)."""
    undefined = {"climatology": "acc", "majority": "top5"}.get(name)
    return {k: v for k, v in metrics.items() if k.split("/")[0] != undefined}


def score_run(trainer) -> dict[str, dict[str, float]]:
    """Every baseline on the trainer's validation and test splits: {baseline: {split/metric: v}}."""
    out: dict[str, dict[str, float]] = {}
    for split, loader in (("val", trainer.val_loader), ("test", trainer.test_loader)):
        if loader is None:
            continue
        for name, metrics in score(loader, trainer.spec, trainer.reference, trainer.device, trainer.to_device).items():
            out.setdefault(name, {}).update({f"{split}/{k}": v for k, v in metrics.items()})
    return out


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


def verdict(final: dict[str, float], base: dict[str, dict[str, float]], spec) -> dict | None:
    """The model against its best baseline on test (val where there is no test split):
    {"split", "best", "skill" (regression), "beaten"}."""
    split = "test" if any(k.startswith("test/") for k in final) else "val"

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
    return f"warning: the model does not beat the {best} baseline on {split} ({skill_part}{metric} {mine:.4g} vs {theirs:.4g}); train longer, change the model, or check the data"


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
    rows = {f"model/{k.split('/', 1)[1]}": v for k, v in final.items() if k.startswith(split + "/") and k != f"{split}/loss"}
    for name, metrics in base.items():
        rows |= {f"{name}/{k.split('/', 1)[1]}": v for k, v in metrics.items() if k.startswith(split + "/")}
    return rows


def show(console, heading: str, metrics: dict, base: dict, verdict: dict | None, spec) -> None:
    """The metrics table, the model beside its baselines, and a warning where it does not beat them."""
    console.table(heading, metrics)
    if verdict:
        console.table(title(spec, verdict["split"]), table(metrics, base, verdict["split"]))
        if line := warning(verdict, metrics, base):
            console.print(line)
