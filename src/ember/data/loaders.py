"""Datasets held as tensors, and the loader that batches them by indexing.

Indexing a tensor with a batch of indices is one gather; a DataLoader over a TensorDataset calls
__getitem__ once per sample and then collates, which dominates small models' step time.
"""

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset


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


class TensorLoader:
    """Yields (x, y) batches of a TensorData; reshuffles each epoch from its own generator."""

    def __init__(self, data: TensorData, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __iter__(self):
        n = len(self.data)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.data.x.device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield self.data.x[idx], self.data.y[idx]
        else:  # contiguous slices are views: no copy at all
            for start in range(0, n, self.batch_size):
                yield self.data.x[start : start + self.batch_size], self.data.y[start : start + self.batch_size]


def make_loader(
    data: Dataset | TensorData,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
):
    """The fast path for in-memory tensors, a DataLoader for everything else."""
    if isinstance(data, TensorData):
        return TensorLoader(data, batch_size, shuffle, generator)
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
