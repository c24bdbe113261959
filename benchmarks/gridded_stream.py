"""A multi-file gridded dataset larger than memory, streamed through a training epoch: ember's
gridded reader against a plain xarray + DataLoader loop, side by side in one run.

    python benchmarks/gridded_stream.py                   # 8 GB of yearly NetCDF files (written once, reused)
    python benchmarks/gridded_stream.py --gb 1 --dir /tmp/stream1 --out benchmarks/results/gridded_stream_1gb.json
    python benchmarks/gridded_stream.py --gb 2 --dir /tmp/stream2 --out benchmarks/results/gridded_stream_2gb.json

The files are what CMIP and ERA5 deliver: one file a year of daily fields (two variables, a
noleap calendar, time bounds), read as one dataset through `data.path='DIR/*.nc'`. Both sides
train the same small U-Net (ember's `unet`, width 4, depth 1) for one epoch, forecasting the
fields one day ahead, with the same batch size and DataLoader workers, each in its own process
so that its peak memory is its own (proportional set size of the process and its workers, so that
pages a forked worker shares count once). Printed: samples/s of the training epoch, the share of
it spent waiting for data, and the peak memory beside the data's size, with the ratios; written
to benchmarks/results/gridded_stream.json. Run it at two sizes to see whether memory follows the
data's size (it must not).

The reference is what a tutorial writes: `xr.open_mfdataset` once, a Dataset whose
`__getitem__` reads one time step of each variable, a DataLoader that shuffles samples.
ember's run also makes its one streaming pass for the train split's statistics and scores the
held-out split and the baselines; those are timed apart (the run's wall time) and do not enter
the epoch's throughput.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VARIABLES = ("t2m", "u10")


def write_years(root: Path, gb: float, nlat: int, nlon: int) -> list[Path]:
    """Yearly files of daily fields until the set holds about `gb` GB; existing ones are kept."""
    import cftime
    import xarray as xr

    per_year = 365 * len(VARIABLES) * nlat * nlon * 4
    years = max(2, round(gb * 1e9 / per_year))
    root.mkdir(parents=True, exist_ok=True)
    lat = np.linspace(90, -90, nlat)  # north first, as ERA5
    lon = np.linspace(0, 360, nlon, endpoint=False)
    paths = []
    for k in range(years):
        year = 1950 + k
        path = root / f"fields_{year}.nc"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(year)
        days = [cftime.DatetimeNoLeap(year, 1, 1) + datetime.timedelta(days=d) for d in range(365)]
        bounds = np.array([[d, d + datetime.timedelta(days=1)] for d in days])
        t = np.arange(365)[:, None, None]
        season = np.cos(2 * np.pi * t / 365)
        base = 280 + 20 * np.cos(np.deg2rad(lat))[None, :, None] + 8 * season
        data = {
            v: (
                ("time", "lat", "lon"),
                (base + rng.normal(0, 2, (365, nlat, nlon))).astype(np.float32),
                {"units": "K" if v == "t2m" else "m s-1"},
            )
            for v in VARIABLES
        }
        ds = xr.Dataset(data, coords={"time": days, "lat": lat, "lon": lon})
        ds["time_bnds"] = (("time", "bnds"), bounds)
        ds.time.attrs["bounds"] = "time_bnds"
        encoding = {v: {"chunksizes": (1, nlat, nlon)} for v in VARIABLES}
        encoding["time"] = {"units": "days since 1950-01-01", "calendar": "noleap"}
        encoding["time_bnds"] = {"units": "days since 1950-01-01", "calendar": "noleap"}
        tmp = path.with_suffix(".tmp")
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        os.replace(tmp, path)
    return paths


REFERENCE = r'''
import json, resource, sys, time
import numpy as np, torch, xarray as xr
from torch.utils.data import DataLoader, Dataset
from ember import create_model
from ember.data.spec import DataSpec

files, variables, batch, workers = json.loads(sys.argv[1])
ds = xr.open_mfdataset(files, combine="by_coords")

class Steps(Dataset):
    """One time step of each variable as the input, the next as the target."""
    def __init__(self):
        self.ds = None
        self.n = ds.sizes["time"] - 1
    def __len__(self):
        return self.n
    def __getitem__(self, i):
        if self.ds is None:  # one handle per worker
            self.ds = xr.open_mfdataset(files, combine="by_coords")
        x = np.stack([self.ds[v].isel(time=i).values for v in variables])
        y = np.stack([self.ds[v].isel(time=i + 1).values for v in variables])
        return torch.from_numpy((x - 280) / 20), torch.from_numpy((y - 280) / 20)

grid = tuple(ds[variables[0]].shape[1:])
spec = DataSpec(input_shape=(len(variables), *grid), task="regression", target_shape=(len(variables), *grid))
torch.manual_seed(0)
model = create_model("unet", spec, width=4, depth=1)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
loader = DataLoader(Steps(), batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=False)
start, wait, n = time.perf_counter(), 0.0, 0
t = time.perf_counter()
for x, y in loader:
    wait += time.perf_counter() - t
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    n += len(x)
    t = time.perf_counter()
elapsed = time.perf_counter() - start
print(json.dumps({"samples": n, "seconds": elapsed, "data_wait": wait / elapsed}))
'''


def ember_epoch(files_glob: str, args, run_root: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "ember.cli",
        "train",
        "data=gridded",
        f"data.path={files_glob}",
        f"data.variables=[{','.join(VARIABLES)}]",
        "data.lead=1",
        f"data.batch_size={args.batch}",
        f"data.num_workers={args.workers}",
        "model=unet",
        "model.width=4",
        "model.depth=1",
        "trainer.max_epochs=1",
        "trainer.progress=lines",
        "trainer.log_every_n_steps=20",
        f"run.root={run_root}",
        "track=[]",
        "trainer.measure_flops=false",
    ]
    out, wall, pss = measured(cmd)
    run = max(run_root.glob("*/*/metrics.jsonl"), key=os.path.getmtime)
    records = [json.loads(line) for line in run.read_text().splitlines()]
    steps = [r for r in records if r.get("split") == "train" and "samples_per_s" in r]
    throughput = float(np.median([r["samples_per_s"] for r in steps])) if steps else float("nan")
    waits = [r["data_wait"] for r in steps]
    return {
        "samples_per_s": throughput,
        "data_wait": float(np.mean(waits)) if waits else float("nan"),
        "peak_pss_gb": pss,
        "wall_s": wall,
        "log_tail": out.splitlines()[-3:],
    }


def measured(cmd: list[str]) -> tuple[str, float, float]:
    """stdout, wall time and peak memory (PSS) in GB of `cmd` and the workers it started (sampled by MEMORY_WRAPPER)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_WRAPPER, json.dumps(cmd)], check=False, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    out, pss = proc.stdout.rsplit("\n@pss ", 1)
    return out, time.perf_counter() - start, float(pss)


