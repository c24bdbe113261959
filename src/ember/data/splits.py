"""What happens to every source's data after its builder: splits carved, checked, normalized.

- test and validation splits carved from train where the source has none (`data.test_fraction`,
  `data.val_fraction`), with their own seed (`data.split_seed`) so that runs differing only in
  trainer.seed are compared on the same data, stratified by class for classification;
- the split indices recorded (source rows), so a run directory says exactly which samples
  were held out;
- inputs, and regression targets, standardized per channel with statistics of the train split
  only: by tensor ops for in-memory data, from the streaming scan for file-backed data. A
  channel constant over the train split is left unscaled and said so.
"""

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Subset

from ember.data.lazy import LazyDataset
from ember.data.loaders import TensorData
from ember.data.periods import PERIOD_KEYS, SPLIT_BY, describe, near, period_mask
from ember.data.spec import DataSpec
from ember.errors import ConfigError, DataError
from ember.ranges import check_choice


def carve(
    splits,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    stratify: bool,
    split_by: str = "auto",
    periods: dict | None = None,
):
    """Carve test, then validation, from the train split of `splits` where they are missing: in
    time for time-indexed data (`splits.times`, or samples that are windows of a series:
    `splits.gap`) unless `split_by="random"`, at random otherwise. `periods` ({"train": "START:END",
    ...}) choose splits by date. The run is told which carve it got (splits.notes)."""
    periods = {k: v for k, v in (periods or {}).items() if v}
    in_time = _in_time(splits, split_by, periods)
    for name in periods:
        if name != "train" and getattr(splits, name) is not None:
            raise ConfigError(
                f"{PERIOD_KEYS[name]} carves the {name} split from data.path, but this source has its own "
                "(data.test_path or the source's split); drop one of them"
            )
    want_test = splits.test is None and (test_fraction > 0 or "test" in periods)
    want_val = splits.val is None and (val_fraction > 0 or "val" in periods)
    if not (want_test or want_val or "train" in periods):
        if in_time:
            splits.notes.append(describe(_sizes(splits), splits.times, {}, splits.gap, _from_source(splits)))
        return splits
    n = len(splits.train)
    # A split given by a period takes that period's samples, whatever its fraction says.
    n_test, n_val = _fraction_sizes(
        n,
        test_fraction,
        val_fraction,
        test_by_fraction=want_test and "test" not in periods,
        val_by_fraction=want_val and "val" not in periods,
    )
    source_rows = _source_rows(splits, n)
    if in_time:
        chosen = _chronological(splits, source_rows.numpy(), n_test, n_val, periods)
    else:
        labels = _labels(splits.train) if stratify and splits.spec.task == "classification" else None
        order = _order(n, labels, seed)
        chosen = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        chosen = {k: v for k, v in chosen.items() if len(v) or k == "train"}
    out = _assemble(splits, chosen, source_rows)
    if in_time:
        out.notes.append(describe(_sizes(out), out.times, out.indices, out.gap, _from_source(splits)))
    elif splits.times:
        out.notes.append(
            "split at random (data.split_by=random): neighbouring times sit in different splits, "
            "so scores may read better than on later years"
        )
    return out


def _fraction_sizes(
    n: int, test_fraction: float, val_fraction: float, *, test_by_fraction: bool, val_by_fraction: bool
) -> tuple[int, int]:
    """The number of test and validation samples carved by fraction out of `n` (0 for a split not
    carved by fraction), or a ConfigError where a fraction carves no sample or the two leave
    train none."""
    n_test = round(n * test_fraction) if test_by_fraction else 0
    n_val = round(n * val_fraction) if val_by_fraction else 0
    if test_by_fraction and n_test == 0:
        raise ConfigError(
            f"data.test_fraction={test_fraction} leaves no test sample out of {n}; use a larger value, more data, "
            "or data.test_fraction=0"
        )
    if val_by_fraction and n_val == 0:
        raise ConfigError(
            f"data.val_fraction={val_fraction} leaves no validation sample out of {n}; use a larger value, more data, "
            "or data.val_fraction=0"
        )
    if n_test + n_val >= n:
        raise ConfigError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no train sample out of "
            f"{n}; use values whose sum is below 1, or 0 to skip validation"
        )
    return n_test, n_val


