"""Data loading throughput, side by side in one process: ember's loaders against the usual way.

(a) in memory: ember's fast path (EpochLoader: one gather per batch) against
    DataLoader(TensorDataset) (one __getitem__ per sample, then collate), batch 64, 40 features;
(b) HDF5: ember's reader (block-shuffled batches, a few contiguous slice reads per batch) against
    a naive per-sample h5py Dataset in a DataLoader, on the same file.

    OMP_NUM_THREADS=1 python benchmarks/data_throughput.py [--samples 100000] [--out FILE]

Prints a table of samples/s with the ratio and the issue's target, and writes it as JSON.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ember import load_data
from ember.data.loaders import EpochLoader, TensorData


def samples_per_s(make_iter, n: int, repeats: int) -> float:
    """Best of `repeats` full epochs (the first also warms caches up)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x, _ in make_iter():
            x.sum()  # touch every batch, as a training step would
        best = min(best, time.perf_counter() - start)
    return n / best


class NaiveH5(Dataset):
    """What a tutorial writes: one h5py read per sample, a handle opened lazily per worker."""

    def __init__(self, path: str):
        self.path = path
        self.file = None
        with h5py.File(path, "r") as f:
            self.n = len(f["y"])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.file is None:
            self.file = h5py.File(self.path, "r")
        return torch.from_numpy(self.file["x"][i]), int(self.file["y"][i])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000, help="samples in the in-memory case")
    parser.add_argument("--h5-samples", type=int, default=20_000, help="samples in the HDF5 file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers in the HDF5 case (both sides)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_throughput.json"))
    args = parser.parse_args()
    bs = args.batch_size
    rows = []

    # (a) in memory, 40 features
    x, y = torch.randn(args.samples, 40), torch.randint(0, 10, (args.samples,))
    fast = samples_per_s(lambda: EpochLoader(TensorData(x, y), bs, shuffle=True, seed=0), args.samples, args.repeats)
    base = samples_per_s(
        lambda: DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True), args.samples, args.repeats
    )
    rows.append(
        {
            "case": f"in memory, {args.samples} x 40, batch {bs}",
            "baseline": "DataLoader(TensorDataset)",
            "baseline_samples_per_s": base,
            "ember_samples_per_s": fast,
            "target_ratio": 3.0,
        }
    )

    # (b) HDF5, samples of (4, 64) float32
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.h5")
        rng = np.random.default_rng(0)
        with h5py.File(path, "w") as f:
            f["x"] = rng.normal(size=(args.h5_samples, 4, 64)).astype(np.float32)
            f["y"] = rng.integers(0, 10, size=args.h5_samples)
        train = load_data("hdf5", path=path, val_fraction=0, test_fraction=0, num_workers=args.workers).train
        n = len(train)
        ours = samples_per_s(
            lambda: EpochLoader(train, bs, shuffle=True, seed=0, num_workers=args.workers), n, args.repeats
        )
        naive = NaiveH5(path)
        theirs = samples_per_s(
            lambda: DataLoader(naive, batch_size=bs, shuffle=True, num_workers=args.workers), n, args.repeats
        )
    rows.append(
        {
            "case": f"HDF5, {args.h5_samples} x (4, 64), batch {bs}, {args.workers} workers",
            "baseline": "per-sample h5py Dataset + DataLoader",
            "baseline_samples_per_s": theirs,
            "ember_samples_per_s": ours,
            "target_ratio": 5.0,
        }
    )

    for r in rows:
        r["ratio"] = r["ember_samples_per_s"] / r["baseline_samples_per_s"]
        r["meets_target"] = r["ratio"] >= r["target_ratio"]
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'baseline/s':>12}  {'ember/s':>12}  {'ratio':>7}  target")
    for r in rows:
        mark = "ok" if r["meets_target"] else "MISSED"
        print(
            f"{r['case']:<{width}}  {r['baseline_samples_per_s']:>12,.0f}  {r['ember_samples_per_s']:>12,.0f}  "
            f"{r['ratio']:>6.1f}x  >= {r['target_ratio']:.0f}x {mark}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    out.write_text(json.dumps({"rows": rows, "machine": meta}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
