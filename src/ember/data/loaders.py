"""Datasets held as tensors, and the one loader that batches every split: EpochLoader.

Indexing a tensor with a batch of indices is one gather; a DataLoader over a TensorDataset calls
__getitem__ once per sample and then collates, which dominates small models' step time.
Datasets read from files (`reads_batches = True`, see lazy.py) get whole batches of indices
in block-shuffled order, so that a batch is a few contiguous reads.

The order of epoch e is a pure function of (seed, e), as with DistributedSampler's set_epoch: a
resumed run needs only the epoch and the batch index to continue with the same batches.
"""

import atexit
import contextlib
import multiprocessing.util
import os
import signal
import weakref
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass
class TensorData:
    """A split held in memory: inputs `x` and targets `y`, first dimension = samples."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def subset(self, index: torch.Tensor) -> "TensorData":
        return TensorData(self.x[index], self.y[index])

    def to(self, device: torch.device) -> "TensorData":
        return TensorData(self.x.to(device), self.y.to(device))


def default_workers() -> int:
    """DataLoader workers for file-backed sources: one per core, one core left to the trainer."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class BlockBatchSampler(Sampler):
    """Batches of indices for file-backed data: shuffled at the level of contiguous blocks.

    Each batch is `reads_per_batch` blocks of neighbouring indices, so reading it costs that
    many reads instead of one per sample. Block boundaries move with a random phase every
    epoch and blocks are drawn in random order, so batches differ from epoch to epoch.
    The order of epoch e depends only on (seed, e), like the trainer's in-memory order.

    With several processes (`world` > 1) the epoch's order is cut into global batches of
    `batch_size * world` consecutive indices and rank r takes the r-th `batch_size` of each, as
    EpochBatchSampler does. The exact guarantee: global batch b (the ranks' batches b together)
    is batch b of one process with `batch_size * world` and `reads_per_batch * world`, index for
    index, but for the padding of the last one (below). Blocks are sized by the per-rank batch,
    so each rank still reads its batch in `reads_per_batch` reads; one process with
    `batch_size * world` at the default `reads_per_batch` would use `world` times larger blocks,
    hence another order (unshuffled, the two orders are the same). When the epoch does not fill
    the last global batch, the order is padded by wrapping around to its start, so every rank
    gets the same number of full batches and none waits at the epoch's end for a collective that
    the others never enter. `start` in `set_epoch` counts this rank's batches, so a resumed rank
    continues exactly where it stopped.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        reads_per_batch: int = 4,
        rank: int = 0,
        world: int = 1,
    ):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.block = max(1, batch_size // reads_per_batch)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch `epoch` from this rank's batch `start` on (a resumed run skips the batches it trained)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return -(-self.n // (self.batch_size * self.world))

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        phase = int(torch.randint(self.block, (), generator=g))
        edges = torch.tensor([0, *range(phase or self.block, self.n, self.block), self.n])
        starts, lengths = edges[:-1], edges.diff()
        perm = torch.randperm(len(starts), generator=g)
        # Whole blocks first, the short ones at the two edges last, so batches (a multiple of
        # the block) start on block boundaries.
        perm = torch.cat([perm[lengths[perm] == self.block], perm[lengths[perm] != self.block]])
        starts, lengths = starts[perm], lengths[perm]
        # Block k's indices are starts[k] + 0..lengths[k]-1, laid end to end in the new order.
        offset = torch.arange(self.n) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        return torch.repeat_interleave(starts, lengths) + offset

    def batches(self):
        # The wrapped padding repeats the first blocks of the order, so its reads are contiguous too.
        return rank_batches(self.order(), self.batch_size, self.rank, self.world, self.start)

    def __iter__(self):
        # A trainer may set the epoch; used alone (a plain DataLoader), each pass is a new epoch.
        yield from (idx.tolist() for idx in self.batches())
        self.epoch, self.start = self.epoch + 1, 0


def rank_batches(order: torch.Tensor, batch_size: int, rank: int, world: int, start: int):
    """This rank's batches of an epoch's order, from its batch `start` on. Global batch b is
    `batch_size * world` consecutive indices and rank r takes the r-th `batch_size` of it. With
    several ranks the order is padded by wrapping around to its start, so every rank gets as many
    full batches and none waits at the epoch's end for a collective that the others never enter;
    one process keeps its short last batch."""
    span = batch_size * world
    count = -(-len(order) // span)
    if world > 1 and len(order) % span:
        order = order.repeat(span // len(order) + 2)[: count * span]
    lo = rank * batch_size
    # One split per epoch makes every batch's view at once: half the cost of slicing each.
    for batch in order.split(span)[start:count]:
        yield batch[lo : lo + batch_size] if world > 1 else batch


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


class EpochBatchSampler(Sampler):
    """Index batches of one epoch's order, starting at batch `start` (set by `set_epoch`).

    With several processes (`world` > 1), global batch b is `batch_size * world` consecutive
    indices of the order and rank r takes the r-th slice of it, so the ranks together train on
    exactly the batches one process would with `batch_size * world`. The order is padded by
    wrapping around so every rank gets the same number of full batches (no hang at epoch end).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return -(-self.n // (self.batch_size * self.world))

    def batches(self, order: torch.Tensor | None = None):
        if order is None:
            order = epoch_order(self.n, self.shuffle, self.seed, self.epoch)
        return rank_batches(order, self.batch_size, self.rank, self.world, self.start)

    def __iter__(self):
        return (idx.tolist() for idx in self.batches())


class EvalBatchSampler(Sampler):
    """One rank's share of an evaluation split: batches rank, rank + world, ... of the split in
    order, unpadded, so the ranks together see every sample exactly once and their metrics can
    be summed (padding, as in training, would count some samples twice). Shares differ by at
    most one batch; `most` is the largest, which a sharded model must match in forward calls."""

    shuffle, seed, epoch, start = False, 0, 0, 0  # read by EpochLoader like EpochBatchSampler's

    def __init__(self, n: int, batch_size: int, rank: int, world: int):
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        total = -(-n // batch_size)
        self.mine = range(rank, total, world)
        self.most = -(-total // world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        pass  # the same batches every time

    def __len__(self) -> int:
        return len(self.mine)

    def ranges(self):
        return ((b * self.batch_size, min(self.n, (b + 1) * self.batch_size)) for b in self.mine)

    def __iter__(self):
        return (list(range(lo, hi)) for lo, hi in self.ranges())


# What a batch system sends the whole process group (scancel: SIGTERM; SLURM's --signal: SIGUSR1;
# Ctrl-C: SIGINT): only the main process acts on it, between steps (ember.train.signals). A worker
# that died of it would make the loop fail mid-step instead of writing its checkpoint.
GROUP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, n))


def _ignore_group_signals(worker_id: int) -> None:
    """worker_init_fn: the worker ignores the group's stop signals; the main process ends it."""
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)


