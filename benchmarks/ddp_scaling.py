"""Training throughput on 1 and 2 processes through the real torchrun, side by side in one run.

Each configuration is one `python -m torch.distributed.run --standalone --nproc_per_node=N -m ember
train ...` job with the same per-process batch (`data.batch_size`), so N processes train on a
global batch N times larger. Throughput is read back from the run directory: the median
`samples_per_s` of the logged training intervals in metrics.jsonl (all ranks' samples; the first
interval, with start-up and FLOP counting in it, is left out; the median also keeps out the
intervals that hold an epoch's end, with its validation and checkpoint), and from summary.json
the steps per second of the whole run (validation time taken out). Speedup is against the first
process count; efficiency is speedup divided by the ratio of process counts.

On a CPU-only machine the processes compete for the same cores: on a 2-core machine, 2 processes
of one thread each (--threads, as torchrun sets for several processes) share the 2 cores with each
other, with their data loading and with anything else running, so the table measures DDP's
overhead and that contention, not the scaling of a real cluster. (Giving 1 process both cores
instead, --threads 0 for cores / N threads, was far worse on this shared machine: 57 samples/s
against about 1,000 with one thread, as OpenMP's 2 threads stall whenever another job takes a
core.) The same script measures real scaling on a multi-GPU machine, one GPU
per process:

    python -P benchmarks/ddp_scaling.py                         # CPU, 1 and 2 processes
    python -P benchmarks/ddp_scaling.py --device cuda --nproc 1,2,4,8 --model resnet data=cifar10 data.root=...
    python -P benchmarks/ddp_scaling.py --strategy fsdp         # trainer.strategy=fsdp

Extra `key=value` arguments go to every `ember train`. The configurations are run in turn --repeats
times (1, 2, 1, 2, ...), so a change in the machine's load falls on all of them; the table gives
the median over repeats. Writes benchmarks/results/ddp_scaling.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ember.train.flops import cpu_name

# Gloo's TCP setup on a loaded machine now and then refuses a connection before training starts
# (see tests/train/test_distributed.py); such a launch is retried once.
GLOO_FLAKE = "Gloo connectFullMesh failed"


def train(nproc: int, args, run_dir: Path) -> dict:
    threads = args.threads or max(1, (os.cpu_count() or 1) // nproc)
    run_dir = run_dir / f"n{nproc}"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "ember", "train", f"model={args.model}", f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.epochs}", f"trainer.strategy={args.strategy}", f"trainer.device={args.device}",
        f"trainer.log_every_n_steps={args.log_every}", "trainer.progress=none", "trainer.tensorboard=false",
        "run.report=false", f"run.dir={run_dir}", *args.overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for _ in range(2):
        start = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if r.returncode == 0 or GLOO_FLAKE not in r.stderr:
            break
    if r.returncode != 0:
        sys.exit(f"{nproc} processes failed (exit {r.returncode}):\n{' '.join(cmd)}\n{r.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Full logging intervals only: the record at the end of training covers the few steps left over.
    train_rates = [
        r["samples_per_s"]
        for r in records
        if r.get("split") == "train" and "samples_per_s" in r and r["step"] % args.log_every == 0
    ]
    if not train_rates:
        sys.exit(f"{run_dir}/metrics.jsonl has no training intervals; lower --log-every or raise --epochs")
    summary = json.loads((run_dir / "summary.json").read_text())
    train_s = summary["time"]["total_s"] - summary["time"].get("eval_s", 0.0)
    return {
        "processes": nproc,
        "threads_per_process": threads if args.device == "cpu" else None,
        "global_batch": nproc * args.batch_size,
        "samples_per_s": statistics.median(train_rates[1:] or train_rates),
        "intervals": train_rates,
        "steps": summary["steps"],
        "steps_per_s": summary["steps"] / train_s,
        "train_s": train_s,
        "job_wall_s": wall,  # with torchrun's and Python's start-up, data generation and testing
        "test_metrics": {k: v for k, v in summary["metrics"].items() if k.startswith("test/")},
    }


def machine(device: str) -> dict:
    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    # Other jobs on a shared machine change the numbers: the 1-minute load average says how busy it was.
    info["load_average_1min_before"] = os.getloadavg()[0]
    if device == "cuda" and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"], help="trainer.strategy")
    parser.add_argument("--model", default="resnet1d")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="per process (data.batch_size)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="threads per process on CPU (0: cores / processes)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=10, help="trainer.log_every_n_steps")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ddp_scaling.json"))
    parser.add_argument("overrides", nargs="*", help="key=value settings for every ember train")
    args = parser.parse_args()
    counts = [int(n) for n in args.nproc.split(",")]

    cores = os.cpu_count() or 1
    shared = args.device == "cpu" and max(counts) > 1
    note = (
        (
            f"note: on this CPU-only machine ({cores} cores) the {max(counts)} processes compete for the same cores "
            f"(with each other, their data loading and other jobs): this measures {args.strategy.upper()}'s overhead "
            "and that contention, not scaling; "
            "the same script measures real scaling on a multi-GPU machine (--device cuda)"
        )
        if shared
        else f"{args.device}: one device per process"
    )
    print(note, flush=True)
    info = machine(args.device)
    runs = {n: [] for n in counts}
    for rep in range(args.repeats):
        for n in counts:
            print(f"repeat {rep + 1}/{args.repeats}: training on {n} process(es) ...", flush=True)
            with tempfile.TemporaryDirectory() as root:
                runs[n].append(train(n, args, Path(root)))
    rows = []
    for n, each in runs.items():
        row = {k: v for k, v in each[0].items() if k in ("processes", "threads_per_process", "global_batch", "steps")}
        row["samples_per_s"] = statistics.median(r["samples_per_s"] for r in each)
        row["steps_per_s"] = statistics.median(r["steps_per_s"] for r in each)
        row["repeats"] = each
        rows.append(row)
    info["load_average_1min_after"] = os.getloadavg()[0]
    base = rows[0]
    for r in rows:
        r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
        r["efficiency"] = r["speedup"] / (r["processes"] / base["processes"])

    print(
        f"\nmodel={args.model} strategy={args.strategy} device={args.device} batch {args.batch_size} per process, "
        f"{args.epochs} epochs, median of {args.repeats}; torch {torch.__version__}; "
        f"load average {info['load_average_1min_before']:.1f} before, {info['load_average_1min_after']:.1f} after"
    )
    print(
        f"{'processes':>9} {'threads':>7} {'global batch':>12} {'samples/s':>10} {'steps/s':>8} "
        f"{'speedup':>8} {'efficiency':>10}"
    )
    for r in rows:
        threads = r["threads_per_process"] or "-"
        print(
            f"{r['processes']:>9} {threads:>7} {r['global_batch']:>12} {r['samples_per_s']:>10.0f} "
            f"{r['steps_per_s']:>8.1f} {r['speedup']:>7.2f}x {r['efficiency']:>10.0%}"
        )
    print(note)

    results = {
        "machine": info,
        "note": note,
        "model": args.model,
        "strategy": args.strategy,
        "epochs": args.epochs,
        "batch_size_per_process": args.batch_size,
        "overrides": args.overrides,
        "runs": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
