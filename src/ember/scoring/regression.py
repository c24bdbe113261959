"""Regression metrics in physical units, per variable, the way scientists report them.

The model trains on standardized targets (data.normalize_target); `update` multiplies its outputs
and the targets back into the data's units before anything is summed, so every number a user sees
is in kelvin, mm/day, or whatever the files hold. Sums are kept in float64 per target channel and
reduced across processes by torchmetrics, so a split evaluated in shares gives the whole-split
value. For every regression:

- mse, mae and rmse pooled over every output element; r2 against the pooled mean, or with
  several target channels the mean of theirs (a pooled r2 over kelvin and mm/day is ~1 always);
- with several target channels, each of them per channel, named by its variable: `rmse/t2m`;
- for fields (targets of shape (C, *grid)): the mean bias, the anomaly correlation coefficient
  against the train split's climatology (`acc`, per sample over the grid, then averaged), and,
  where the grid has latitudes, the cos(latitude)-weighted RMSE (`wrmse`), WeatherBench 2's
  convention; anomaly correlations are latitude-weighted too.
- for fields and vectors (more than one value per sample): `relative_l2`, the mean over samples
  of ||pred - true|| / ||true|| with each norm over all of the sample's values, the neural
  operator papers' error (the FNO's Table 1).

Missing targets (NaN: a mask, or a gap in observations; contract C1) are in no sum and no
count: every metric is over the finite target elements only, per channel, and a point where the
climatology has no value is out of the anomaly correlation.
"""

import math

import torch
from torchmetrics import Metric

from ember.data.spec import DataSpec

CHUNK_BYTES = 2**24
STATES = ("n", "se", "ae", "err", "y", "yy", "wse", "w", "acc", "acc_n")


