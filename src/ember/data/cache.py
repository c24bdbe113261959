"""Simulated data kept on disk: generated once per set of arguments, read back after that."""

import hashlib
import json
import time
from collections.abc import Callable

import torch

from ember.files import cache_dir, write_atomic


def cached_arrays(name: str, args: dict, make: Callable[[], dict[str, torch.Tensor]], enabled: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """`make()`'s tensors, read from the cache if this `name` and `args` were generated before.

    Returns them with a note for the run output that says where the file lies (so the user can
    delete it) or how long generation took. `args` must hold everything the tensors depend on,
    including a solver version where the solver changes.
    """
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{key}.pt"
    if enabled and path.exists():
        return torch.load(path, weights_only=True), f"data={name} read from the cache {path} (delete it to regenerate)"
    start = time.perf_counter()
    arrays = make()
    seconds = time.perf_counter() - start
    if not enabled:
        return arrays, f"data={name} generated in {seconds:.1f} s"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(arrays, f))
    return arrays, f"data={name} generated in {seconds:.1f} s and cached in {path} (delete it to regenerate; data.cache=false skips the cache)"
