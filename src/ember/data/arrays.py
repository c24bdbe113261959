"""NumPy arrays: an `.npy` pair (inputs, targets) or one `.npz` holding named arrays.

    ember train data=numpy data.path=x.npy data.target=y.npy
    ember train data=numpy data.path=data.npz                     # arrays x and y (data.inputs, data.target)

An `.npz` that also holds `x_test`/`y_test` (and `x_val`/`y_val`) has those splits predefined,
named after data.inputs and data.target. Integer targets of one value per sample are class ids
(classification), anything else is a regression target; `data.task` overrides.
"""

import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from ember.data import Splits, register_data
from ember.data.checks import check_labels, check_numeric, existing_path, infer_task, nan_rows, unknown_name
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.errors import DataError, first_line
from ember.ranges import NON_NEGATIVE


@register_data("numpy")
def numpy_arrays(
    cfg, *, inputs: str = "x", task: str = "auto", num_classes: Annotated[int, NON_NEGATIVE] = 0
) -> Splits:
    """NumPy arrays: data.path=x.npy with data.target=y.npy, or one .npz of named arrays."""
    path = existing_path(
        cfg.path, "data.path", "numpy", "an .npy file of inputs (with data.target=TARGETS.npy) or an .npz file"
    )
    if path.suffix == ".npz":
        target = str(cfg.target) if cfg.target else "y"
        arrays = _load_npz(path, [inputs, target])
        x, y = arrays[inputs], arrays[target]
        where = f"{path} (arrays {inputs!r}, {target!r})"
        extra = {s: _load_npz(path, [f"{inputs}_{s}", f"{target}_{s}"], optional=True) for s in ("val", "test")}
    else:
        if not cfg.target:
            raise DataError(
                f"data=numpy with data.path={path.name} needs data.target=FILE.npy, the targets (one per input "
                "sample), or pass an .npz as data.path"
            )
        x = _load_npy(path)
        y = _load_npy(existing_path(cfg.target, "data.target", "numpy", "an .npy file of targets"))
        where = f"{path} and {cfg.target}"
        extra = {}
    if len(x) == 0:
        raise DataError(f"{where}: the inputs hold no samples (shape {x.shape}); save at least one sample per split")
    if y.ndim == 2 and y.shape[1] == 1 and np.issubdtype(y.dtype, np.integer):
        y = y[:, 0]  # a column of labels
    task = infer_task(y, task)
    train, kept = _tensors(x, y, task, where, cfg.nan, num_classes)
    num_classes = int(num_classes or (train.y.max() + 1)) if task == "classification" else 0
    splits = Splits(train=train, spec=_spec(train, task, num_classes))
    for name, pair in extra.items():
        if pair is not None:
            data, _ = _tensors(*pair.values(), task, f"{path} ({name} arrays)", cfg.nan, num_classes)
            setattr(splits, name, data)
    if len(kept) != len(x):
        splits.indices = {"train": kept.tolist()}
    return splits


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - truncated files, pickled object arrays, not an .npy at all
        raise DataError(f"cannot read {path} as a NumPy .npy file ({first_line(e)}); save it with numpy.save") from None


def _load_npz(path: Path, names: list[str], optional: bool = False) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            present = list(npz.files)
            for name in names:
                if name not in present:
                    if optional:
                        return None
                    raise unknown_name(
                        name, present, "array", str(path), "set data.inputs / data.target to arrays of the file"
                    )
            return {name: npz[name] for name in names}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(
            f"cannot read {path} as a NumPy .npz file ({first_line(e)}); save it with numpy.savez"
        ) from None


def _tensors(x: np.ndarray, y: np.ndarray, task: str, where: str, nan: str, num_classes: int):
    check_numeric(x, "inputs", where)
    check_numeric(y, "targets", where)
    if len(x) != len(y):
        raise DataError(
            f"{where}: {len(x)} input samples but {len(y)} targets; "
            "both must have one entry per sample along the first axis"
        )
    if x.ndim == 1:
        x = x[:, None]  # one scalar feature per sample
    if len(x) == 0:  # an empty split: build_data says which one
        return TensorData(torch.zeros(x.shape), torch.zeros(y.shape)), np.arange(0)
    kept = nan_rows({"inputs": x, "targets": y}, where, nan)
    if len(kept) != len(x):
        x, y = x[kept], y[kept]
    x = torch.as_tensor(np.array(x, dtype=np.float32))
    if task == "classification":
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
            raise DataError(
                f"{where}: targets hold non-integer values; data.task=classification needs class ids, "
                "or use data.task=regression"
            )
        y = np.asarray(y).astype(np.int64).reshape(len(y))
        check_labels(y, where, num_classes)
        return TensorData(x, torch.as_tensor(y)), kept
    y = np.array(y, dtype=np.float32)
    return TensorData(x, torch.as_tensor(y if y.ndim > 1 else y[:, None])), kept


def _spec(train: TensorData, task: str, num_classes: int) -> DataSpec:
    shape = tuple(train.x.shape[1:])
    if task == "classification":
        return DataSpec(
            input_shape=shape, task=task, num_classes=num_classes, class_names=[str(i) for i in range(num_classes)]
        )
    return DataSpec(input_shape=shape, task=task, target_shape=tuple(train.y.shape[1:]))