def _in_time(splits, split_by: str, periods: dict) -> bool:
    """Whether to carve in time: by default wherever the data has times or its samples are windows
    of one series (a gap to keep), only on request (split_by=time) never where it has neither."""
    check_choice("data.split_by", split_by, SPLIT_BY)
    ordered = bool(splits.times) or splits.gap > 0
    if periods and not splits.times:
        raise ConfigError(
            f"{PERIOD_KEYS[next(iter(periods))]} needs data with times (data=gridded, or data.time_column=NAME for a "
            "table); this data has none"
        )
    if split_by == "random":
        if periods:
            raise ConfigError(
                f"{PERIOD_KEYS[next(iter(periods))]} splits in time, but data.split_by=random; drop one of them"
            )
        return False
    if split_by == "time" and not ordered:
        raise ConfigError(
            "data.split_by=time needs data with times (data=gridded, or data.time_column=NAME for a table); "
            "this data has none, so split it at random (data.split_by=auto or random)"
        )
    return ordered


def _chronological(splits, rows, n_test: int, n_val: int, periods: dict) -> dict:
    """Sample positions of each split in time: those of a given period; test, then validation,
    carved from the latest samples not yet taken; train the rest. Samples within `splits.gap`
    rows of a later-priority split (test, then validation) are left out of the earlier one."""
    n, times = len(rows), (splits.times or {}).get("train")
    masks = {name: period_mask(times, text, PERIOD_KEYS[name]) for name, text in periods.items()}
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if (masks[a] & masks[b]).any():
                raise ConfigError(
                    f"{PERIOD_KEYS[a]}={periods[a]} and {PERIOD_KEYS[b]}={periods[b]} overlap; give periods that do not"
                )
    taken = np.zeros(n, dtype=bool)
    for m in masks.values():
        taken |= m
    for name, k in (("test", n_test), ("val", n_val)):
        if k:
            free = np.flatnonzero(~taken & ~near(rows, taken, splits.gap))
            if len(free) == 0:
                raise ConfigError(
                    f"no sample is left for the {name} split after the periods given; set {PERIOD_KEYS[name]} too"
                )
            masks[name] = np.zeros(n, dtype=bool)
            masks[name][free[-k:]] = True
            taken |= masks[name]
    if "train" not in masks:
        masks["train"] = ~taken
    if "test" in masks and "val" in masks:
        masks["val"] &= ~near(rows, masks["test"], splits.gap)
    later = masks.get("test", np.zeros(n, dtype=bool)) | masks.get("val", np.zeros(n, dtype=bool))
    masks["train"] &= ~near(rows, later, splits.gap)
    for name, m in masks.items():
        if not m.any():
            raise ConfigError(
                f"the splits in time leave no {name} sample out of {n} once {splits.gap} sample(s) "
                "are left out at each border; use more data, smaller data.val_fraction/test_fraction, or other periods"
            )
    return {name: torch.from_numpy(np.flatnonzero(m)) for name, m in masks.items()}


def _assemble(splits, chosen: dict, source_rows: torch.Tensor):
    """The splits holding the chosen positions of the train split, their source rows recorded
    and their times subset. Sorted, so file-backed splits read neighbouring rows together and
    splits.json is readable."""
    chosen = {name: torch.sort(idx).values for name, idx in chosen.items()}
    indices = dict(splits.indices or {})
    times = dict(splits.times) if splits.times else None
    out = replace(splits, indices=indices, times=times, notes=list(splits.notes))
    for name, idx in chosen.items():
        setattr(out, name, _subset(splits.train, idx))
        indices[name] = source_rows[idx].tolist()
        if times is not None and "train" in splits.times:
            times[name] = splits.times["train"][idx.numpy()]
    return out