class RegressionMetrics(Metric):
    full_state_update = False

    def __init__(self, spec: DataSpec, climatology: torch.Tensor | None = None):
        super().__init__()
        c = spec.target_channels
        self.channels, self.names = c, [spec.target_name(i) for i in range(c)]
        self.field = len(spec.target_shape) >= 2
        ones = [1.0] * c
        self.register_buffer(
            "t_mean", torch.tensor(spec.target_mean or [0.0] * c, dtype=torch.float64), persistent=False
        )
        self.register_buffer("t_std", torch.tensor(spec.target_std or ones, dtype=torch.float64), persistent=False)
        self.weighted = self.field and spec.lat is not None and len(spec.lat) == spec.target_shape[-2]
        # Area weights per grid point, mean 1, as (1, 1, points): a latitude row repeats on its longitudes.
        weights = torch.ones(spec.target_shape[1:] if self.field else (1,), dtype=torch.float64)
        if self.weighted:
            w = torch.cos(torch.deg2rad(torch.tensor(spec.lat, dtype=torch.float64))).clamp_min(0)
            weights = w.reshape(-1, 1).expand(*spec.target_shape[-2:]).expand(weights.shape)
            weights = weights / weights.mean()
        self.register_buffer("weights", weights.reshape(1, 1, -1).contiguous(), persistent=False)
        self.anomalies = self.field and climatology is not None
        if self.anomalies:
            self.register_buffer("climatology", climatology.double().reshape(1, c, -1), persistent=False)
        for name in STATES:
            self.add_state(name, default=torch.zeros(c, dtype=torch.float64), dist_reduce_fx="sum")
        # Summed per-sample errors and their count: sums, so shares of a split add up across processes.
        self.relative = math.prod(spec.target_shape) > 1
        self.add_state("rel", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rel_n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def keys(self) -> list[str]:
        overall = ["mse", "mae", "rmse", "r2"]
        relative = ["relative_l2"] if self.relative else []
        extra = (
            (["bias"] if self.field else [])
            + (["wrmse"] if self.weighted else [])
            + (["acc"] if self.anomalies else [])
        )
        if self.channels == 1:
            return overall + relative + extra
        return overall + relative + [f"{m}/{n}" for m in ["rmse", "mae", "r2", *extra] for n in self.names]

    def physical(self, a: torch.Tensor) -> torch.Tensor:
        """Standardized values of a (N, C, ...) or (N,) batch in the data's units."""
        a = a.double().reshape(len(a), self.channels, -1)
        return a * self.t_std.reshape(1, -1, 1) + self.t_mean.reshape(1, -1, 1)

    def update(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        standardized: bool = True,
        climatology: torch.Tensor | None = None,
    ) -> None:
        """Sum one batch; `standardized=False` for values already in physical units (baselines);
        `climatology`: the batch's own reference of the anomaly correlation, one per sample (the
        seasonal climatology at each sample's valid time), in place of the fixed one."""
        # A batch of global fields in float64, times the few temporaries below, is gigabytes:
        # summed in slices of rows that keep each temporary near CHUNK_BYTES.
        rows = max(1, CHUNK_BYTES // (8 * max(1, output[:1].numel())))
        for lo in range(0, len(output), rows):
            clim = None if climatology is None else climatology[lo : lo + rows]
            self._update(output[lo : lo + rows], target[lo : lo + rows], standardized, clim)

    def _update(
        self, output: torch.Tensor, target: torch.Tensor, standardized: bool, climatology: torch.Tensor | None
    ) -> None:
        if standardized:
            pred, true = self.physical(output), self.physical(target)
        else:
            pred = output.double().reshape(len(output), self.channels, -1)
            true = target.double().reshape(len(target), self.channels, -1)
        valid = torch.isfinite(true)
        true = torch.where(valid, true, 0.0)
        err = torch.where(valid, pred - true, 0.0)
        self.n += valid.sum((0, 2)).to(self.n.dtype)
        self.se += (err * err).sum((0, 2))
        self.ae += err.abs().sum((0, 2))
        self.err += err.sum((0, 2))
        self.y += true.sum((0, 2))
        self.yy += (true * true).sum((0, 2))
        weights = self.weights * valid  # the area of the points that have a value
        self.wse += (weights * err * err).sum((0, 2))
        self.w += weights.sum((0, 2))
        if self.relative:
            # A target of all 0 has no relative error; the floor keeps it finite (as the rel_l2 loss).
            self.rel += (err.flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1).clamp_min(1e-12)).sum()
            self.rel_n += len(true)
        if self.anomalies:
            clim = (
                self.climatology if climatology is None else climatology.to(pred).reshape(len(pred), self.channels, -1)
            )
            self._anomaly_correlation(pred, true, weights, clim)

    def _anomaly_correlation(
        self, pred: torch.Tensor, true: torch.Tensor, weights: torch.Tensor, climatology: torch.Tensor
    ) -> None:
        """Per sample and channel over the grid points where the target and the climatology have values."""
        known = torch.isfinite(climatology)
        w = weights * known
        clim = torch.where(known, climatology, 0.0)
        f, o = torch.where(w > 0, pred - clim, 0.0), torch.where(w > 0, true - clim, 0.0)
        num = (w * f * o).sum(2)
        den = ((w * f * f).sum(2) * (w * o * o).sum(2)).sqrt().clamp_min(1e-300)
        counted = (w > 0).any(2)  # a sample with no value in a channel adds nothing to its mean
        self.acc += torch.where(counted, num / den, 0.0).sum(0)
        self.acc_n += counted.sum(0).to(self.acc_n.dtype)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n.clamp_min(1)
        ss_tot = self.yy - self.y**2 / n
        per = {"rmse": (self.se / n).sqrt(), "mae": self.ae / n, "r2": 1 - self.se / ss_tot.clamp_min(1e-300)}
        out = {
            "mse": self.se.sum() / n.sum(),
            "mae": self.ae.sum() / n.sum(),
            "rmse": (self.se.sum() / n.sum()).sqrt(),
            # One channel: against the pooled mean. Several (variables of different units, or
            # table columns): the mean of their own r2, as torchmetrics' uniform_average.
            "r2": per["r2"].mean() if self.channels > 1 else 1 - self.se.sum() / ss_tot.sum().clamp_min(1e-300),
        }
        if self.relative:
            out["relative_l2"] = self.rel / self.rel_n.clamp_min(1)
        per["bias"] = self.err / n
        per["wrmse"] = (self.wse / self.w.clamp_min(1e-300)).sqrt()
        per["acc"] = self.acc / self.acc_n.clamp_min(1)
        for key in self.keys():
            if key in out:
                continue
            metric, _, name = key.partition("/")
            out[key] = per[metric][self.names.index(name) if name else 0]
        return {k: v.float() for k, v in out.items()}