@contextlib.contextmanager
def _group_signals_held():
    """Starting workers: a signal sent between a worker's fork and its worker_init_fn would
    still kill it, so the signals are blocked across the start (a child inherits the mask, and
    setting SIG_IGN discards what is pending there); the main process gets its own on unblocking."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


_WITH_WORKERS: "weakref.WeakSet[DataLoader]" = weakref.WeakSet()


def _stop_workers() -> None:
    """Ends persistent workers the way torch does between runs (a None on each index queue) before
    multiprocessing's exit hook would SIGTERM them, which they now ignore: it would wait for them
    for ever. Run at exit twice over: by atexit in a main process (registered after torch's and
    multiprocessing's hooks, so it runs before them: past torch's, shutting down does nothing), and
    as a multiprocessing finalizer in a multiprocessing child (a `tune.jobs` worker), which ends
    through that exit hook without running atexit."""
    for loader in list(_WITH_WORKERS):
        _shutdown(loader)


def _shutdown(loader: DataLoader) -> None:
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None:
        iterator._shutdown_workers()
        loader._iterator = None  # a later epoch starts new workers instead of resetting dead ones


atexit.register(_stop_workers)
multiprocessing.util.Finalize(None, _stop_workers, exitpriority=100)


class EpochLoader:
    """Batches of a split for one epoch at a time: `set_epoch(e, start)`, then iterate.

    In-memory TensorData is batched by indexing (one gather per batch, no per-sample
    __getitem__ and collate); anything else goes through a DataLoader with this batch order.
    `len()` is the full epoch's batch count, whatever the start. With `evaluation=True` and
    several ranks, each rank gets its unpadded share of the split (EvalBatchSampler) and
    `sharded` is set: the evaluation's sums must then be combined across ranks.
    """

    def __init__(
        self,
        data: Dataset | TensorData,
        batch_size: int,
        shuffle: bool,
        *,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        fast: bool = True,
        rank: int = 0,
        world: int = 1,
        evaluation: bool = False,
        persistent: bool = True,
    ):
        self.data = data
        lazy = getattr(data, "reads_batches", False)
        # A split of fewer batches than ranks is evaluated whole by every rank instead.
        self.sharded = evaluation and world > 1 and -(-len(data) // batch_size) >= world
        if evaluation and not self.sharded:
            rank, world = 0, 1
        if self.sharded:
            self.sampler = EvalBatchSampler(len(data), batch_size, rank, world)
        elif lazy:
            # A reader of one file per row gains nothing from blocks: blocks of one sample.
            reads = 4 if getattr(data, "block_reads", True) else batch_size
            self.sampler = BlockBatchSampler(
                len(data), batch_size, shuffle, seed, reads_per_batch=reads, rank=rank, world=world
            )
        else:
            self.sampler = EpochBatchSampler(len(data), batch_size, shuffle, seed, rank, world)
        self.fast = fast and isinstance(data, TensorData)
        self.loader = None
        if not self.fast:
            self._worker_seed = torch.Generator()
            common = dict(
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=persistent and num_workers > 0,
                generator=self._worker_seed,
                worker_init_fn=_ignore_group_signals if num_workers else None,
            )
            if lazy:  # batch_size=None: the sampler yields whole batches, the dataset reads each at once
                self.loader = DataLoader(data, sampler=self.sampler, batch_size=None, **common)
            else:
                self.loader = DataLoader(data, batch_sampler=self.sampler, **common)
            if num_workers:
                _WITH_WORKERS.add(self.loader)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch, start)
        if self.loader is not None:
            # Workers' random seeds follow the epoch too, and differ by rank. (Persistent workers
            # keep the seed of the epoch they started in; ember's datasets draw no random numbers
            # in workers, so batches do not depend on it.) The CPU generator keeps only the low
            # 32 bits of a seed, so the rank is mixed in there rather than in high bits.
            self._worker_seed.manual_seed(
                (self.sampler.seed * 1_000_003 + epoch + 1 + self.sampler.rank * 1_000_003**2) % 2**63
            )

    def __len__(self) -> int:
        return len(self.sampler)

    def stop_workers(self) -> None:
        """End this loader's worker processes now (each holds its own reads and file handles);
        iterating again starts new ones."""
        if self.loader is not None and self.loader.num_workers:
            _shutdown(self.loader)

    def __iter__(self):
        if self.loader is not None:
            with _group_signals_held() if self.loader.num_workers else contextlib.nullcontext():
                return iter(self.loader)
        return self._fast_batches()

    def _fast_batches(self):
        x, y, s = self.data.x, self.data.y, self.sampler
        if self.sharded:  # contiguous ranges: views, no copy
            for lo, hi in s.ranges():
                yield x[lo:hi], y[lo:hi]
            return
        bs = s.batch_size
        if not s.shuffle and s.world == 1:  # contiguous slices are views: no copy at all
            for b in range(s.start, len(self)):
                yield x[b * bs : (b + 1) * bs], y[b * bs : (b + 1) * bs]
            return
        order = epoch_order(s.n, s.shuffle, s.seed, s.epoch).to(x.device)  # one transfer per epoch
        # index_select, not x[idx]: the same rows, without advanced indexing's general path
        # (half the time per batch on small batches, where it shows).
        for idx in s.batches(order):
            yield x.index_select(0, idx), y.index_select(0, idx)
