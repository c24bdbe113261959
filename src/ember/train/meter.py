"""What a logging interval measured: loss, throughput, step time, data wait, memory, MFU.

Losses accumulate on the device and are read once per interval: that `.item()` is the loop's only
host sync. Data wait is the host time spent waiting for the next batch, the number that says
whether a run is input-bound.
"""

import resource
import sys
import time

import torch


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
        self.loss_sum = torch.zeros((), device=self.device)
        self.micro = self.samples = self.steps = 0
        self.wait = 0.0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.loss_sum += loss.detach()
        self.micro += 1
        self.samples += samples

    def waited(self, seconds: float) -> None:
        self.wait += seconds
        self.total_wait += seconds

    def record(self, reduce=None, world: int = 1) -> dict:
        """The interval's numbers; reading the loss here is the one host sync per interval.

        Across processes, `reduce` averages the loss over ranks and throughput counts all of them.
        """
        loss = self.loss_sum / max(self.micro, 1)
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
        return {"loss_sum": self.loss_sum.cpu(), "micro": self.micro, "samples": self.samples, "steps": self.steps}

    def load_state_dict(self, d: dict) -> None:
        self.reset()
        self.loss_sum = d["loss_sum"].to(self.device)
        self.micro, self.samples, self.steps = d["micro"], d["samples"], d.get("steps", 0)
