"""Datasets too large for memory, read from files a batch at a time (HDF5, NetCDF, Zarr).

A *reader* knows one storage format: `len(reader)` rows, `read(start, stop) -> (x, y)` NumPy
arrays for a contiguous range of rows, `labels()` for classification targets, `open()`/`close()`.
`LazyDataset` holds a reader and adds everything format-independent:

- rows: the file rows of this split (sorted), so a split is a cheap view, never a copy;
- batched reads: a batch of rows is read as a few contiguous slices (one large read per run of
  neighbouring rows), not one read per sample: per-read overhead is what makes naive HDF5
  loaders slow;
- one file handle per process: readers open lazily in the process that reads, so every
  DataLoader worker gets its own handle (HDF5 handles must not cross a fork);
- one streaming pass (`scan`) that finds NaN/Inf rows and the per-row channel sums and counts of
  finite values from which the normalization statistics of any split follow without reading
  the data again;
- normalization applied as batches are read;
- masks, for readers that declare `masked = True` (gridded fields): a NaN is a missing value,
  not a bad sample. Statistics count finite values only; a missing input becomes the channel's
  mean (0 once standardized); a missing target stays NaN, which every loss and metric leaves
  out. Only infinities, or a sample with no value at all, make a sample bad.
"""

import contextlib
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ember.errors import DataError

# Rows closer than this are read in one slice and the rows between them thrown away: a few
# wasted rows cost less than a separate read.
MAX_GAP = 8
# Rows per read during the streaming scan: large reads, bounded memory.
SCAN_BYTES = 64 * 2**20


@dataclass
class Scan:
    """What one pass over all rows found: per-row bad flags, channel moments and counts."""

    bad: np.ndarray  # (rows,) bool: a NaN or Inf in the input or the target (masked readers: Inf, or no value)
    nonfinite: dict  # {"inputs": count, "targets": count} of the values that made rows bad
    first: tuple | None  # (name, row, index within the sample) of the first such value
    sums: np.ndarray  # (rows, channels) float64 sums of the finite values over the non-channel dimensions
    sumsq: np.ndarray
    counts: np.ndarray  # (rows, channels) how many finite values those sums hold
    per_channel: int  # values per channel in one sample
    # The same for floating-point targets (regression), for their standardization; else None.
    target_sums: np.ndarray | None = None
    target_sumsq: np.ndarray | None = None
    target_counts: np.ndarray | None = None
    target_per_channel: int = 1
    # Elements of one input (target) sample that are NaN in every row: the masks. None: none.
    missing: np.ndarray | None = None
    target_missing: np.ndarray | None = None


