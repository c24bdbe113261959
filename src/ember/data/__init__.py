"""Data sources: a registry of builders, each returning splits and a DataSpec.

To add a source, write a function in a module of this package:

    @register_data("mysource")
    def mysource(cfg, *, my_option: int = 3) -> Splits: ...

`cfg` is the whole `data` config, read by attribute (`cfg.path`, `cfg.root`, `cfg.target`, ...:
the typed group that training passes, or a saved run's DictConfig node); the keyword-only
arguments become `data.my_option` config keys with their types and defaults.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from torch.utils.data import Dataset

from ember.data.augment import build_augment
from ember.data.loaders import EpochLoader, TensorData
from ember.data.periods import span
from ember.data.spec import DataSpec
from ember.data.splits import carve, check_features, check_nonempty, fill_from_train, normalize
from ember.errors import ConfigError
from ember.registry import Registry

DATA = Registry("data")
register_data = DATA.register
list_data = DATA.names


@dataclass
class Splits:
    train: Dataset | TensorData
    spec: DataSpec
    val: Dataset | TensorData | None = None
    test: Dataset | TensorData | None = None
    # Batch-level augmentation of training batches, applied by the trainer on the training
    # device: augment(x, y) -> (x, y). None for no augmentation.
    augment: Callable | None = None
    # Source rows of each split carved by build_data (and of train, when a builder dropped rows),
    # saved as splits.json in the run directory so a later evaluation can be checked against the
    # same held-out samples. None where the source's splits are all fixed.
    indices: dict[str, list[int]] | None = None
    # What the run should tell the user about its data (constant channels, ...): one line each.
    notes: list[str] = field(default_factory=list)
    # Time-indexed sources: each split's valid time of every sample's target, in the split's
    # order (a pandas.DatetimeIndex or an xarray.CFTimeIndex); builders set "train" (and "test"
    # for a test file), carve subsets them. None where the data has no time.
    times: dict[str, Any] | None = None
    # Samples left out between two time-ordered splits so that none holds another's inputs or
    # targets: the lead plus the window of input steps.
    gap: int = 0

    def record(self) -> dict | None:
        """What splits.json holds: the source rows of each carved split and, for time-indexed
        data, each split's first and last time ({"periods": {split: [first, last]}})."""
        if self.indices is None and not self.times:
            return None
        out: dict = dict(self.indices or {})
        if self.times:
            out["periods"] = {
                name: list(span(self.times[name])) for name in ("train", "val", "test") if len(self.times.get(name, ()))
            }
        return out

    def get(self, split: str):
        if split not in ("train", "val", "test"):
            raise ConfigError(f"data.split must be train, val or test, got {split!r}")
        return getattr(self, split)


def build_data(cfg: Any, stats_from: DataSpec | None = None) -> Splits:
    """Build the splits named by a `data` config group (typed, or a DictConfig node; read by
    attribute): carve test and validation, normalize (with `stats_from`'s statistics where given:
    a run evaluated on other data). Keys a run saved before they existed take their old default.

    Everything that can fail on bad data fails here, before a run directory exists.
    """
    builder = DATA.get(cfg.name)
    options = {k: getattr(cfg, k) for k in DATA.options(cfg.name)}
    splits = builder(cfg, **options)
    check_nonempty(splits, cfg.name)
    check_features(splits.spec, cfg.name)
    periods = {name: getattr(cfg, f"{name}_period", None) for name in ("train", "val", "test")}
    splits = carve(
        splits,
        cfg.test_fraction,
        cfg.val_fraction,
        cfg.split_seed,
        cfg.stratify,
        getattr(cfg, "split_by", "auto"),
        periods,
    )
    check_nonempty(splits, cfg.name)
    splits = fill_from_train(splits)
    # Regression targets are standardized too (data.normalize_target): variables of different
    # units weigh alike in the loss, and the network outputs unit-scale values, not 280 K.
    normalize_target = getattr(cfg, "normalize_target", False)
    if cfg.normalize or normalize_target:
        splits = normalize(splits, inputs=cfg.normalize, targets=normalize_target, stats_from=stats_from)
    augment = build_augment(cfg.augment, cfg.crop_padding, cfg.noise_std, cfg.max_shift)
    if augment is not None:
        splits = replace(splits, augment=augment)
    return splits


# Importing the source modules registers them, so it comes last, after Splits and register_data,
# which they import from here (E402). Each imports its heavy library (pandas, h5py, xarray, ...)
# only when it builds, so `ember --help` and the other sources do not pay for it.
from ember.data import (  # noqa: E402, F401
    arrays,
    audio,
    builtin,
    darcy,
    gridded,
    hdf5,
    images,
    physics,
    synthetic,
    tabular,
)

__all__ = ["DATA", "DataSpec", "Splits", "EpochLoader", "TensorData", "build_data", "list_data", "register_data"]