def _sizes(splits) -> dict[str, int]:
    return {name: len(getattr(splits, name)) for name in ("train", "val", "test") if getattr(splits, name) is not None}


def _from_source(splits) -> set[str]:
    """Splits the source gave (a test file) rather than carve made."""
    return {name for name in ("val", "test") if getattr(splits, name) is not None}


def _order(n: int, labels: torch.Tensor | None, seed: int) -> torch.Tensor:
    """A random order of 0..n-1 whose every prefix holds each class in proportion.

    Stratification by sorting on (rank within class + U(0,1)) / class size: the k-th sample of a
    class of size m lands near position k/m of the whole order, whatever the class.
    """
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(n, generator=g)
    perm = torch.randperm(n, generator=g)
    shuffled = labels[perm]
    counts = torch.bincount(shuffled)
    # Rank of each sample within its class, in the random order `perm`: a stable sort by class
    # keeps that order inside each class, and a class's samples then sit at start..start+count.
    by_class = torch.argsort(shuffled, stable=True)
    starts = counts.cumsum(0) - counts
    rank = torch.empty(n, dtype=torch.float64)
    rank[by_class] = (torch.arange(n) - starts[shuffled[by_class]]).double()
    counts = counts.double()
    key = (rank + torch.rand(n, generator=g, dtype=torch.float64)) / counts[shuffled]
    return perm[torch.argsort(key, stable=True)]


def _labels(data) -> torch.Tensor | None:
    if isinstance(data, TensorData):
        y = data.y
    elif isinstance(data, LazyDataset):
        y = data.labels()
        y = None if y is None else torch.as_tensor(y)
    else:
        return None
    if y is None or y.ndim != 1 or y.is_floating_point() or len(y) == 0:
        return None
    return y.long().cpu()


def _source_rows(splits, n: int) -> torch.Tensor:
    """Source row of each train sample: given by the builder (rows it dropped), else 0..n-1."""
    rows = (splits.indices or {}).get("train")
    if rows is None:
        return torch.arange(n)
    if len(rows) != n:
        raise ValueError(f"indices['train'] has {len(rows)} rows for {n} train samples")
    return torch.as_tensor(rows)


def _subset(data, index: torch.Tensor):
    if isinstance(data, (TensorData, LazyDataset)):
        return data.subset(index)
    return Subset(data, index.tolist())


def fill_from_train(splits):
    """Masked file-backed inputs left unstandardized are filled with their channel means: those of
    the train split, in every split, so that no val/test value reaches a train batch."""
    train = splits.train
    if not (isinstance(train, LazyDataset) and getattr(train.reader, "masked", False)):
        return splits
    fill = train.channel_stats()[0]
    def filled(data):
        return data.with_fill(fill) if isinstance(data, LazyDataset) else data

    return replace(splits, train=filled(splits.train), val=filled(splits.val), test=filled(splits.test))


def check_nonempty(splits, source: str) -> None:
    for name in ("train", "val", "test"):
        data = getattr(splits, name)
        if data is not None and len(data) == 0:
            raise DataError(
                f"the {name} split of data={source} is empty; check the source's files, or leave that split out "
                "(data.val_fraction=0 / data.test_fraction=0)"
            )


def check_features(spec: DataSpec, source: str) -> None:
    """A DataError for samples without any input value: a model would train on nothing."""
    if spec.in_features == 0:
        raise DataError(
            f"the inputs of data={source} hold no value (input shape {tuple(spec.input_shape)}); "
            "give the source feature columns or variables to learn from"
        )


