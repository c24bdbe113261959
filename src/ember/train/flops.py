"""FLOPs per training step and the device's peak, for model FLOP utilization (MFU).

FLOPs are counted once, with torch.utils.flop_counter, on a copy of the model under a forked RNG,
so counting changes neither the weights, the BatchNorm statistics nor the random stream (a resumed
run must draw the same numbers as an uninterrupted one). The CPU peak is measured once per machine
by a short matmul probe and cached; GPU peaks come from the vendors' data sheets.
"""

import copy
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ember.files import cache_dir, write_atomic

# Dense peak TFLOP/s per GPU: (TF32 / fp32 path, bf16 / fp16 tensor cores), from data sheets.
GPU_PEAK_TFLOPS = {
    "H200": (494.7, 989.4),
    "H100 PCIe": (378.0, 756.0),
    "H100": (494.7, 989.4),
    "A100": (156.0, 312.0),
    "L40S": (183.0, 362.0),
    "L4": (60.0, 121.0),
    "A10": (62.5, 125.0),
    "RTX 4090": (82.6, 165.2),
    "V100": (15.7, 125.0),
    "T4": (8.1, 65.0),
}


def loss_step_flops(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """FLOPs of one training step's passes under `loss_fn(out, y)`, or (None) the model's own loss(batch)."""
    if loss_fn is None:
        return count_step_flops(model, lambda m, x, y: m.loss((x, y))[0], x, y)
    return count_step_flops(model, lambda m, x, y: loss_fn(m(x), y), x, y)


def count_step_flops(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """FLOPs of one forward and backward pass on this batch; None where counting fails."""
    try:
        clone = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            with FlopCounterMode(display=False) as counter:
                loss = loss_fn(clone, x, y)
                loss.backward()
        return float(counter.get_total_flops()) or None
    except Exception:  # noqa: BLE001 -- an uncountable op must not stop training
        return None


def peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (tf32, half) in GPU_PEAK_TFLOPS.items():
            if key in name:
                return 1e12 * (half if precision in ("bf16", "fp16") else tf32)
        return None
    if device.type == "cpu":
        return cpu_peak_flops()
    return None


def cpu_peak_flops() -> float:
    """float32 matmul FLOP/s of this machine at the current thread count, measured once and cached."""
    key = f"{platform.machine()}-{cpu_name()}-{torch.get_num_threads()}threads-torch{torch.__version__}"
    cache = cache_dir() / "peak_flops.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in known:
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        known[key] = 2 * n**3 / best
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, json.dumps(known, indent=1))
    return known[key]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
