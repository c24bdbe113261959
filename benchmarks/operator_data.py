"""Generating the FNO paper's data: Burgers (ember's coarse-grid solver beside the full-grid one)
and Darcy flow (sparse finite differences) at the paper's resolutions 85 and 141.

The benchmark's data is 1100 solutions at s=1024 (viscosity 0.1, t=1). The full-grid solver
(`solve_burgers` on the 1024-point grid, what `data=burgers` ran before) takes minutes for them;
`burgers_solution` solves on the coarsest grid that resolves the solution and interpolates
spectrally. The full-grid solver runs on the first `reference` samples only and its time is scaled
to all of them (its step follows the batch's largest value, so the scaled time is, if anything,
low); both are compared to each other on those samples.

Darcy is timed on `darcy_samples` samples per resolution and scaled to `samples`.

    OMP_NUM_THREADS=1 python benchmarks/operator_data.py [samples] [resolution] [reference] [darcy_samples]

Prints the wall times, the speed-up and the largest relative difference, and writes
benchmarks/results/operator_data.json.
"""

import json
import platform
import sys
import time
from pathlib import Path

import torch

from ember.data.darcy import permeability, solve_darcy
from ember.data.physics import burgers_solution, random_field, solve_burgers


def darcy_seconds(samples: int, resolution: int) -> float:
    a = permeability(samples, resolution, torch.Generator().manual_seed(0)).numpy()
    start = time.perf_counter()
    for sample in a:
        solve_darcy(sample)
    return time.perf_counter() - start


def main(samples: int = 1100, resolution: int = 1024, reference: int = 110, darcy_samples: int = 100) -> None:
    u0 = random_field(samples, resolution, torch.Generator().manual_seed(0))
    start = time.perf_counter()
    fast = burgers_solution(u0, 0.1, 1.0)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    full = solve_burgers(u0[:reference], 0.1, 1.0)
    full_s = (time.perf_counter() - start) * samples / reference
    diff = ((fast[:reference] - full).norm(dim=-1) / full.norm(dim=-1)).max().item()
    print(f"burgers, {samples} samples at s={resolution}, {torch.get_num_threads()} threads")
    print(f"{'full grid (scaled from ' + str(reference) + ')':<32} {full_s:>8.1f} s")
    print(f"{'coarse grid + interpolation':<32} {fast_s:>8.1f} s   {full_s / fast_s:.0f}x faster")
    print(f"{'largest relative difference':<32} {diff:>8.1e}   (float32 resolution 6e-8)")
    darcy = {s: darcy_seconds(darcy_samples, s) * samples / darcy_samples for s in (85, 141)}
    for s, seconds in darcy.items():
        print(f"{f'darcy, {samples} at s={s} (scaled)':<32} {seconds:>8.1f} s")
    record = {
        "samples": samples,
        "resolution": resolution,
        "reference_samples": reference,
        "full_grid_s": round(full_s, 2),
        "coarse_grid_s": round(fast_s, 2),
        "speedup": round(full_s / fast_s, 1),
        "max_relative_difference": diff,
        "darcy_s": {str(s): round(seconds, 1) for s, seconds in darcy.items()},
        "darcy_timed_samples": darcy_samples,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    out = Path(__file__).parent / "results" / "operator_data.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
