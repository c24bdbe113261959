"""HDF5 files too large for memory, read lazily with h5py (`pip install 'ember[hdf5]'`).

    ember train data=hdf5 data.path='fields/*.h5' data.inputs=x data.target=y
    ember train data=hdf5 data.path=train.h5 data.test_path=test.h5 data.num_workers=4

`data.inputs` and `data.target` name datasets (paths like `group/x` work) whose first axis is
the sample; several files are concatenated in order and must agree on everything but that axis.
Nothing is loaded whole: batches are read as a few contiguous slices (lazy.py), one file handle
per DataLoader worker. Integer targets of one value per sample are class ids; anything else is
regressed.
"""

from pathlib import Path
from typing import Annotated

import numpy as np

from ember.data import Splits, register_data
from ember.data.checks import check_labels, expand_paths, plural, require, unknown_name
from ember.data.lazy import Handles, LazyDataset, check_sizes
from ember.data.loaders import default_workers
from ember.data.spec import DataSpec
from ember.errors import DataError
from ember.ranges import NON_NEGATIVE, check_choice


@register_data("hdf5", num_workers=default_workers())
def hdf5(
    cfg,
    *,
    inputs: str = "x",
    task: str = "auto",
    num_classes: Annotated[int, NON_NEGATIVE] = 0,
    test_path: str | None = None,
) -> Splits:
    """Datasets in HDF5 files (a path, a glob or a comma list), read lazily in batches."""
    check_choice("data.task", task, ("auto", "classification", "regression"))
    target = str(cfg.target) if cfg.target else "y"
    what = "an HDF5 file, a glob like 'data/*.h5' or a comma-separated list of files"
    reader = HDF5Reader(expand_paths(cfg.path, "data.path", "hdf5", what), inputs, target, task)
    train, kept = dataset(reader, cfg.nan, num_classes)
    spec = _spec(reader, num_classes or (int(reader.labels().max()) + 1 if reader.task == "classification" else 0))
    splits = Splits(train=train, spec=spec)
    if test_path:
        test_reader = HDF5Reader(expand_paths(test_path, "data.test_path", "hdf5", what), inputs, target, reader.task)
        if (test_reader.input_shape, test_reader.target_shape) != (reader.input_shape, reader.target_shape):
            raise DataError(
                f"data.test_path samples have shape {test_reader.input_shape} -> {test_reader.target_shape}, "
                f"the train files' {reader.input_shape} -> {reader.target_shape}; they must match"
            )
        splits.test, _ = dataset(test_reader, cfg.nan, spec.num_classes or 0)
    if len(kept) != len(reader):
        splits.indices = {"train": kept.tolist()}
    return splits


def dataset(reader, nan: str, num_classes: int) -> tuple[LazyDataset, np.ndarray]:
    """The reader's rows after the scan: NaN/Inf rows refused or dropped, labels checked.

    Shared by the file-backed sources (HDF5 here, NetCDF/Zarr in gridded.py, lazy image folders).
    """
    check_choice("data.nan", nan, ("error", "drop"))
    check_sizes(reader)  # before anything sized by the file's declared row count is allocated
    data = LazyDataset(reader)
    s = data.scan()
    rows = np.arange(len(reader))
    if s.bad.any():
        if nan == "error" or s.bad.all():
            raise _bad_rows(reader, s)
        rows = np.flatnonzero(~s.bad)
        data = data.subset(rows)
    if reader.task == "classification":
        check_labels(reader.labels()[rows], f"labels in {reader.where}", num_classes)
    # Handles opened by the scan are closed, so DataLoader workers forked later open their own.
    reader.close()
    return data, rows


def _bad_rows(reader, s) -> DataError:
    """The one-line error for samples the scan found bad; `data.nan=drop` is offered only where
    it would leave samples to train on."""
    name, row, index = s.first
    total = ", ".join(f"{c} in {k}" for k, c in s.nonfinite.items() if c)
    at = f"sample {row}" + (f", index {index}" if index else "")
    masked = getattr(reader, "masked", False)
    what = "infinite values, or samples with no finite value" if masked else "NaN or infinite values"
    if s.bad.all():
        return DataError(
            f"every sample of {reader.where} holds {what} ({total}; the first in the {name} at {at}); "
            f"data.nan=drop would drop them all: fix the data{getattr(reader, 'nan_hint', '')}"
        )
    return DataError(
        f"{reader.where} holds {what} ({total}); the first is in the {name} at {at}; "
        f"fix the data{getattr(reader, 'nan_hint', '')} or set data.nan=drop to drop the "
        f"{plural(int(s.bad.sum()), 'sample')} holding them"
    )


def _spec(reader, num_classes: int) -> DataSpec:
    if reader.task == "classification":
        return DataSpec(
            input_shape=reader.input_shape,
            task="classification",
            num_classes=num_classes,
            class_names=[str(i) for i in range(num_classes)],
        )
    return DataSpec(input_shape=reader.input_shape, task="regression", target_shape=reader.target_shape)