# Runs the command and prints the largest memory of it and its descendants together (proportional
# set size, so pages shared across a fork count once), sampled every 0.2 s from /proc; ru_maxrss
# would report the largest single process, not a parent with its workers.
MEMORY_WRAPPER = r'''
import json, os, subprocess, sys, time
cmd = json.loads(sys.argv[1])
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
def tree_pss(root):
    kids, total = [root], 0
    while kids:
        pid = kids.pop()
        try:
            # PSS, not RSS: forked workers share the parent's pages, and RSS counts them in each.
            rollup = open(f"/proc/{pid}/smaps_rollup").read().split("\n")
            total += next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
            for t in os.listdir(f"/proc/{pid}/task"):
                kids += [int(c) for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return total
import threading
peak = [0]
def sample():
    while p.poll() is None:
        peak[0] = max(peak[0], tree_pss(p.pid)); time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
out = p.stdout.read(); p.wait()
sys.stdout.write(out + f"\n@pss {peak[0] / 1e9:.3f}")
sys.exit(p.returncode)
'''


def reference_epoch(files: list[Path], args) -> dict:
    payload = json.dumps([[str(f) for f in files], list(VARIABLES), args.batch, args.workers])
    out, wall, pss = measured([sys.executable, "-c", REFERENCE, payload])
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "samples_per_s": result["samples"] / result["seconds"],
        "data_wait": result["data_wait"],
        "peak_pss_gb": pss,
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=8.0, help="size of the dataset on disk")
    p.add_argument("--grid", type=int, nargs=2, default=(181, 360), metavar=("NLAT", "NLON"))
    p.add_argument("--dir", default="/tmp/ember-gridded-stream", help="where the yearly files are written (reused)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gridded_stream.json"))
    args = p.parse_args()
    root = Path(args.dir)
    files = write_years(root, args.gb, *args.grid)
    size = sum(f.stat().st_size for f in files) / 1e9
    print(
        f"{len(files)} yearly files, {size:.2f} GB on disk, grid {args.grid[0]} x {args.grid[1]}, "
        f"{len(VARIABLES)} variables"
    )
    ours = ember_epoch(str(root / "fields_*.nc"), args, root / "runs")
    theirs = reference_epoch(files, args)
    rows = [
        ("samples/s (train epoch)", "samples_per_s"),
        ("data wait share", "data_wait"),
        ("peak memory, PSS (GB)", "peak_pss_gb"),
        ("process wall time (s)", "wall_s"),
    ]
    print(f"{'':<26}{'xarray+DataLoader':>18}{'ember':>12}{'ratio':>9}")
    for label, key in rows:
        print(f"{label:<26}{theirs[key]:>18.3f}{ours[key]:>12.3f}{ours[key] / theirs[key]:>8.2f}x")
    print(f"ember's peak memory is {ours['peak_pss_gb'] / size:.2f}x the data's size ({size:.2f} GB)")
    meta = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "data_gb": size,
                "files": len(files),
                "grid": list(args.grid),
                "batch": args.batch,
                "workers": args.workers,
                "ember": ours,
                "reference": theirs,
                "machine": meta,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
