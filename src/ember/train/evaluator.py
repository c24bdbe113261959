"""The evaluator: a model's mean loss and its task's metrics over a loader, built without an
optimizer. The trainer's validation and final test use it; so can anything that scores a model
(`ember eval`, the baselines' model predictor through `forward`).

It holds what evaluation reads and nothing that trains: the weights it evaluates (the moving
average under trainer.ema), the module that computes outputs (compiled, never the DDP wrapper,
whose hooks are for training), the loss, the torchmetrics collection, the device, precision and
layout, and the fitted baselines whose climatology the anomaly correlation takes as reference.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.scoring import baselines
from ember.train import distributed, strategy
from ember.train.distributed import Dist


@dataclass(kw_only=True, eq=False)
class Evaluator:
    model: nn.Module  # the weights evaluated (best.pt's, the average under trainer.ema)
    module: nn.Module  # what computes outputs from inputs: `model`, compiled, or the average
    loss_fn: nn.Module | None  # None: the model defines its own loss(batch)
    metrics: nn.Module  # torchmetrics collection of the task
    spec: DataSpec
    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 | fp16
    autocast: Callable[[], Any] = contextlib.nullcontext
    channels_last: bool = False
    reference: Any = None  # what the baselines predict (the train split's climatology, or majority class)
    dist: Dist = field(default_factory=Dist)
    sharded_params: bool = False  # FSDP's DTensor parameters: no inference mode

    @property
    def own_loss(self) -> bool:
        return self.loss_fn is None

    def evaluate(self, loader, split: str | None = None) -> dict[str, float]:
        """Mean loss and the task's metrics over a loader of `split` (which names the climatology
        of its samples' times, for `acc`); one host sync at the end."""
        # FSDP gathers parameters into tensors it reuses for training: inference-mode tensors
        # cannot be, so a sharded model evaluates under no_grad.
        with torch.no_grad() if self.sharded_params else torch.inference_mode():
            return self._evaluate(loader, split)

    def _evaluate(self, loader, split: str | None) -> dict[str, float]:
        self.model.eval()
        self.metrics.reset()
        strategy.sync_buffers(self.model, self.dist)
        loss_sum, n = torch.zeros((), device=self.device), 0
        # The seasonal climatology of each batch's valid times: the reference of `acc`.
        clim = baselines.batch_climatology(self.reference, split, loader)
        for i, (x, y) in enumerate(loader):
            loss_sum += self._batch(x, y, clim(i, len(x)) if clim else None)
            n += len(x)
        if loader.sharded and self.sharded_params:
            # FSDP gathers parameters in every forward, so every rank makes as many calls: a rank
            # with one batch fewer makes its last one on an empty batch, and counts nothing.
            for _ in range(loader.sampler.most - len(loader)):
                self._batch(x[:0], y[:0])
        if loader.sharded:  # each rank saw its share: the loss is summed here, torchmetrics syncs its own
            both = torch.stack([loss_sum, torch.tensor(float(n), device=self.device)])
            loss_sum, n = distributed.sum_(both, self.dist)
        result = {"loss": (loss_sum / max(n, 1)).item()}
        if not self.own_loss:
            result.update({k: v.item() for k, v in self.metrics.compute().items()})
        return result

    def _batch(self, x, y, clim: torch.Tensor | None = None) -> torch.Tensor:
        """The summed loss over one batch; the task's metrics take the batch too (and `clim`,
        its climatology, for the anomaly correlation)."""
        x, y = self.to_device(x), self.to_device(y)
        with self.autocast():
            if self.own_loss:
                loss, _ = self.model.loss((x, y))
            else:
                out = self.module(x)
                loss = self.loss_fn(out, y)
                if len(x):
                    if clim is None:
                        self.metrics.update(out.float(), y)
                    else:
                        self.metrics.update(out.float(), y, climatology=clim.to(self.device))
        return loss.float() * len(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs on a batch of standardized inputs, as evaluation computes them
        (device, precision, evaluated weights): the baselines score the model through it."""
        self.model.eval()
        with torch.no_grad(), self.autocast():
            return self.module(self.to_device(x))

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        if t.device != self.device:
            t = t.to(self.device, non_blocking=True)
        if self.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t
