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
- one streaming pass (`scan`) that finds NaN/Inf rows and the per-row channel sums from which
  the normalization statistics of any split follow without reading the data again;
- normalization applied as batches are read.
"""

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

# Rows closer than this are read in one slice and the rows between them thrown away: a few
# wasted rows cost less than a separate read.
MAX_GAP = 8
# Rows per read during the streaming scan: large reads, bounded memory.
SCAN_BYTES = 64 * 2**20


@dataclass
class Scan:
    """What one pass over all rows found: per-row non-finite flags and channel moments."""

    bad: np.ndarray  # (rows,) bool: a NaN or Inf in the input or the target
    nonfinite: dict  # {"inputs": count, "targets": count}
    first: tuple | None  # (name, row, index within the sample) of the first NaN/Inf
    sums: np.ndarray  # (rows, channels) float64 sums over the non-channel dimensions
    sumsq: np.ndarray
    per_channel: int  # values per channel in one sample
    # The same for floating-point targets (regression), for their standardization; else None.
    target_sums: np.ndarray | None = None
    target_sumsq: np.ndarray | None = None
    target_per_channel: int = 1


class LazyDataset(Dataset):
    """Rows of a reader; `dataset[i]` is one sample, `dataset[list]` one batch (x, y)."""

    reads_batches = True  # tells the loaders to hand over whole batches of indices

    @property
    def block_reads(self) -> bool:
        """Whether neighbouring rows are cheaper read together (rows of an array file), so that
        batches are drawn as blocks of them; False for a reader of one file per row (images)."""
        return getattr(self.reader, "block_reads", True)

    def __init__(self, reader, rows: np.ndarray | None = None, mean=None, std=None, scan: Scan | None = None, target_stats=None):
        self.reader = reader
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
        return self.read_rows(self.rows[positions])

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
        if self.target_stats is not None:
            y = (y.astype(np.float32, copy=False) - self.target_stats[0]) / self.target_stats[1]
        y = torch.from_numpy(np.ascontiguousarray(y))
        y = y.long() if self.reader.task == "classification" else y.float()
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y

    # -- splits and statistics -----------------------------------------------------------------
    def subset(self, positions) -> "LazyDataset":
        positions = np.asarray(positions.tolist() if isinstance(positions, torch.Tensor) else positions, dtype=np.int64)
        return LazyDataset(self.reader, np.sort(self.rows[positions]), self.mean, self.std, self._scan, self.target_stats)

    def normalized(self, mean: np.ndarray, std: np.ndarray) -> "LazyDataset":
        """The same rows, standardized per channel (dimension 0 of a sample) as they are read."""
        mean, std = (_per_channel(a, len(self.reader.input_shape)) for a in (mean, std))
        return LazyDataset(self.reader, self.rows, mean, std, self._scan, self.target_stats)

    def targets_normalized(self, mean: np.ndarray, std: np.ndarray) -> "LazyDataset":
        """The same rows, with targets standardized per channel as they are read."""
        stats = tuple(_per_channel(a, len(self.reader.target_shape)) for a in (mean, std))
        return LazyDataset(self.reader, self.rows, self.mean, self.std, self._scan, stats)

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
        sums, sumsq, per = (s.target_sums, s.target_sumsq, s.target_per_channel) if targets else (s.sums, s.sumsq, s.per_channel)
        n = len(self.rows) * per
        mean = sums[self.rows].sum(0) / n
        var = np.maximum(sumsq[self.rows].sum(0) / n - mean**2, 0.0)
        # Unbiased, like torch.std on the in-memory path.
        std = np.sqrt(var * n / max(n - 1, 1))
        return mean, std

    def target_mean_field(self, batch: int = 256) -> np.ndarray:
        """Mean of each target element over this split (the climatology of a field), one pass."""
        total, n = None, 0
        for lo in range(0, len(self.rows), batch):
            _, y = self._raw(self.rows[lo : lo + batch])
            part = y.astype(np.float64).sum(0)
            total, n = (part if total is None else total + part), n + len(y)
        return total / max(n, 1)

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
    """One pass over every row in large contiguous reads: non-finite rows and channel moments."""
    n = len(reader)
    x0, y0 = reader.read(0, min(1, n))
    row_bytes = max(1, x0[:1].nbytes + y0[:1].nbytes)
    step = max(1, SCAN_BYTES // row_bytes)
    channels = x0.shape[1] if x0.ndim > 1 else 1
    per_channel = int(np.prod(x0.shape[2:])) if x0.ndim > 2 else 1
    bad = np.zeros(n, dtype=bool)
    sums = np.zeros((n, channels))
    sumsq = np.zeros((n, channels))
    regress = np.issubdtype(y0.dtype, np.floating)
    t_channels = y0.shape[1] if y0.ndim > 1 else 1
    t_per = int(np.prod(y0.shape[2:])) if y0.ndim > 2 else 1
    t_sums, t_sumsq = (np.zeros((n, t_channels)), np.zeros((n, t_channels))) if regress else (None, None)
    counts = {"inputs": 0, "targets": 0}
    first = None
    for start in range(0, n, step):
        x, y = reader.read(start, min(n, start + step))
        for name, a in (("inputs", x), ("targets", y)):
            if not np.issubdtype(a.dtype, np.floating):
                continue
            finite = np.isfinite(a)
            if not finite.all():
                counts[name] += int((~finite).sum())
                bad[start : start + len(a)] |= ~finite.reshape(len(a), -1).all(axis=1)
                if first is None:
                    where = np.argwhere(~finite)[0]
                    first = (name, start + int(where[0]), tuple(int(i) for i in where[1:]))
        _moments(x, channels, per_channel, sums, sumsq, start)
        if regress:
            _moments(y, t_channels, t_per, t_sums, t_sumsq, start)
    return Scan(bad=bad, nonfinite=counts, first=first, sums=sums, sumsq=sumsq, per_channel=per_channel, target_sums=t_sums, target_sumsq=t_sumsq, target_per_channel=t_per)


def _moments(a: np.ndarray, channels: int, per_channel: int, sums: np.ndarray, sumsq: np.ndarray, start: int) -> None:
    """Per-row, per-channel sums and sums of squares of rows `start...` into `sums`, `sumsq`."""
    a = a.reshape(len(a), channels, per_channel).astype(np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    sums[start : start + len(a)] = a.sum(axis=2)
    sumsq[start : start + len(a)] = (a * a).sum(axis=2)


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
