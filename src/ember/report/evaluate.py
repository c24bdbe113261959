"""The best checkpoint on the test split, for the report: confusion matrix, per-class precision
and recall, the most confused examples (classification); predicted against true values, residuals
and maps of gridded targets (regression).

The model's outputs come from the run's Evaluator (ember.train.evaluator: its device, precision and
tested weights), the same that scored the final test: after `ember train` the trainer's own;
`ember report RUN` builds one from the best checkpoint (ember.rundir.loading.load_run) and the rebuilt data.
"""

import math
from collections.abc import Callable

import numpy as np
import torch

from ember.data import EpochLoader
from ember.report.fields import field_panel, png_data_uri
from ember.scoring.units import physical_targets

MAX_SAMPLES = 20000  # the report's evaluation stops here: it shows a picture, not a benchmark
# Outputs and targets kept for the scatter, histogram and sample panels, and those of one batch:
# counted in values, so that a split of global fields takes megabytes (the error maps are sums
# and see every sample up to MAX_SAMPLES).
KEPT_VALUES, BATCH_VALUES = 2**23, 2**22
SCATTER_POINTS = 2000
EXAMPLES = 8


def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor], data, spec, batch_size: int = 512, references: dict | None = None
) -> dict:
    """Outputs of `forward` (a batch of inputs -> the model's raw outputs: Evaluator.forward) on
    `data` (a TensorData or Dataset), as numpy arrays. For gridded regression targets, also the
    error of the model and of each of `references` (name -> predictions in physical units from a
    batch of inputs: the baselines) per grid point."""
    targets_size = math.prod(spec.target_shape) if spec.target_shape else 1
    keep = max(1, min(MAX_SAMPLES, KEPT_VALUES // max(1, targets_size)))
    loader = EpochLoader(
        data, max(1, min(batch_size, BATCH_VALUES // max(1, targets_size, math.prod(spec.input_shape)))), shuffle=False
    )
    loader.set_epoch(0, 0)
    outs, targets, seen, kept = [], [], 0, 0
    gridded = spec.task == "regression" and len(spec.target_shape) >= 2 and min(spec.target_shape[-2:]) >= 2
    grid = GridErrors() if gridded else None
    with torch.inference_mode():
        for x, y in loader:
            out = forward(x).float().cpu()
            y = y.cpu()
            if spec.task != "classification" and out.numel() == y.numel():
                # Pictures in the data's units: the model trained on standardized targets.
                out, y = physical_targets(out.reshape(y.shape), spec), physical_targets(y, spec)
            if grid is not None and out.shape == y.shape:
                grid.add("model", out, y)
                for name, predict in (references or {}).items():
                    grid.add(name, predict(x).float().cpu().reshape(y.shape), y)
            if kept < keep:
                outs.append(out[: keep - kept])
                targets.append(y[: keep - kept])
                kept += len(outs[-1])
            seen += len(y)
            if seen >= MAX_SAMPLES or (kept >= keep and grid is None):
                break
    result = {"output": torch.cat(outs).numpy(), "target": torch.cat(targets).numpy(), "truncated": kept < len(data)}
    if grid is not None and grid.n:
        result["grid"] = grid.maps()
    return result


class GridErrors:
    """Sums of the error and its square per grid point and variable, per predictor, over the
    finite errors only: a target missing at some times (contract C1) leaves those times out, and
    a point missing at every time (a mask) comes out NaN."""

    def __init__(self):
        self.sums: dict[str, list] = {}

    def add(self, name: str, pred: torch.Tensor, true: torch.Tensor) -> None:
        err = (
            (pred.double() - true.double()).reshape(len(true), true.shape[1], *true.shape[-2:])
            if true.ndim > 3
            else (pred.double() - true.double())
        )
        ok = torch.isfinite(err)
        err = torch.where(ok, err, torch.zeros_like(err))
        s = self.sums.setdefault(name, [0.0, 0.0, 0])
        s[0] = s[0] + err.sum(0)
        s[1] = s[1] + (err * err).sum(0)
        s[2] = s[2] + ok.sum(0)

    @property
    def n(self) -> int:
        return len(self.sums)

    def maps(self) -> dict[str, dict[str, np.ndarray]]:
        """{predictor: {"bias": (C, H, W), "rmse": (C, H, W)}} over the samples seen."""
        out = {}
        for k, (total, squares, count) in self.sums.items():
            n = torch.where(count > 0, count.double(), torch.full_like(count, float("nan"), dtype=torch.float64))
            out[k] = {"bias": (total / n).numpy(), "rmse": (squares / n).sqrt().numpy()}
        return out


def classification(ev: dict, spec, data) -> dict:
    logits, y = ev["output"], ev["target"].astype(np.int64)
    k = int(spec.num_classes)
    if logits.ndim > 2:  # per-pixel classes: (N, C, ...) -> (N*..., C)
        logits = np.moveaxis(logits, 1, -1).reshape(-1, k)
        y = y.reshape(-1)
    pred = logits.argmax(axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
    names = list(spec.class_names or [str(i) for i in range(k)])
    out = {
        "labels": names,
        "confusion": cm.tolist(),
        "precision": [round(float(v), 4) for v in precision],
        "recall": [round(float(v), 4) for v in recall],
        "support": cm.sum(1).tolist(),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "n": len(y),
    }
    if ev["output"].ndim == 2:
        out["examples"] = confused_examples(ev["output"], ev["target"].astype(np.int64), data, spec, names)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confused_examples(logits: np.ndarray, y: np.ndarray, data, spec, names: list[str]) -> list[dict]:
    """The wrong predictions made with the most confidence, with their inputs drawn: images as
    PNG, signals as small line charts; feature vectors are not drawn."""
    shape = tuple(spec.input_shape)
    kind = (
        "image"
        if len(shape) == 3 and shape[0] in (1, 3, 4) and min(shape[1:]) >= 4
        else "signal"
        if len(shape) == 2 and shape[1] >= 8
        else None
    )
    if kind is None:
        return []
    prob = _softmax(logits)
    pred = prob.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-prob[wrong, pred[wrong]])][:EXAMPLES]
    examples = []
    for i in order:
        x = _input(data, int(i))
        if x is None:
            continue
        x = _denormalize(x, spec)
        item = {
            "index": int(i),
            "true": names[int(y[i])],
            "pred": names[int(pred[i])],
            "p": round(float(prob[i, pred[i]]), 3),
        }
        if kind == "image":
            item["png"] = png_data_uri(_to_uint8_image(x))
        else:
            item["signal"] = [[round(float(v), 4) for v in ch] for ch in x[:4]]
        examples.append(item)
    return examples


def _input(data, i: int) -> np.ndarray | None:
    try:
        x = data.x[i] if hasattr(data, "x") else data[i][0]
        return torch.as_tensor(x).float().cpu().numpy()
    except Exception:
        return None


def _denormalize(x: np.ndarray, spec) -> np.ndarray:
    if spec.mean and spec.std and len(spec.mean) == x.shape[0] == len(spec.std):
        shape = (-1,) + (1,) * (x.ndim - 1)
        return x * np.asarray(spec.std, dtype=np.float32).reshape(shape) + np.asarray(
            spec.mean, dtype=np.float32
        ).reshape(shape)
    return x


def _to_uint8_image(x: np.ndarray) -> np.ndarray:
    """(C, H, W) floats -> (H, W) or (H, W, 3) uint8, stretched to the sample's own range."""
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    img = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)


def regression(ev: dict, spec) -> dict:
    out, y = ev["output"].astype(np.float64), ev["target"].astype(np.float64)
    pred, true = out.reshape(-1), y.reshape(-1)
    if pred.size != true.size:
        return {"error": f"the model's outputs ({out.shape}) do not match the targets ({y.shape})"}
    finite = np.isfinite(pred) & np.isfinite(true)
    pred, true = pred[finite], true[finite]
    resid = pred - true
    rng = np.random.default_rng(0)
    pick = rng.choice(pred.size, SCATTER_POINTS, replace=False) if pred.size > SCATTER_POINTS else np.arange(pred.size)
    lo, hi = np.percentile(resid, [0.5, 99.5]) if resid.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(resid, lo, hi), bins=40, range=(lo, hi))
    ss_res, ss_tot = float((resid**2).sum()), float(((true - true.mean()) ** 2).sum()) if true.size else 0.0
    result = {
        "scatter": [[_r(true[i]), _r(pred[i])] for i in pick],
        "hist": {"edges": [_r(e) for e in edges], "counts": counts.tolist()},
        "n": len(y),
        "values": int(pred.size),
        "rmse": math.sqrt(ss_res / max(pred.size, 1)),
        "mae": float(np.abs(resid).mean()) if resid.size else float("nan"),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "clipped": int(((resid < lo) | (resid > hi)).sum()),
    }
    target_shape = tuple(spec.target_shape)
    if len(target_shape) >= 2 and min(target_shape[-2:]) >= 4 and out.shape[1:] == target_shape:
        result["maps"] = maps(out, y, spec)
    if ev.get("grid"):
        result["error_maps"] = error_maps(ev["grid"], spec)
    return result


def error_maps(grid: dict[str, dict[str, np.ndarray]], spec) -> list[dict]:
    """Per variable, the mean bias and the RMSE of each predictor (the model, the baselines) per
    grid point, as panels (report.fields) on one colour scale per variable and quantity. Points
    masked in the targets (NaN) stay NaN and are drawn as no data."""
    out = []
    first = next(iter(grid.values()))["bias"]
    channels = first.shape[0] if first.ndim == 3 else 1

    for c in range(channels):
        def field(name, kind, c=c):
            a = grid[name][kind]
            return a[c] if a.ndim == 3 else a

        b_max = _finite_max(np.abs(field(n, "bias")) for n in grid)
        r_max = _finite_max(field(n, "rmse") for n in grid)
        units = spec.target_units[c] if getattr(spec, "target_units", None) and c < len(spec.target_units) else ""
        item = {
            "variable": spec.target_name(c),
            "units": units,
            "bias_max": _r(b_max),
            "rmse_max": _r(r_max),
            "predictors": [],
        }
        for name in grid:
            bias, rmse = field(name, "bias"), field(name, "rmse")
            item["predictors"].append({
                "name": name,
                "mean_bias": _r(float(np.nanmean(bias))) if np.isfinite(bias).any() else None,
                "mean_rmse": _r(float(np.sqrt(np.nanmean(rmse**2)))) if np.isfinite(rmse).any() else None,
                "bias": field_panel(bias, spec, -b_max, b_max, True, units),
                "rmse": field_panel(rmse, spec, 0.0, r_max, False, units),
            })
        out.append(item)
    return out


def _finite_max(arrays) -> float:
    """The largest finite value over `arrays`, 1 where there is none or it is 0 (a scale's end)."""
    best = 0.0
    for a in arrays:
        a = np.asarray(a)
        if np.isfinite(a).any():
            best = max(best, float(np.nanmax(np.where(np.isfinite(a), a, np.nan))))
    return best or 1.0


def _r(v: float) -> float:
    return float(f"{float(v):.5g}")


def maps(out: np.ndarray, y: np.ndarray, spec=None, n: int = 3) -> list[dict]:
    """Target, prediction and error of the first channel of a few gridded samples, as panels
    (report.fields: north up, axes, colour bar; masked points as no data)."""
    rows = []
    units = (getattr(spec, "target_units", None) or [""])[0] or ""
    for i in range(min(n, len(y))):
        t = y[i].reshape(-1, *y.shape[-2:])[0]
        p = out[i].reshape(-1, *out.shape[-2:])[0]
        both = np.concatenate([t[np.isfinite(t)], p[np.isfinite(p)]])
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        err = p - t
        e = _finite_max([np.abs(err)])
        rows.append({
            "index": i,
            "variable": spec.target_name(0) if hasattr(spec, "target_name") else "",
            "range": [_r(lo), _r(hi)],
            "error_max": _r(e),
            "true": field_panel(t, spec, lo, hi, False, units),
            "pred": field_panel(p, spec, lo, hi, False, units),
            "error": field_panel(err, spec, -e, e, True, units),
        })
    return rows
