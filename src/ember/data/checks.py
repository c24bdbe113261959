"""Checks every source shares: files that exist, optional libraries, finite values, class ids.

Each failure is a DataError (or ConfigError) of one line that names the file or key and says how
to fix it: users meet these before any training starts, and the CLI turns them into exit code 2.
"""

import difflib
import glob
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.errors import ConfigError, DataError
from ember.ranges import check_choice

NAN_POLICIES = ("error", "drop")


PACKAGES = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "scipy.io.wavfile": "scipy",
    "scipy.sparse": "scipy",
    "scipy.sparse.linalg": "scipy",
}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def require(module: str, extra: str, source: str) -> Any:
    """Import an optional library, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = PACKAGES.get(module, module)
        raise DataError(f"data={source} needs {package}: pip install 'ember[{extra}]'") from None


def required_key(value: Any, key: str, source: str, what: str) -> Any:
    if value is None or value == "" or (isinstance(value, (list, tuple)) and not value):
        raise ConfigError(f"data={source} needs {key}=...: {what}")
    return value


def existing_path(path: str | None, key: str, source: str, what: str, directory: bool = False) -> Path:
    """The path given as `key`, which must exist (a folder when `directory`)."""
    required_key(path, key, source, what)
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise DataError(f"{key}={str(path)!r} does not exist (looked in {p.absolute().parent}); {key} must be {what}")
    if directory and not p.is_dir():
        raise DataError(f"{key}={str(path)!r} is a file, not a folder; {key} must be {what}")
    return p


def expand_paths(path: str | None, key: str, source: str, what: str) -> list[Path]:
    """One path, a glob pattern or a comma-separated list: several files concatenated in order."""
    required_key(path, key, source, what)
    found: list[Path] = []
    for part in [p.strip() for p in str(path).split(",") if p.strip()]:
        part = os.path.expanduser(part)
        if glob.has_magic(part):
            matches = sorted(glob.glob(part))
            if not matches:
                raise DataError(
                    f"{key}={part!r} matches no file (looked in {Path(part).absolute().parent}); {key} must be {what}"
                )
            found += [Path(m) for m in matches]
        else:
            found.append(existing_path(part, key, source, what))
    return found


def unknown_name(name: str, valid: Sequence[str], what: str, where: str, fix: str) -> DataError:
    """'no column 'tmep' in data.csv; did you mean 'temp'? columns: ...'"""
    hint = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
    listed = ", ".join(str(v) for v in valid[:30]) + (", ..." if len(valid) > 30 else "")
    return DataError(f"no {what} {name!r} in {where}; {did_you_mean}{fix}: {listed}")


def nonfinite_rows(a: np.ndarray | torch.Tensor) -> np.ndarray:
    """Boolean mask of the samples (first dimension) holding a NaN or an infinity."""
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if len(a) == 0 or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
        return np.zeros(len(a), dtype=bool)
    return ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)


def first_nonfinite(a: np.ndarray | torch.Tensor) -> tuple[int, tuple[int, ...]]:
    """(sample, index within the sample) of the first NaN or infinity."""
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    where = np.argwhere(~np.isfinite(a))[0]
    return int(where[0]), tuple(int(i) for i in where[1:])


def count_nonfinite(a: np.ndarray | torch.Tensor) -> int:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        return 0
    return int((~np.isfinite(a)).sum())


def nan_rows(arrays: dict[str, np.ndarray | torch.Tensor], where: str, policy: str) -> np.ndarray:
    """Rows to keep after the `data.nan` policy, or a DataError with the count and first location.

    `arrays` maps a name used in the message (`features`, `targets`) to an array of samples.
    """
    check_choice("data.nan", policy, NAN_POLICIES)
    n = len(next(iter(arrays.values())))
    bad = np.zeros(n, dtype=bool)
    for a in arrays.values():
        bad |= nonfinite_rows(a)
    if not bad.any():
        return np.arange(n)
    if policy == "drop" and not bad.all():
        return np.flatnonzero(~bad)
    counts = {name: count_nonfinite(a) for name, a in arrays.items()}
    name = next(k for k, c in counts.items() if c)
    row, index = first_nonfinite(arrays[name])
    at = f"sample {row}" + (f", index {index if len(index) > 1 else index[0]}" if index else "")
    total = ", ".join(f"{c} in {k}" for k, c in counts.items() if c)
    if bad.all():  # data.nan=drop would leave nothing: not offered
        raise DataError(
            f"every sample of {where} holds NaN or infinite values ({total}; the first in {name} at {at}); "
            "data.nan=drop would drop them all: fix the data"
        )
    raise DataError(
        f"{where} holds NaN or infinite values ({total}); the first is in {name} at {at}; "
        f"fix the data or set data.nan=drop to drop the {plural(int(bad.sum()), 'sample')} holding them"
    )


def one_class(where: str, label: Any) -> DataError:
    """A classification target with a single class: nothing to tell apart, so every loss is 0."""
    label = label.item() if isinstance(label, np.generic) else label
    return DataError(
        f"{where}: every sample has the label {label!r}, one class only; a classifier needs at least two classes, "
        "so check data.target (or use data.task=regression if it is a quantity)"
    )


def check_numeric(a: np.ndarray, what: str, where: str) -> None:
    """Numbers only: text or object arrays would fail later inside torch, or be silently cast."""
    if a.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: the {what} are of dtype {a.dtype} ({'text' if a.dtype.kind in 'US' else 'not numbers'}); "
            "save numbers (for class labels, ids 0..K-1, e.g. numpy.unique(y, return_inverse=True)[1])"
        )


def check_labels(y: np.ndarray | torch.Tensor, where: str, num_classes: int = 0) -> int:
    """The number of classes of integer labels y; they must be 0..K-1 (all present unless K is given)."""
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if len(y) == 0:
        raise DataError(f"{where} holds no samples; check the file")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes and hi >= num_classes):
        bad = lo if lo < 0 else hi
        limit = f"0..{num_classes - 1} (data.num_classes={num_classes})" if num_classes else "0..K-1"
        raise DataError(
            f"{where}: label {bad} is out of range; class ids must be in {limit}; "
            "fix the labels or set data.num_classes to the number of classes"
        )
    if num_classes:
        return num_classes
    present = np.unique(y)
    if len(present) == 1:
        raise one_class(where, present[0])
    if len(present) != hi + 1:
        missing = sorted(set(range(hi + 1)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise DataError(
            f"{where}: class ids are not contiguous: {len(present)} classes between 0 and {hi}, none with id {shown}; "
            f"relabel them 0..{len(present) - 1}, set data.num_classes={hi + 1} if those classes just have no samples "
            "here, or data.task=regression if the target is a quantity"
        )
    return hi + 1


def infer_task(y: np.ndarray, task: str, key: str = "data.task") -> str:
    """classification for integer, boolean or categorical labels of one value per sample."""
    check_choice(key, task, ("auto", "classification", "regression"))
    if task != "auto":
        return task
    integer = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    return "classification" if integer and y.ndim == 1 else "regression"