def _open(path: str):
    import h5py

    return h5py.File(path, "r")


class HDF5Reader:
    """Rows of datasets `inputs` and `target` across files, read by contiguous ranges."""

    def __init__(self, files: list[Path], inputs: str, target: str, task: str):
        h5py = require("h5py", "hdf5", "hdf5")
        self.files = [str(f) for f in files]
        self.inputs, self.target = inputs, target
        self.where = (
            self.files[0] if len(self.files) == 1 else f"{self.files[0]} (and {len(self.files) - 1} more files)"
        )
        counts, shapes = [], set()
        for f in self.files:
            try:
                with h5py.File(f, "r") as h:
                    x, y = self._get(h, inputs, f), self._get(h, target, f)
                    if len(x.shape) == 0 or len(y.shape) == 0:
                        raise DataError(
                            f"{f}: datasets {inputs!r} and {target!r} must have a sample axis first, "
                            f"got shapes {x.shape} and {y.shape}"
                        )
                    if x.shape[0] != y.shape[0]:
                        raise DataError(
                            f"{f}: dataset {inputs!r} has {x.shape[0]} samples but {target!r} has {y.shape[0]}; "
                            "both need one entry per sample along the first axis"
                        )
                    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
                        raise DataError(
                            f"{f}: datasets {inputs!r} ({x.dtype}) and {target!r} ({y.dtype}) must hold numbers"
                        )
                    counts.append(x.shape[0])
                    shapes.add((x.shape[1:], y.shape[1:], np.issubdtype(y.dtype, np.integer)))
            except DataError:
                raise
            except (OSError, KeyError, ValueError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise DataError(
                    f"cannot read {f} as HDF5 ({first}); the file may be truncated or not HDF5: check it with h5ls"
                ) from None
        if len(shapes) > 1:
            listed = "; ".join(f"{a} -> {b}" for a, b, _ in sorted(shapes, key=str))
            raise DataError(
                f"the files of data.path disagree on sample shapes ({listed}); "
                "every file must hold samples of one shape"
            )
        x_shape, y_shape, integer = shapes.pop()
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.input_shape = tuple(x_shape) or (1,)  # scalar inputs become one feature
        self.task = task if task != "auto" else ("classification" if integer and y_shape == () else "regression")
        if self.task == "classification" and y_shape != ():
            raise DataError(
                f"data.task=classification needs one class id per sample, but {target!r} has samples of shape "
                f"{y_shape}; use data.task=regression"
            )
        self.target_shape = tuple(y_shape) or (1,)
        self.handles = Handles(_open)
        self._labels: np.ndarray | None = None

    @staticmethod
    def _get(h, name: str, f: str):
        if name not in h:
            names: list[str] = []
            h.visititems(lambda n, obj: names.append(n) if hasattr(obj, "shape") else None)
            raise unknown_name(name, names, "dataset", f, "set data.inputs / data.target to datasets of the file")
        obj = h[name]
        if not hasattr(obj, "shape"):
            raise DataError(f"{f}: {name!r} is a group, not a dataset; name a dataset inside it, e.g. {name}/x")
        return obj

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for i in range(first, len(self.files)):
            lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
            if lo >= hi:
                break
            h = self.handles.get(self.files[i])
            a, b = int(lo - self.offsets[i]), int(hi - self.offsets[i])
            xs.append(h[self.inputs][a:b])
            ys.append(h[self.target][a:b])
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        y = ys[0] if len(ys) == 1 else np.concatenate(ys)
        n = len(x)
        return x.reshape(n, *self.input_shape), (
            y if self.task == "classification" else y.reshape(n, *self.target_shape)
        )

    def labels(self) -> np.ndarray:
        """All targets, for classification (one integer per sample: small even for huge inputs)."""
        if self._labels is None:
            parts = [self.handles.get(f)[self.target][:] for f in self.files]
            labels = np.concatenate(parts)
            _check_whole(labels, self.where, self.target)
            self._labels = labels.astype(np.int64)
        return self._labels

    def close(self) -> None:
        self.handles.close()


def _check_whole(labels: np.ndarray, where: str, target: str) -> None:
    """Class ids stored as floats must be whole numbers: 0.7 would silently become class 0."""
    if not np.issubdtype(labels.dtype, np.floating):
        return
    finite = np.isfinite(labels)
    wrong = np.flatnonzero(~finite | (labels != np.round(np.where(finite, labels, 0))))
    if len(wrong):
        i = int(wrong[0])
        raise DataError(
            f"{where}: dataset {target!r} holds {labels[i]:g} at sample {i}, not a class id; "
            "with data.task=classification the labels must be whole numbers 0..K-1: relabel them, "
            "or use data.task=regression if the target is a quantity"
        )
