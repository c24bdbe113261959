"""What the loop counts and decides with: its counters (saved in every checkpoint) and the
metric it watches."""

import math
from dataclasses import dataclass


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    batch: int = 0  # micro-batches of the current epoch already trained on
    step: int = 0  # optimizer steps taken
    skipped_steps: int = 0  # consecutive steps skipped for a non-finite loss (nan_policy=skip)
    best: float | None = None  # best value of the monitored metric
    best_epoch: int | None = None
    best_step: int | None = None
    bad_validations: int = 0  # validations since the last improvement (early stopping)
    stop_reason: str | None = None

    @property
    def epoch_in_progress(self) -> int:
        """The 1-based number of the epoch records belong to: the one in progress, or at an
        epoch's end (its validation, its checkpoint) the one just completed."""
        return (self.epoch + 1 if self.batch else self.epoch) or 1


@dataclass
class Monitor:
    """The validation metric that picks the best checkpoint and stops early."""

    name: str  # "val/<metric>"
    higher_better: bool
    patience: int  # validations without improvement before stopping; 0: never

    def improved(self, value: float, best: float | None) -> bool:
        if not math.isfinite(value):
            return False
        return best is None or (value > best if self.higher_better else value < best)
