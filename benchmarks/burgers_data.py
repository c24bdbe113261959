"""Generating the FNO paper's Burgers data: ember's coarse-grid solver beside the full-grid one.

The benchmark's data is 1100 solutions at s=1024 (viscosity 0.1, t=1). The full-grid solver
(`solve_burgers` on the 1024-point grid, what `data=burgers` ran before) takes minutes for them;
`burgers_solution` solves on the coarsest grid that resolves the solution and interpolates
spectrally. The full-grid solver runs on the first `reference` samples only and its time is scaled
to all of them (its step follows the batch's largest value, so the scaled time is, if anything,
low); both are compared to each other on those samples.

    OMP_NUM_THREADS=1 python benchmarks/burgers_data.py [samples] [resolution] [reference]

Prints the wall times, the speed-up and the largest relative difference, and writes
benchmarks/results/burgers_data.json.
"""

import json
import platform
import sys
import time
from pathlib import Path

import torch

from ember.data.physics import burgers_solution, random_field, solve_burgers


def main(samples: int = 1100, resolution: int = 1024, reference: int = 110) -> None:
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
    record = {
        "samples": samples,
        "resolution": resolution,
        "reference_samples": reference,
        "full_grid_s": round(full_s, 2),
        "coarse_grid_s": round(fast_s, 2),
        "speedup": round(full_s / fast_s, 1),
        "max_relative_difference": diff,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    out = Path(__file__).parent / "results" / "burgers_data.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
