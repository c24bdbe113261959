"""Where and how a run computes: the device, the precision, torch's process-wide switches, and
the random seeds."""

import contextlib
import ctypes
import os
import platform
import random
import sys

import numpy as np
import torch

from ember.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but MPS is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 autocast on GPUs that run it natively, fp32 elsewhere."""
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_torch_flags(device: torch.device, tf32: bool, deterministic: bool, keep_memory: bool = False) -> None:
    """The run's process-wide switches; `restored_torch_flags` puts the previous ones back (all
    but malloc's, see keep_freed_memory, which `keep_memory` asks for on CPU)."""
    if deterministic:
        # cuBLAS needs this set before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        # TF32 matmuls and convolutions: ~8x the fp32 rate on Ampere+ at ~1e-3 relative error.
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    if device.type == "cpu" and keep_memory:
        keep_freed_memory()


# glibc's mallopt parameters (malloc.h); mallopt takes an int, so 2 GiB - 1 is the largest value.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, MALLOPT_MAX = -1, -3, 2**31 - 1


def keep_freed_memory(environ: dict | None = None) -> bool:
    """Have glibc's malloc keep freed memory for reuse; whether it was set.

    By default a CPU tensor above 32 MB (a Darcy FNO batch's activations) is a fresh mmap each
    step, and the kernel zeroes its pages again: with the memory kept, a Darcy FNO step took 0.60x
    the time (353 ms against 585, benchmarks/fno_step.py). The process keeps its peak memory, as
    torch's caching allocator does on CUDA, and for the rest of the process: mallopt cannot be
    undone. The first few steps may still take fresh pages: torch's 64-byte aligned requests ask
    for a little more than a freed block holds until freed neighbours merge. A user's own
    GLIBC_TUNABLES or MALLOC_* settings win; elsewhere than glibc nothing changes.

    Only for data held in memory: batches read from files come in sizes that vary (blocks of
    rows, slices of a baseline's scoring), their freed blocks fragment the heap, and a kept heap
    then grows without bound (a 0.38 GB gridded dataset took 4 GB in one process, 8 with workers).
    """
    environ = os.environ if environ is None else environ
    own = "GLIBC_TUNABLES" in environ or any(k.startswith("MALLOC_") for k in environ)
    if own or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":  # musl's mallopt does nothing
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_TRIM_THRESHOLD, MALLOPT_MAX)) and bool(mallopt(M_MMAP_THRESHOLD, MALLOPT_MAX))


@contextlib.contextmanager
def restored_torch_flags():
    """Around a run: torch's global switches (TF32, cuDNN autotuning, deterministic algorithms,
    CPU threads) and cuBLAS's workspace setting come back as they were, so `ember.fit` leaves a
    notebook's process as it found it."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    try:
        yield
    finally:
        matmul_tf32, cudnn_tf32, benchmark, deterministic, warn_only, threads, workspace = saved
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
        torch.backends.cudnn.benchmark = benchmark
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace
