"""Every baseline fitted in one pass over the train split (and, for the ridge penalty alone, one
over the validation split): `fit(splits) -> Fitted`, which then predicts any batch of any split
from the batch's inputs and its samples' positions in the split (their valid times)."""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ember.data.lazy import LazyDataset
from ember.data.loaders import TensorData
from ember.scoring.baselines import linear, quantile
from ember.scoring.baselines.extremes import is_precipitation
from ember.scoring.baselines.seasonal import Calendar, month_keys, resolution
from ember.scoring.units import physical_targets, raw_inputs

TABLE_BYTES = 2**28  # largest seasonal table (sums) kept; a finer one falls back to months
QM_VALUES = 2**26  # train values per array held for quantile mapping


BATCH_BYTES = 2**24  # float64 values of one batch's inputs and targets (fitting and scoring)


def batches(data, batch_size: int | None = None):
    """(first position, x, y) of `data` in its own order, unsharded, unshuffled; by default as
    many rows (up to 256) as hold BATCH_BYTES, since scoring keeps several float64 copies of a
    batch and 256 global fields would be gigabytes."""
    batch_size = batch_size or _rows_within(data, BATCH_BYTES)
    if isinstance(data, TensorData):
        for lo in range(0, len(data), batch_size):
            yield lo, data.x[lo : lo + batch_size], data.y[lo : lo + batch_size]
    elif getattr(data, "reads_batches", False):
        for lo in range(0, len(data), batch_size):
            x, y = data[np.arange(lo, min(len(data), lo + batch_size))]
            yield lo, x, y
    else:  # a user's own Dataset (ember.fit), as it comes
        from torch.utils.data import DataLoader

        lo = 0
        for x, y in DataLoader(data, batch_size=batch_size):
            yield lo, torch.as_tensor(x), torch.as_tensor(y)
            lo += len(x)


