"""Empirical quantile mapping per grid point and variable, and its trend-preserving variant,
quantile delta mapping (Cannon et al. 2015), in torch so that a whole field maps at once.

Both are the ones of the bias-correction literature (Gudmundsson et al. 2012; Cannon et al.
2015), written here instead of taken from a library, after trying two:
- python-cmethods (GPL-3.0, ember is MIT) maps one grid point at a time through
  xarray.apply_ufunc(vectorize=True), needs the whole train and evaluated series in memory as
  DataArrays, and bins the CDFs over the pooled range (`n_quantiles` bins) rather than using the
  train samples themselves; the tests use it as the reference (tests/scoring/test_baselines.py);
- xsdba (Apache-2.0, Ouranos) is the most complete, but pulls numba, statsmodels, dask, pint,
  matplotlib and typer in for what is 40 lines here, and also wants the whole series as xarray.
Here the train split's empirical quantiles (every train sample up to 1001 of them, else 1001
evenly spaced probability levels, linearly interpolated) are tables of shape (levels, points);
a batch maps by a batched searchsorted.

Mapping x (the uncorrected value) at one point: p = F_model(x) on the train period's model
values (ties take the middle of their probabilities), then F_obs^-1(p). Extrapolation: beyond
the train period's model range the correction at the nearest end of the range is held constant
(added; multiplied for precipitation), xsdba's `extrapolation="constant"`. Quantile delta mapping
takes p from the CDF of the evaluated period's own model values and adds (multiplies) the
model's change at that quantile: F_obs^-1(p) + x - F_model^-1(p), so a trend in the evaluated
period survives the correction.
"""

import numpy as np
import torch

MIN_SAMPLES = 20  # train samples per point below which an empirical CDF is not one
MAX_LEVELS = 1001


def levels_for(n: int) -> int:
    return max(2, min(n, MAX_LEVELS))


def nan_quantiles(values: np.ndarray, levels: int) -> np.ndarray:
    """(levels, points) quantiles of each column of (samples, points) at evenly spaced
    probabilities, over its finite values only (NaN where a column has none), interpolated
    linearly as numpy's default."""
    s = np.sort(values, axis=0)  # NaN sort last
    count = np.isfinite(values).sum(0)
    pos = np.linspace(0.0, 1.0, levels)[:, None] * np.maximum(count - 1, 0)[None, :]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0)[None, :])
    cols = np.arange(values.shape[1])[None, :]
    out = s[lo, cols] + (pos - lo) * (s[hi, cols] - s[lo, cols])
    out[:, count == 0] = np.nan
    return out


def cdf(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Probabilities of values `x` (points, n) on quantile tables `q` (points, levels) at evenly
    spaced levels, clamped to [0, 1]; a value tied over several levels takes their middle."""
    p_levels = q.shape[1] - 1

    def side(right: bool) -> torch.Tensor:
        i = torch.searchsorted(q, x, right=right).clamp(1, p_levels)
        lo, hi = q.gather(1, i - 1), q.gather(1, i)
        w = ((x - lo) / (hi - lo)).where(hi > lo, torch.full_like(x, 1.0 if right else 0.0))
        return ((i - 1) + w.clamp(0, 1)) / p_levels

    return (side(False) + side(True)) / 2


def inverse(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Values at probabilities `p` (points, n) of quantile tables `q` (points, levels)."""
    pos = p * (q.shape[1] - 1)
    lo = pos.floor().long().clamp(0, q.shape[1] - 2)
    a, b = q.gather(1, lo), q.gather(1, lo + 1)
    return a + (pos - lo) * (b - a)


class QuantileMap:
    """Quantile tables of the train period: the model's (the uncorrected inputs) and the
    observations' (the targets), per point, with the points that correct by ratio
    (precipitation)."""

    def __init__(self, model_q: np.ndarray, obs_q: np.ndarray, ratio: np.ndarray):
        self.model_q = torch.from_numpy(np.ascontiguousarray(model_q.T)).double()
        self.obs_q = torch.from_numpy(np.ascontiguousarray(obs_q.T)).double()
        self.ratio = torch.from_numpy(ratio).bool()

    def to(self, device) -> "QuantileMap":
        for name in ("model_q", "obs_q", "ratio"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Mapped values of uncorrected `x` (n, points)."""
        xt = x.double().T.contiguous()
        mq, oq = self.model_q.to(x.device), self.obs_q.to(x.device)
        mapped = inverse(oq, cdf(mq, xt))
        low, high = xt < mq[:, :1], xt > mq[:, -1:]
        # Beyond the train range: the correction at the range's end, held constant.
        add_lo, add_hi = xt + (oq[:, :1] - mq[:, :1]), xt + (oq[:, -1:] - mq[:, -1:])
        mul_lo = xt * _ratio(oq[:, :1], mq[:, :1])
        mul_hi = xt * _ratio(oq[:, -1:], mq[:, -1:])
        ratio = self.ratio.to(x.device)[:, None]
        mapped = torch.where(low, torch.where(ratio, mul_lo, add_lo), mapped)
        mapped = torch.where(high, torch.where(ratio, mul_hi, add_hi), mapped)
        return mapped.T

    def delta(self, x: torch.Tensor, sim_q: torch.Tensor) -> torch.Tensor:
        """Quantile delta mapping of `x` (n, points), with `sim_q` (points, levels) the quantiles
        of the evaluated period's own model values."""
        xt = x.double().T.contiguous()
        p = cdf(sim_q.to(x.device), xt)
        obs, hist = inverse(self.obs_q.to(x.device), p), inverse(self.model_q.to(x.device), p)
        ratio = self.ratio.to(x.device)[:, None]
        # Where the model's train quantile is 0 (a dry day), the observed quantile itself.
        scaled = torch.where(hist != 0, obs * xt / hist.where(hist != 0, torch.ones_like(hist)), obs)
        return torch.where(ratio, scaled, obs + xt - hist).T


def _ratio(obs: torch.Tensor, model: torch.Tensor) -> torch.Tensor:
    return torch.where(model != 0, obs / model.where(model != 0, torch.ones_like(model)), torch.ones_like(model))
