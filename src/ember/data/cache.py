"""Simulated data kept on disk: generated once per set of arguments, read back after that.

The cache only saves time, so nothing in it may stop a run: a damaged file (truncated by a full
disk, a copy cut short, a write of an older ember that was not atomic) is reported and made again,
and a cache that cannot be written (a full or read-only disk) leaves the run with the arrays it
generated. Files are written atomically (ember.files.write_atomic): a job killed mid-write leaves
no half file behind.
"""

import hashlib
import json
import pickle
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.files import cache_dir, write_atomic

Arrays = dict[str, Any]  # name -> tensor (or numpy array, for .npz files)
# How a damaged file fails: torch's zip reader (RuntimeError, OSError), the unpickler, numpy's
# header and zip checks (ValueError, BadZipFile: a truncated archive or a bad CRC), an empty file.
DAMAGED = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    zlib.error,
)


def cache_key(args: dict) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]


def cached_arrays(
    name: str, args: dict, make: Callable[[], dict[str, torch.Tensor]], enabled: bool = True, keys: tuple[str, ...] = ()
) -> tuple[dict[str, torch.Tensor], str]:
    """`make()`'s tensors, read from the cache if this `name` and `args` were generated before.

    Returns them with a note for the run output that says where the file lies (so the user can
    delete it) or how long generation took. `args` must hold everything the tensors depend on,
    including a solver version where the solver changes. `keys`: the tensors a good file holds.
    """
    path = cache_dir() / f"{name}-{cache_key(args)}.pt"
    return cached(name, path, make, read=_read_pt, write=lambda f, d: torch.save(d, f), keys=keys, enabled=enabled)


def cached_npz(
    name: str, args: dict, make: Callable[[], dict[str, np.ndarray]], keys: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], str]:
    """The same for numpy arrays, kept as one .npz file."""
    path = cache_dir() / f"{name}-{cache_key(args)}.npz"
    return cached(name, path, make, read=_read_npz, write=lambda f, d: np.savez(f, **d), keys=keys)


def cached(
    name: str,
    path: Path,
    make: Callable[[], Arrays],
    *,
    read: Callable[[Path], Arrays],
    write: Callable[[Any, Arrays], None],
    keys: tuple[str, ...],
    enabled: bool = True,
) -> tuple[Arrays, str]:
    """`read(path)` if it holds a good file, else `make()`, written to `path` for next time."""
    damaged = None
    if enabled and path.exists():
        try:
            return _checked(read(path), keys), f"data={name} read from the cache {path} (delete it to regenerate)"
        except DAMAGED as e:
            damaged = f"warning: the cached data={name} file {path} was damaged ({_first_line(e)}): "
    start = time.perf_counter()
    arrays = make()
    took = f"data={name} generated in {time.perf_counter() - start:.1f} s"
    if not enabled:
        return arrays, took
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: write(f, arrays))
    except OSError as e:
        note = f"{took}; not cached: cannot write {path} ({e.strerror or e})"
    else:
        note = f"{took} and cached in {path} (delete it to regenerate; data.cache=false skips the cache)"
    return arrays, (damaged or "") + note


def _read_pt(path: Path) -> Arrays:
    return torch.load(path, weights_only=True)


def _read_npz(path: Path) -> Arrays:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}  # read every member now: a truncated one fails here


def _checked(arrays: Any, keys: tuple[str, ...]) -> Arrays:
    if not isinstance(arrays, dict) or not set(keys) <= set(arrays):
        raise ValueError(
            f"it holds {type(arrays).__name__} {sorted(arrays) if isinstance(arrays, dict) else ''}, "
            f"not the arrays {', '.join(keys)}"
        )
    if any(not isinstance(arrays[k], (torch.Tensor, np.ndarray)) for k in keys):
        raise ValueError("it holds something other than arrays")
    return arrays


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