def _rows_within(data, nbytes: int) -> int:
    try:
        x, y = (data.x[0], data.y[0]) if isinstance(data, TensorData) else data[0]
    except (TypeError, KeyError, IndexError, NotImplementedError):  # empty, or an iterable user Dataset
        return 256
    per_row = 8 * (torch.as_tensor(x).numel() + torch.as_tensor(y).numel())
    return int(max(1, min(256, nbytes // max(1, per_row))))


def majority(splits) -> int | None:
    """The train split's most frequent class, or None where it has no labels."""
    train = splits.train
    if isinstance(train, TensorData):
        y = train.y
    elif isinstance(train, LazyDataset):
        y = train.labels()
    else:
        y = torch.cat(list(targets(train)) or [torch.zeros(0, dtype=torch.long)])
    if y is None or len(y) == 0:
        return None
    return int(np.bincount(np.asarray(torch.as_tensor(y).reshape(-1).long().cpu())).argmax())


def targets(data, batch_size: int = 512):
    """The targets of a Dataset yielding (x, y), batch by batch."""
    from torch.utils.data import DataLoader

    for _, y in DataLoader(data, batch_size=batch_size):
        yield torch.as_tensor(y)


def bias_correction(spec) -> bool:
    """Targets are the inputs' own variables on the same grid at the same time."""
    ids = spec.identity_channels
    return spec.task == "regression" and ids is not None and not spec.lead and len(spec.target_shape) >= 1


def candidates(spec, has_times: bool, qdm: bool = False) -> list[str]:
    """The baselines this data can have, in the order they are reported."""
    if spec.task == "classification":
        return ["majority"]
    out = ["climatology" if len(spec.target_shape) >= 2 or has_times else "mean"]
    if spec.identity_channels is not None:
        out.append("persistence" if spec.lead else "identity")
    if len(spec.input_shape) == 1 and spec.in_features <= linear.MAX_FEATURES:
        out.append("linear")
    if bias_correction(spec):
        out += ["linear_scaling", "quantile_mapping"] + (["quantile_delta_mapping"] if qdm else [])
    return out


@dataclass
class Fitted:
    """What the baselines predict from, fitted on the train split (physical units throughout)."""

    spec: Any
    names: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # baseline -> why it is left out
    notes: list[str] = field(default_factory=list)
    mean: torch.Tensor | None = None  # the all-time mean of each target element
    table: torch.Tensor | None = None  # (slots, *target_shape): the seasonal climatology
    calendar: Calendar | None = None
    times: dict | None = None
    weights: np.ndarray | None = None  # linear: (features + 1, targets)
    alpha: float = 0.0
    shift: torch.Tensor | None = None  # linear_scaling: (12, elements) shift or ratio
    ratio: torch.Tensor | None = None  # (elements,) bool: multiplicative (precipitation)
    qmap: quantile.QuantileMap | None = None
    majority: int | None = None
    _keys: dict = field(default_factory=dict)

    def keys(self, split: str, n: int) -> np.ndarray | None:
        """Climatology slot of each of a split's samples; None where its times are unknown."""
        if split not in self._keys:
            t = (self.times or {}).get(split)
            ok = self.calendar is not None and t is not None and len(t) == n
            self._keys[split] = self.calendar.keys(t) if ok else None
        return self._keys[split]

    def climatology_rows(self, split: str, lo: int, hi: int, n: int) -> torch.Tensor:
        """The climatology of samples lo..hi of a split of n samples: (hi - lo, *target_shape)."""
        keys = self.keys(split, n) if self.table is not None else None
        return self._rows(None if keys is None else keys[lo:hi], hi - lo)

    def at_times(self, times) -> torch.Tensor:
        """The climatology at valid times `times` (the all-time mean where there are no seasons)."""
        return self._rows(None if self.table is None else self.calendar.keys(times), len(times))

    def _rows(self, keys: np.ndarray | None, n: int) -> torch.Tensor:
        if keys is None:
            return self.mean.expand(n, *self.mean.shape)
        k = torch.from_numpy(keys)
        rows = self.table[k.clamp_min(0)]
        unseen = (k < 0).reshape(-1, *([1] * self.mean.ndim))  # a slot the train split never saw
        return torch.where(unseen, self.mean.expand_as(rows), rows)

    def months(self, split: str, lo: int, hi: int) -> np.ndarray:
        t = (self.times or {}).get(split)
        return month_keys(None if t is None else t[lo:hi], hi - lo)


def fit(splits, qdm: bool = False) -> Fitted:
    """Fit every baseline of `splits` that applies; the others are named in `skipped`."""
    spec, times = splits.spec, splits.times
    train_times = (times or {}).get("train")
    names = candidates(spec, train_times is not None, qdm)
    fitted = Fitted(spec=spec, names=names, times=times)
    if spec.task == "classification":
        fitted.majority = majority(splits)
        fitted.names = [] if fitted.majority is None else names
        return fitted
    if getattr(splits.train, "y", torch.zeros(1)).dtype in (torch.long, torch.int) or not len(splits.train):
        fitted.names = []
        return fitted
    acc = Accumulator(spec, names, train_times, len(splits.train))
    fitted.calendar = acc.calendar
    for lo, x, y in batches(splits.train):
        acc.add(lo, x, y)
    acc.finish(fitted)
    if "linear" in fitted.names and splits.val is not None:
        choose_penalty(fitted, acc.ridge, splits.val)
    return fitted


def choose_penalty(fitted: Fitted, ridge: linear.RidgeFit, val) -> None:
    """The ridge penalty with the least validation error (one pass over the validation split)."""
    scale = np.asarray(fitted.spec.target_std or [1.0] * fitted.spec.target_channels, dtype=np.float64)
    per = max(1, ridge.t // len(scale))
    choice = linear.PenaltyChoice(ridge, np.repeat(scale, per)[: ridge.t])
    for _, x, y in batches(val):
        choice.add(x.double().cpu().numpy(), _physical(y, fitted.spec).cpu().numpy())
    fitted.alpha, fitted.weights = choice.best()


def _physical(y: torch.Tensor, spec) -> torch.Tensor:
    """(n, elements) targets in physical units, float64, NaN where missing."""
    return physical_targets(y.double(), spec).reshape(len(y), -1)


class Accumulator:
    """The sums one pass over the train split needs for every baseline."""

    def __init__(self, spec, names: list[str], times, n: int):
        self.spec, self.names, self.times, self.n = spec, names, times, n
        self.elements = max(1, math.prod(spec.target_shape))
        self.sums = torch.zeros(self.elements, dtype=torch.float64)
        self.counts = torch.zeros(self.elements, dtype=torch.float64)
        self.calendar = _calendar(spec, times, self.elements)
        slots = self.calendar.slots if self.calendar else 0
        self.season = torch.zeros(2, slots, self.elements, dtype=torch.float64) if slots > 1 else None
        self.ridge = linear.RidgeFit(spec.in_features, self.elements) if "linear" in names else None
        self.scaling = torch.zeros(3, 12, self.elements, dtype=torch.float64) if "linear_scaling" in names else None
        self.qm = ([], []) if "quantile_mapping" in names and n * self.elements <= QM_VALUES else None

    def add(self, lo: int, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.cpu(), _physical(y.cpu(), self.spec)
        finite = torch.isfinite(y)
        y0 = torch.where(finite, y, torch.zeros_like(y))
        self.sums += y0.sum(0)
        self.counts += finite.sum(0)
        if self.season is not None:
            k = torch.from_numpy(self.calendar.keys(self.times[lo : lo + len(y)]))
            ok = k >= 0
            self.season[0].index_add_(0, k[ok], y0[ok])
            self.season[1].index_add_(0, k[ok], finite[ok].double())
        if self.ridge is not None:
            self.ridge.add(x.double().numpy(), y.numpy())
        if self.scaling is not None or self.qm is not None:
            model = raw_inputs(x.double(), self.spec)[:, self.spec.identity_channels].reshape(len(y), -1)
            self._bias_correction(lo, model, y, finite)

    def _bias_correction(self, lo: int, model: torch.Tensor, y: torch.Tensor, finite: torch.Tensor) -> None:
        if self.scaling is not None:
            m = torch.from_numpy(month_keys(None if self.times is None else self.times[lo : lo + len(y)], len(y)))
            self.scaling[0].index_add_(0, m, torch.where(finite, y, 0.0))
            self.scaling[1].index_add_(0, m, torch.where(finite, model, 0.0))
            self.scaling[2].index_add_(0, m, finite.double())
        if self.qm is not None:
            self.qm[0].append(model.float().numpy())
            self.qm[1].append(y.float().numpy())

    def finish(self, fitted: Fitted) -> None:
        shape = tuple(self.spec.target_shape)
        mean = self.sums / self.counts.clamp_min(1)
        fitted.mean = mean.where(self.counts > 0, torch.full_like(mean, float("nan"))).reshape(shape)
        if self.season is not None:
            s, c = (torch.from_numpy(self.calendar.smooth(a.numpy())) for a in self.season)
            table = torch.where(c > 0, s / c.clamp_min(1), mean.expand_as(s))
            fitted.table = table.reshape(-1, *shape)
        if self.calendar is not None:
            fitted.notes.append(f"climatology: {self.calendar.describe()}")
        if self.ridge is not None:
            self._linear(fitted)
        if self.scaling is not None:
            self._scaling(fitted)
        if "quantile_mapping" in fitted.names:
            self._quantiles(fitted)

    def _linear(self, fitted: Fitted) -> None:
        if self.ridge.too_many_gaps:
            return _skip(fitted, "linear", "too many target columns have gaps (NaN) to fit each on its own")
        if self.ridge.n == 0 or not np.isfinite(self.ridge.gram).all():
            return _skip(fitted, "linear", "no train sample has finite inputs to fit it on")
        fitted.weights = self.ridge.weights(0.0)

    def _scaling(self, fitted: Fitted) -> None:
        obs, model, n = self.scaling
        ratio = _ratio_elements(self.spec, self.elements)
        # A calendar month the train split never saw takes the shift of all months together.
        o_all, m_all, n_all = obs.sum(0), model.sum(0), n.sum(0)
        obs, model = torch.where(n > 0, obs, o_all), torch.where(n > 0, model, m_all)
        shift = torch.where(
            ratio,
            torch.where(model != 0, obs / model.where(model != 0, 1.0), 1.0),
            (obs - model) / torch.where(n > 0, n, n_all).clamp_min(1),
        )
        fitted.shift, fitted.ratio = shift, ratio

    def _quantiles(self, fitted: Fitted) -> None:
        if self.qm is None:
            return _skip(
                fitted,
                "quantile_mapping",
                f"the train split's {self.n} x {self.elements} values are more than the {QM_VALUES:,} held for it",
            )
        model, obs = (np.concatenate(a).astype(np.float64) for a in self.qm)
        count = np.isfinite(obs).sum(0)
        few = count[count > 0]
        if len(few) == 0 or few.min() < quantile.MIN_SAMPLES:
            return _skip(
                fitted,
                "quantile_mapping",
                f"{int(few.min()) if len(few) else 0} train samples at some grid point, "
                f"fewer than the {quantile.MIN_SAMPLES} an empirical CDF needs",
            )
        levels = quantile.levels_for(len(obs))
        fitted.qmap = quantile.QuantileMap(
            quantile.nan_quantiles(model, levels),
            quantile.nan_quantiles(obs, levels),
            _ratio_elements(self.spec, self.elements).numpy(),
        )


def _ratio_elements(spec, elements: int) -> torch.Tensor:
    """(elements,) bool: the target elements of precipitation variables (corrected by ratio)."""
    c = spec.target_channels
    units = spec.target_units or [""] * c
    per = np.array([is_precipitation(spec.target_name(i), units[i]) for i in range(c)])
    return torch.from_numpy(np.repeat(per, max(1, elements // c)))


def _skip(fitted: Fitted, name: str, why: str) -> None:
    for n in [name] + (["quantile_delta_mapping"] if name == "quantile_mapping" else []):
        if n in fitted.names:
            fitted.names.remove(n)
            fitted.skipped[n] = why


def _calendar(spec, times, elements: int) -> Calendar | None:
    """The finest seasonal slots the train times resolve whose table fits TABLE_BYTES."""
    if times is None:
        return None
    kind = resolution(times)
    order = ["hour", "day", "month", "none"]
    for k in order[order.index(kind) :]:
        cal = Calendar(k, times, spec.calendar)
        if cal.slots * elements * 8 <= TABLE_BYTES:
            return cal
    return Calendar("none", times, spec.calendar)
