"""Beyond RMSE for bias correction: does a corrected field have the observed distribution?

Per variable, for the model and each baseline, on the scored split:
- `p5_bias`, `p50_bias`, `p95_bias`: the 5th, 50th and 95th percentiles over time at each grid
  point, predicted minus observed, averaged over the grid points (signed, in the variable's
  units; a point's missing times leave both percentiles);
- for precipitation (by name: pr, precip, tp, rain, ...; or by units of a flux or mm), the
  wet-day frequency, the fraction of the split's values above 1 mm/day (`wet_days`), beside the
  observed one (`wet_days_observed`, in the model's row).
The values are held in memory to take percentiles: at most MAX_VALUES per predictor, beyond
which an evenly spaced subset of the grid points is kept.
"""

import numpy as np
import torch

from ember.scoring.baselines.quantile import nan_quantiles

PERCENTILES = (5, 50, 95)
MAX_VALUES = 2**24
PRECIP_NAMES = ("pr", "precip", "precipitation", "prcp", "tp", "rain", "rainfall", "ppt", "prect", "tot_prec", "rr")
# 1 mm/day in the units a precipitation variable comes in.
WET_THRESHOLD = {
    "mm/day": 1.0,
    "mm day-1": 1.0,
    "mm d-1": 1.0,
    "mm/d": 1.0,
    "mm": 1.0,
    "kg m-2 s-1": 1 / 86400,
    "kg m**-2 s**-1": 1 / 86400,
    "kg/m2/s": 1 / 86400,
    "mm/s": 1 / 86400,
    "m": 1e-3,
    "m/day": 1e-3,
    "cm/day": 0.1,
}


def is_precipitation(name: str, units: str | None) -> bool:
    """Whether a variable is precipitation, by its name or its units."""
    n, u = name.lower(), (units or "").lower().replace(" ", "")
    return n in PRECIP_NAMES or "precip" in n or u in ("mm/day", "mmday-1", "mmd-1", "kgm-2s-1", "kgm**-2s**-1")


def wet_threshold(units: str | None) -> float | None:
    """1 mm/day in `units`, or None where they are not known (no wet-day frequency then)."""
    u = " ".join((units or "").lower().split())
    return WET_THRESHOLD.get(u, 1.0 if not u else None)


class Distribution:
    """Values of each predictor and of the observations at a subset of the grid points."""

    def __init__(self, spec, n: int):
        self.spec = spec
        c = spec.target_channels
        points = max(1, int(np.prod(spec.target_shape[1:]))) if spec.target_shape else 1
        self.keep = np.arange(points)[:: max(1, -(-n * points // MAX_VALUES))]
        self.values: dict[str, list[np.ndarray]] = {}
        self.channels = c
        units = spec.target_units or [""] * c
        self.precip = {i: wet_threshold(units[i]) for i in range(c) if is_precipitation(spec.target_name(i), units[i])}

    def add(self, name: str, pred: torch.Tensor) -> None:
        """One batch of a predictor ('observed' for the targets), in physical units."""
        a = pred.detach().double().reshape(len(pred), self.channels, -1)[:, :, self.keep]
        self.values.setdefault(name, []).append(a.cpu().numpy().astype(np.float32))

    def scores(self) -> dict[str, dict[str, float]]:
        """{predictor: {metric/variable: value}}."""
        obs = np.concatenate(self.values.get("observed", [np.zeros((0, self.channels, len(self.keep)), np.float32)]))
        if len(obs) < 2:
            return {}
        missing = ~np.isfinite(obs)
        q_obs = {c: _percentiles(obs[:, c]) for c in range(self.channels)}
        out: dict[str, dict[str, float]] = {}
        for name, parts in self.values.items():
            if name == "observed":
                continue
            pred = np.where(missing, np.nan, np.concatenate(parts))
            out[name] = self._one(pred, q_obs)
        wet = {
            f"wet_days_observed{self._suffix(c)}": _wet(obs[:, c], t) for c, t in self.precip.items() if t is not None
        }
        out.setdefault("model", {}).update(wet)
        return out

    def _one(self, pred: np.ndarray, q_obs: dict) -> dict[str, float]:
        row = {}
        for c in range(self.channels):
            q = _percentiles(pred[:, c])
            for i, p in enumerate(PERCENTILES):
                bias = q[i] - q_obs[c][i]
                if np.isfinite(bias).any():
                    row[f"p{p}_bias{self._suffix(c)}"] = float(np.nanmean(bias))
            if self.precip.get(c) is not None:
                row[f"wet_days{self._suffix(c)}"] = _wet(pred[:, c], self.precip[c])
        return row

    def _suffix(self, c: int) -> str:
        return f"/{self.spec.target_name(c)}" if self.channels > 1 else ""


def _percentiles(values: np.ndarray) -> np.ndarray:
    """(len(PERCENTILES), points) percentiles over time of (times, points), NaN-aware."""
    q = nan_quantiles(values, 101)  # levels 0, 0.01, ..., 1
    return q[list(PERCENTILES)]


def _wet(values: np.ndarray, threshold: float) -> float:
    finite = np.isfinite(values)
    return float((values[finite] > threshold).mean()) if finite.any() else float("nan")