def normalize(splits, inputs: bool = True, targets: bool = True, stats_from: DataSpec | None = None):
    """Standardize inputs per channel (dimension 1 of a batch) and, for regression, targets per
    channel, with the train split's statistics, or with `stats_from`'s where it has them for as
    many channels (evaluating a run on other data: the model knows only its own training units).
    A user's own Dataset is left as it is."""
    train = splits.train
    if not isinstance(train, (TensorData, LazyDataset)):
        return splits
    if inputs and (isinstance(train, LazyDataset) or train.x.is_floating_point()):
        mean, std = _given(
            stats_from and stats_from.mean, stats_from and stats_from.std, splits.spec.input_shape
        ) or _stats(train, targets=False)
        std = safe_std(mean, std, "input channel", splits.spec.input_names, splits.notes)
        splits = _apply(splits, mean, std, targets=False)
        splits.spec = replace(splits.spec, mean=mean.tolist(), std=std.tolist())
    if targets and splits.spec.task == "regression" and _float_targets(train):
        given = _given(
            stats_from and stats_from.target_mean, stats_from and stats_from.target_std, (splits.spec.target_channels,)
        )
        mean, std = given or _stats(train, targets=True)
        std = safe_std(mean, std, "target channel", splits.spec.target_names, splits.notes)
        splits = _apply(splits, mean, std, targets=True)
        splits.spec = replace(splits.spec, target_mean=mean.tolist(), target_std=std.tolist())
    return splits


def _given(mean, std, shape) -> tuple[np.ndarray, np.ndarray] | None:
    """Statistics handed in, where there are as many as the data has channels (shape[0])."""
    if not mean or not std or not shape or len(mean) != shape[0]:
        return None
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)


def _float_targets(train) -> bool:
    if isinstance(train, TensorData):
        return train.y.is_floating_point()
    return train.scan().target_sums is not None


def _stats(train, targets: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (unbiased, unclamped) of the train split's inputs or targets:
    tensor ops in memory; from the streaming scan's per-row sums for file-backed data."""
    if isinstance(train, LazyDataset):
        return train.channel_stats(targets=targets)
    a = (train.y if targets else train.x).double()
    dims = [d for d in range(a.ndim) if d != 1] if a.ndim > 1 else [0]
    return a.mean(dim=dims).reshape(-1).numpy(), a.std(dim=dims).reshape(-1).numpy()


def _apply(splits, mean: np.ndarray, std: np.ndarray, targets: bool):
    def apply(d):
        if d is None:
            return None
        if isinstance(d, LazyDataset):
            return d.targets_normalized(mean, std) if targets else d.normalized(mean, std)
        a = d.y if targets else d.x
        shape = (1, -1) + (1,) * (a.ndim - 2) if a.ndim > 1 else (-1,)
        m, s = (torch.as_tensor(v, dtype=a.dtype).reshape(shape) for v in (mean, std))
        return TensorData(d.x, (d.y - m) / s) if targets else TensorData((d.x - m) / s, d.y)

    return replace(splits, train=apply(splits.train), val=apply(splits.val), test=apply(splits.test))


def safe_std(mean: np.ndarray, std: np.ndarray, what: str, names: list[str] | None, notes: list[str]) -> np.ndarray:
    """The std to divide by: a channel constant over the train split is left unscaled (std 1),
    not divided by a clamped 1e-8, which multiplied any later change of it by 1e8."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    # Relative to the mean: float32 rounding leaves a constant of 280 a std of ~1e-5, not 0.
    constant = std <= 1e-6 * np.maximum(np.abs(mean), 1e-30)
    if constant.any():
        idx = np.flatnonzero(constant)
        named = ", ".join(names[i] if names and i < len(names) else str(i) for i in idx[:8]) + (
            ", ..." if len(idx) > 8 else ""
        )
        notes.append(
            f"{len(idx)} {what}(s) constant in the train split ({named}): left unscaled; a model cannot learn from a "
            "value that never changes"
        )
    return np.where(constant, 1.0, std)
