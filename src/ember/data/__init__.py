"""Data sources: a registry of builders, each returning splits and a DataSpec.

To add a source, write a function in a module of this package:

    @register_data("mysource")
    def mysource(cfg, *, my_option: int = 3) -> Splits: ...

`cfg` is the whole `data` config (path, root, target, ... are there); the keyword-only
arguments become `data.my_option` config keys with their types and defaults.
"""

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch
from torch.utils.data import Dataset, Subset

from ember.config.schema import DataCommon
from ember.data.loaders import TensorData, TensorLoader, make_loader
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.registry import Registry

DATA = Registry("data")
register_data = DATA.register
list_data = DATA.names

# The validation split carved from train must not change with trainer.seed, or runs that
# differ only in their seed would be compared on different data.
SPLIT_SEED = 0


@dataclass
class Splits:
    train: Dataset | TensorData
    spec: DataSpec
    val: Optional[Dataset | TensorData] = None
    test: Optional[Dataset | TensorData] = None
    # Batch-level augmentation of training batches, applied by the trainer on the training
    # device: augment(x, y) -> (x, y). None for no augmentation.
    augment: Optional[Callable] = None
    # Sample indices of each split in the source, saved as splits.json in the run directory so a
    # later evaluation uses the same test set. None where the source has fixed splits.
    indices: Optional[dict[str, list[int]]] = None

    def get(self, split: str):
        if split not in ("train", "val", "test"):
            raise ConfigError(f"data.split must be train, val or test, got {split!r}")
        return getattr(self, split)


def build_data(cfg: Any) -> Splits:
    """Build the splits named by a `data` config node: carve validation, then normalize."""
    builder = DATA.get(cfg.name)
    options = {k: cfg[k] for k in DATA.options(cfg.name)}
    splits = builder(cfg, **options)
    if splits.val is None and cfg.val_fraction > 0:
        splits = _carve_val(splits, cfg.val_fraction)
    if cfg.normalize and isinstance(splits.train, TensorData) and splits.train.x.is_floating_point():
        splits = _normalize(splits)
    return splits


def load_data(name: str = "mnist1d", **options: Any) -> Splits:
    """Python API: build a registered source with its defaults and the given options."""
    from ember.config import compose  # late import: the config module imports this package

    cfg = compose([f"data={name}"] + [f"data.{k}={_override_value(v)}" for k, v in options.items()])
    return build_data(cfg.data)


def _override_value(v: Any) -> str:
    from ember.config.compose import override_value

    return override_value(v)


def _carve_val(splits: Splits, fraction: float) -> Splits:
    n = len(splits.train)
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise ConfigError(f"data.val_fraction={fraction} leaves no train or no validation sample out of {n}; use a value in (0, 1) or 0 to skip validation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if isinstance(splits.train, TensorData):
        return replace(splits, train=splits.train.subset(train_idx), val=splits.train.subset(val_idx))
    return replace(splits, train=Subset(splits.train, train_idx.tolist()), val=Subset(splits.train, val_idx.tolist()))


def _normalize(splits: Splits) -> Splits:
    """Standardize inputs per channel (dim 1) with statistics of the train split only."""
    x = splits.train.x
    dims = [d for d in range(x.ndim) if d != 1] if x.ndim > 1 else [0]
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True).clamp_min(1e-8)

    def apply(d: TensorData | None) -> TensorData | None:
        return None if d is None else TensorData((d.x - mean) / std, d.y)

    spec = replace(splits.spec, mean=mean.flatten().tolist(), std=std.flatten().tolist())
    return Splits(train=apply(splits.train), val=apply(splits.val), test=apply(splits.test), spec=spec)


# Importing the source modules registers them.
from ember.data import synthetic  # noqa: E402,F401

__all__ = ["DATA", "DataSpec", "Splits", "TensorData", "TensorLoader", "build_data", "list_data", "load_data", "make_loader", "register_data"]
