"""Samplers side by side: random, TPE, GP and PSO tuning a small CNN on MNIST-1D.

Every sampler gets the same space, the same budget of trials, the same sampler seed and the same
trials (`ember tune` with tune.pruner=none, so each trial trains its full budget of epochs): what
differs is only where each sampler looks. Printed: the best validation accuracy found after
5, 10, 20, ... trials, per sampler: the mean over the seeds (three by default) and the range
[min, max]; PSO (ember's) is said to be ahead of or behind an Optuna sampler only where the
ranges after the last trial do not overlap ("within spread" otherwise).

The Optuna samplers run as Optuna documents them: `optuna.samplers.RandomSampler`, `TPESampler`,
`GPSampler` at their defaults, given only the seed. Pruning is off for every sampler (Optuna's
`create_study` would default to MedianPruner): each trial trains its full budget, so the samplers
compare on where they look, not on what a pruner cut.

    OMP_NUM_THREADS=1 python benchmarks/tune.py                        # 30 trials per sampler, 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/tune.py --trials 12 --epochs 3 # a quicker look
    OMP_NUM_THREADS=1 python benchmarks/tune.py --samplers tpe pso --seeds 0

Writes benchmarks/results/tune.json.
"""

import argparse
import contextlib
import io
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/mnist1d.py lies beside this file: drop this folder from the path, or `import mnist1d`
# finds that script instead of the package that generates the data.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402 (after the path is mended, above)

from ember.tune.study import _create, _work, load, make_plan  # noqa: E402

SPACE = [
    "tune.space.optim.lr={type:float,low:1.0e-4,high:3.0e-2,log:true}",
    "tune.space.optim.weight_decay={type:float,low:1.0e-6,high:1.0e-1,log:true}",
    "tune.space.model.channels={type:int,low:8,high:64,step:8}",
    "tune.space.model.dropout={type:float,low:0.0,high:0.5}",
]


def study(sampler: str, seed: int, trials: int, epochs: int, samples: int, root: str) -> dict:
    overrides = [
        "model=cnn1d",
        "model.depth=2",
        f"data.num_samples={samples}",
        f"trainer.max_epochs={epochs}",
        "trainer.tensorboard=false",
        "trainer.seed=0",
        f"run.root={root}",
        f"run.name={sampler}-{seed}",
        "tune.metric=val/accuracy",
        f"tune.sampler={sampler}",
        "tune.pruner=none",
        f"tune.trials={trials}",
        f"tune.seed={seed}",
        *SPACE,
    ]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        plan = make_plan(overrides)
        _create(plan)
        _work(plan, 0)
    wall = time.perf_counter() - start
    trials = sorted(load(plan).trials, key=lambda t: t.number)
    values = [t.value for t in trials]
    errors = sorted({t.user_attrs.get("error") or t.user_attrs.get("fatal") for t in trials if t.value is None})
    if errors:
        print(f"{sampler} seed {seed}: {len(errors)} kinds of failed trials, e.g. {errors[0]}", flush=True)
    best, curve = -math.inf, []
    for v in values:
        best = max(best, v if v is not None else -math.inf)
        curve.append(best)
    return {"sampler": sampler, "seed": seed, "values": values, "best_so_far": curve, "wall_time_s": round(wall, 1)}


def verdict(ours: tuple[float, float], theirs: tuple[float, float], seeds: int) -> str:
    """Higher accuracy is better; a claim only where the seeds' [min, max] ranges do not overlap."""
    if seeds < 2:
        return "one seed: no claim"
    if ours[0] > theirs[1]:
        return "ahead"
    if ours[1] < theirs[0]:
        return "behind"
    return "within spread"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=["random", "tpe", "gp", "pso"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial (default 5)")
    parser.add_argument("--samples", type=int, default=4000, help="MNIST-1D samples (default 4000)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune.json")
    args = parser.parse_args()
    checkpoints = [n for n in (5, 10, 20, 30, 50, 100) if n < args.trials] + [args.trials]
    runs = []
    with tempfile.TemporaryDirectory() as root:
        for sampler in args.samplers:
            for seed in args.seeds:
                r = study(sampler, seed, args.trials, args.epochs, args.samples, root)
                runs.append(r)
                print(
                    f"{sampler:>7} seed {seed}: best val/accuracy {r['best_so_far'][-1]:.4f} "
                    f"after {args.trials} trials, {r['wall_time_s']:.0f} s",
                    flush=True,
                )
    print(
        f"\nbest validation accuracy after N trials (cnn1d on MNIST-1D, {args.epochs} epochs a trial, "
        f"mean [min, max] over seeds {args.seeds})"
    )
    print("sampler " + "".join(f"{n:>26}" for n in checkpoints))
    table, spans = {}, {}
    for sampler in args.samplers:
        mine = [r for r in runs if r["sampler"] == sampler]
        row = [sum(r["best_so_far"][n - 1] for r in mine) / len(mine) for n in checkpoints]
        spans[sampler] = [
            (min(r["best_so_far"][n - 1] for r in mine), max(r["best_so_far"][n - 1] for r in mine))
            for n in checkpoints
        ]
        table[sampler] = dict(zip(map(str, checkpoints), row))
        print(f"{sampler:<8}" + "".join(f"{v:>9.4f} [{lo:.4f}, {hi:.4f}]" for v, (lo, hi) in zip(row, spans[sampler])))
    verdicts = {
        f"pso vs {s}": verdict(spans["pso"][-1], spans[s][-1], len(args.seeds))
        for s in args.samplers
        if "pso" in spans and s != "pso"
    }
    for versus, said in verdicts.items():
        print(f"after {args.trials} trials, {versus}: {said}")
    out = args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": {**vars(args), "out": str(out)},
                "space": SPACE,
                "best_after": table,
                "verdicts": verdicts,
                "runs": runs,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "threads": torch.get_num_threads(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
