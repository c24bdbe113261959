"""Epoch-indexed batch order, so a run can stop anywhere and continue with the same batches.

The order of epoch e is a pure function of (seed, e): a resumed run needs only the epoch and the
batch index to rebuild it, for the in-memory fast path and for DataLoader alike (the same scheme as
DistributedSampler's set_epoch).
"""

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ember.data.loaders import TensorData


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


class EpochBatchSampler(Sampler):
    """Index batches of one epoch's order, starting at batch `start` (set by `set_epoch`)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def batches(self):
        order = epoch_order(self.n, self.shuffle, self.seed, self.epoch)
        for b in range(self.start, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]

    def __iter__(self):
        return (idx.tolist() for idx in self.batches())


class EpochLoader:
    """Batches of a split for one epoch at a time: `set_epoch(e, start)`, then iterate.

    In-memory TensorData is batched by indexing (one gather per batch, no per-sample
    __getitem__ and collate); anything else goes through a DataLoader with this batch order.
    `len()` is the full epoch's batch count, whatever the start.
    """

    def __init__(self, data: Dataset | TensorData, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0, pin_memory: bool = False, fast: bool = True):
        self.data = data
        self.sampler = EpochBatchSampler(len(data), batch_size, shuffle, seed)
        self.fast = fast and isinstance(data, TensorData)
        self.loader = None
        if not self.fast:
            self._worker_seed = torch.Generator()
            self.loader = DataLoader(
                data,
                batch_sampler=self.sampler,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=num_workers > 0,
                generator=self._worker_seed,
            )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch, start)
        if self.loader is not None:  # workers' random seeds follow the epoch too
            self._worker_seed.manual_seed((self.sampler.seed * 1_000_003 + epoch + 1) % 2**63)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        if self.loader is not None:
            return iter(self.loader)
        return self._fast_batches()

    def _fast_batches(self):
        x, y, s = self.data.x, self.data.y, self.sampler
        bs = s.batch_size
        if not s.shuffle:  # contiguous slices are views: no copy at all
            for b in range(s.start, len(self)):
                yield x[b * bs : (b + 1) * bs], y[b * bs : (b + 1) * bs]
            return
        order = epoch_order(s.n, True, s.seed, s.epoch).to(x.device)  # one transfer per epoch
        for b in range(s.start, len(self)):
            idx = order[b * bs : (b + 1) * bs]
            yield x[idx], y[idx]
