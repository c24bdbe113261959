"""What a logging interval measured: loss, throughput, step time, data wait, memory, MFU.

Losses stay on the device, one by one, and are read once per interval: that read is the loop's
only host sync, and it also finds the first non-finite loss and the step it came from. Data wait
is the host time spent waiting for the next batch, the number that says whether a run is
input-bound.
"""

import resource
import sys
import time

import torch

# The most losses an interval keeps one by one; past that, those so far become one sum that a
# non-finite loss is traced to as a span of steps (memory stays bounded when logging is rare).
KEEP = 1024


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in kilobytes on Linux and bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class IntervalMeter:
    def __init__(self, device: torch.device, flops_per_step: float | None = None, peak_flops: float | None = None):
        self.device = device
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self.total_wait = 0.0  # over the whole run, for the end-of-run summary
        self.reset()

    def reset(self) -> None:
        self.losses: list[torch.Tensor] = []  # the interval's losses, on the device
        self.labels: list = []  # where each came from: a step number, or (first, last) once folded
        self.micro = self.samples = self.steps = 0
        self.wait = 0.0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, samples: int, label=None) -> None:
        if len(self.losses) == KEEP:
            self._fold()
        self.losses.append(loss.detach())  # a list append: cheaper than an add kernel
        self.labels.append(label)
        self.micro += 1
        self.samples += samples

    def _fold(self) -> None:
        first, last = self.labels[0], self.labels[-1]
        span = (first[0] if isinstance(first, tuple) else first, last)
        self.losses, self.labels = [self.loss_sum()], [span]

    def loss_sum(self) -> torch.Tensor:
        """The interval's losses added in order (the order a resumed run adds them in too)."""
        total = torch.zeros((), device=self.device)
        for loss in self.losses:
            total = total + loss
        return total

    def first_nonfinite(self):
        """The label of the interval's first NaN/Inf loss, or None: one host sync."""
        if not self.losses:
            return None
        finite = torch.isfinite(torch.stack([loss.float() for loss in self.losses])).tolist()
        return None if all(finite) else self.labels[finite.index(False)]

    def waited(self, seconds: float) -> None:
        self.wait += seconds
        self.total_wait += seconds

    def record(self, reduce=None, world: int = 1) -> dict:
        """The interval's numbers; reading the loss here is the one host sync per interval.

        Across processes, `reduce` averages the loss over ranks and throughput counts all of them.
        """
        loss = self.loss_sum() / max(self.micro, 1)
        loss = (reduce(loss) if reduce else loss).item()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {
            "loss": loss,
            "samples_per_s": round(world * self.samples / elapsed),
            "step_ms": round(1000 * elapsed / max(self.steps, 1), 3),
            "data_wait": round(self.wait / elapsed, 4),
            "peak_mem_mb": round(peak_memory_mb(self.device), 1),
        }
        if self.flops_per_step and self.peak_flops and self.steps:
            out["mfu"] = round(self.flops_per_step * self.steps / elapsed / self.peak_flops, 5)
        return out

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum().cpu(), "micro": self.micro}

    def load_state_dict(self, d: dict) -> None:
        """The interval's losses go on where they stopped, so the logged loss is the one an
        uninterrupted run logs; its time starts now, so the steps and samples that throughput
        and step time divide by are only those this process timed."""
        self.reset()
        self.losses, self.labels = [d["loss_sum"].to(self.device)], [None]
        self.micro = d["micro"]