class LazyDataset(Dataset):
    """Rows of a reader; `dataset[i]` is one sample, `dataset[list]` one batch (x, y)."""

    reads_batches = True  # tells the loaders to hand over whole batches of indices

    @property
    def block_reads(self) -> bool:
        """Whether neighbouring rows are cheaper read together (rows of an array file), so that
        batches are drawn as blocks of them; False for a reader of one file per row (images)."""
        return getattr(self.reader, "block_reads", True)

    def __init__(
        self, reader, rows: np.ndarray | None = None, mean=None, std=None, scan: Scan | None = None,
        target_stats=None, fill=None,
    ):
        self.reader = reader
        # Unstandardized masked inputs: the per-channel raw means that fill missing values, set from
        # the train split (with_fill) so that val/test values never reach a train batch. None: all rows'.
        self.fill = fill
        self.rows = np.arange(len(reader)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.mean, self.std = mean, std  # numpy, broadcastable to one batch
        self.target_stats = target_stats  # (mean, std) broadcastable to a target batch, or None
        self._scan = scan

    def __len__(self) -> int:
        return len(self.rows)

    # -- reading -------------------------------------------------------------------------------
    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0):
            x, y = self.read_rows(self.rows[[int(index)]])
            return x[0], y[0]
        positions = np.asarray(index.tolist() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        rows = self.rows[positions]
        # Read in ascending row order (contiguous runs), returned in the order asked for: a batch
        # is then the same as an in-memory split's x[index], sample for sample.
        order = np.argsort(rows, kind="stable")
        x, y = self.read_rows(rows)
        if np.array_equal(order, np.arange(len(rows))):
            return x, y
        back = torch.from_numpy(np.argsort(order, kind="stable"))
        return x[back], y[back]

    def __getitems__(self, indices):
        # A DataLoader given a batch_sampler collates a list of samples: the read is still
        # batched, only the (cheap) stacking happens per sample.
        x, y = self[list(indices)]
        return list(zip(x, y))

    def read_rows(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples at file `rows`, read as contiguous runs; returned in ascending row order."""
        return self._to_tensors(*self._raw(rows))

    def _to_tensors(self, x: np.ndarray, y: np.ndarray):
        x = x.astype(np.float32, copy=False)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if getattr(self.reader, "masked", False):
            # A missing input is the channel's mean: 0 once standardized, the raw mean otherwise.
            fill = 0.0 if self.mean is not None else self._raw_means()
            x = np.where(np.isnan(x), np.asarray(fill, dtype=np.float32), x)
        if self.target_stats is not None:
            y = (y.astype(np.float32, copy=False) - self.target_stats[0]) / self.target_stats[1]
        y = torch.from_numpy(np.ascontiguousarray(y))
        y = y.long() if self.reader.task == "classification" else y.float()
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y

    # -- splits and statistics -----------------------------------------------------------------
    def subset(self, positions) -> "LazyDataset":
        positions = np.asarray(positions.tolist() if isinstance(positions, torch.Tensor) else positions, dtype=np.int64)
        rows = np.sort(self.rows[positions])
        return LazyDataset(self.reader, rows, self.mean, self.std, self._scan, self.target_stats, self.fill)

    def normalized(self, mean: np.ndarray, std: np.ndarray) -> "LazyDataset":
        """The same rows, standardized per channel (dimension 0 of a sample) as they are read."""
        mean, std = (_per_channel(a, len(self.reader.input_shape)) for a in (mean, std))
        return LazyDataset(self.reader, self.rows, mean, std, self._scan, self.target_stats, self.fill)

    def targets_normalized(self, mean: np.ndarray, std: np.ndarray) -> "LazyDataset":
        """The same rows, with targets standardized per channel as they are read."""
        stats = tuple(_per_channel(a, len(self.reader.target_shape)) for a in (mean, std))
        return LazyDataset(self.reader, self.rows, self.mean, self.std, self._scan, stats, self.fill)

    def with_fill(self, fill: np.ndarray) -> "LazyDataset":
        """The same rows, missing inputs filled with `fill` (per-channel raw means) when unstandardized."""
        fill = _per_channel(fill, len(self.reader.input_shape))
        return LazyDataset(self.reader, self.rows, self.mean, self.std, self._scan, self.target_stats, fill)

    def labels(self) -> np.ndarray | None:
        """Class ids of this split's samples (classification only): for checks and stratified splits."""
        if self.reader.task != "classification":
            return None
        return self.reader.labels()[self.rows]

    def scan(self) -> Scan:
        if self._scan is None:
            self._scan = scan(self.reader)
        return self._scan

    def channel_stats(self, targets: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of this split's inputs (or targets), from the scan's per-row
        sums; the std unclamped (a constant channel has 0, see splits.safe_std)."""
        s = self.scan()
        sums, sumsq, counts = (
            (s.target_sums, s.target_sumsq, s.target_counts) if targets else (s.sums, s.sumsq, s.counts)
        )
        # Finite values only: masked points (NaN) are in neither the sums nor the counts.
        n = np.maximum(counts[self.rows].sum(0), 1)
        mean = sums[self.rows].sum(0) / n
        var = np.maximum(sumsq[self.rows].sum(0) / n - mean**2, 0.0)
        # Unbiased, like torch.std on the in-memory path.
        std = np.sqrt(var * n / np.maximum(n - 1, 1))
        extra = 0 if targets else getattr(self.reader, "extra_channels", 0)
        # Channels the reader appends after the scan (a mask channel) are 0/1 already: left as they are.
        return np.concatenate([mean, np.zeros(extra)]), np.concatenate([std, np.ones(extra)])

    def target_mean_field(self, batch: int = 256) -> np.ndarray:
        """Mean of each target element over this split (the climatology of a field), one pass."""
        total, n = None, None
        for lo in range(0, len(self.rows), batch):
            _, y = self._raw(self.rows[lo : lo + batch])
            y = y.astype(np.float64)
            finite = np.isfinite(y)
            part, count = np.where(finite, y, 0.0).sum(0), finite.sum(0)
            total, n = (part, count) if total is None else (total + part, n + count)
        # NaN where a point never has a value (a mask): no climatology there.
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def _raw_means(self) -> np.ndarray:
        """Per-channel means that fill missing unstandardized inputs, shaped for a batch: the
        train split's (see with_fill), else those of every scanned row."""
        if self.fill is not None:
            return self.fill
        s = self.scan()
        mean = s.sums.sum(0) / np.maximum(s.counts.sum(0), 1)
        mean = np.concatenate([mean, np.zeros(getattr(self.reader, "extra_channels", 0))])
        return _per_channel(mean, len(self.reader.input_shape))

    def _raw(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unstandardized (x, y) at sorted file `rows`, read as contiguous runs."""
        xs, ys = [], []
        for start, stop, take in runs(np.sort(rows), MAX_GAP if self.block_reads else 0):
            x, y = self.reader.read(start, stop)
            xs.append(x[take])
            ys.append(y[take])
        return np.concatenate(xs), np.concatenate(ys)

    def close(self) -> None:
        self.reader.close()


def _per_channel(a, sample_ndim: int) -> np.ndarray:
    """Per-channel values shaped to broadcast over a batch (channels on dimension 1)."""
    return np.asarray(a, dtype=np.float32).reshape((1, -1) + (1,) * max(0, sample_ndim - 1))


def runs(rows: np.ndarray, max_gap: int = MAX_GAP):
    """Split sorted rows into (start, stop, positions to keep within the slice) read ranges."""
    if len(rows) == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) > max_gap) + 1
    for group in np.split(rows, breaks):
        start, stop = int(group[0]), int(group[-1]) + 1
        yield start, stop, group - start


def scan(reader) -> Scan:
    """One pass over every row in large contiguous reads: bad rows, channel moments, masks."""
    n = len(reader)
    check_sizes(reader)
    x0, y0 = reader.read(0, min(1, n))
    row_bytes = max(1, x0[:1].nbytes + y0[:1].nbytes)
    step = max(1, SCAN_BYTES // row_bytes)
    masked = getattr(reader, "masked", False)
    xs = _Moments(x0, n)
    ys = _Moments(y0, n) if np.issubdtype(y0.dtype, np.floating) else None
    bad = np.zeros(n, dtype=bool)
    counts = {"inputs": 0, "targets": 0}
    first = None
    for start in range(0, n, step):
        x, y = reader.read(start, min(n, start + step))
        for name, a in (("inputs", x), ("targets", y)):
            if not np.issubdtype(a.dtype, np.floating):
                continue
            flags = _bad_values(a, masked)
            if flags.any():
                counts[name] += int(flags.sum())
                bad[start : start + len(a)] |= flags.reshape(len(a), -1).any(axis=1)
                if first is None:
                    where = np.argwhere(flags)[0]
                    first = (name, start + int(where[0]), tuple(int(i) for i in where[1:]))
        xs.add(x, start)
        if ys is not None:
            ys.add(y, start)
    return Scan(
        bad=bad,
        nonfinite=counts,
        first=first,
        sums=xs.sums,
        sumsq=xs.sumsq,
        counts=xs.counts,
        per_channel=xs.per_channel,
        missing=xs.missing,
        target_sums=ys and ys.sums,
        target_sumsq=ys and ys.sumsq,
        target_counts=ys and ys.counts,
        target_per_channel=ys.per_channel if ys else 1,
        target_missing=ys and ys.missing,
    )


def _bad_values(a: np.ndarray, masked: bool) -> np.ndarray:
    """Values that make their sample bad: any NaN or Inf; for a masked reader only infinities,
    and every value of a sample with no finite value at all (nothing to learn from or fill)."""
    if not masked:
        return ~np.isfinite(a)
    flags = np.isinf(a)
    empty = ~np.isfinite(a.reshape(len(a), -1)).any(axis=1)
    if empty.any():
        flags = flags | empty.reshape((-1,) + (1,) * (a.ndim - 1))
    return flags


class _Moments:
    """Per-row, per-channel sums, sums of squares and counts of the finite values, and the
    elements that are NaN in every row so far (the mask)."""

    def __init__(self, a0: np.ndarray, n: int):
        self.channels = a0.shape[1] if a0.ndim > 1 else 1
        self.per_channel = int(np.prod(a0.shape[2:])) if a0.ndim > 2 else 1
        self.sums, self.sumsq, self.counts = (np.zeros((n, self.channels)) for _ in range(3))
        self.missing = np.ones(a0.shape[1:], dtype=bool) if np.issubdtype(a0.dtype, np.floating) else None

    def add(self, a: np.ndarray, start: int) -> None:
        if self.missing is not None and len(a):
            self.missing &= np.isnan(a).all(axis=0)
        a = a.reshape(len(a), self.channels, self.per_channel).astype(np.float64)
        finite = np.isfinite(a)
        a = np.where(finite, a, 0.0)
        self.sums[start : start + len(a)] = a.sum(axis=2)
        self.sumsq[start : start + len(a)] = (a * a).sum(axis=2)
        self.counts[start : start + len(a)] = finite.sum(axis=2)


def check_sizes(reader) -> None:
    """Refuse, before any read, files whose declared sizes cannot fit in memory (a header can
    declare 10^12 rows or a 10^6 x 10^6 grid in a few bytes): one line saying what to reduce."""
    n = len(reader)
    x_shape, y_shape = tuple(reader.input_shape), tuple(getattr(reader, "target_shape", ()) or (1,))
    sample = math.prod(x_shape) + math.prod(y_shape)
    channels = (x_shape[0] if x_shape else 1) + y_shape[0]
    memory = physical_memory()
    where = getattr(reader, "where", "the data")
    if sample * 8 > memory // 4:
        raise DataError(
            f"one sample of {where} holds {sample:,} values ({_gb(sample * 8)} as float64), "
            f"more than a quarter of this machine's {_gb(memory)} of memory; reduce the sample (fewer variables or "
            "levels, a smaller region or a coarser grid)"
        )
    # The scan keeps sums, squares and counts per row and channel (float64) and a flag per row.
    per_row = 3 * 8 * channels + 1
    if n * per_row > memory // 4:
        raise DataError(
            f"{where} declares {n:,} samples, whose statistics alone would take {_gb(n * per_row)} of this machine's "
            f"{_gb(memory)} of memory; reduce the number of samples (a shorter period, or split the file)"
        )


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest machine
        return 8 * 2**30


def _gb(n: int) -> str:
    return f"{n / 2**30:.3g} GB" if n >= 2**28 else f"{n / 2**20:.3g} MB"


class Handles:
    """File handles opened lazily, once per process: a forked DataLoader worker opens its own."""

    def __init__(self, opener):
        self.opener = opener
        self._pid = None
        self._handles: dict = {}

    def get(self, key):
        if self._pid != os.getpid():
            self._handles = {}  # inherited from the parent across a fork: never use those
            self._pid = os.getpid()
        if key not in self._handles:
            self._handles[key] = self.opener(key)
        return self._handles[key]

    def close(self) -> None:
        if self._pid == os.getpid():
            for h in self._handles.values():
                # Closing a broken handle must not hide the error that broke it.
                with contextlib.suppress(Exception):
                    h.close()
        self._handles = {}

    def __getstate__(self):
        # Pickled into spawned workers: the opener travels, the handles do not.
        return {"opener": self.opener, "_pid": None, "_handles": {}}
