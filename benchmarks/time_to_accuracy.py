"""Wall time for the default `ember train` (1-D CNN on MNIST-1D) to reach 94% test accuracy, and
the best test accuracy of the fast preset (`ember train trainer=fast`) within --budget seconds.

94% is the MNIST-1D paper's CNN row. Each job is run as `ember train` runs it; after every epoch
the test split is evaluated with the clock stopped, so the times are the run's own: training,
validation and checkpoints, and separately the setup before the first step (config, data, model,
run directory; in the first run also lazy imports). Two accuracies are given for the preset: the one its run ends
with and reports (the best checkpoint by validation loss), and the highest of the per-epoch test
evaluations, which picks the epoch on the test set and so flatters it.

    python -P benchmarks/time_to_accuracy.py      # prints a table, writes results/time_to_accuracy.json
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from ember.config import compose, typed
from ember.data import build_data
from ember.models import builder_kwargs, create_model
from ember.rundir.directory import RunDir
from ember.track.console import Console
from ember.train.build import build_trainer
from ember.train.device import seed_everything
from ember.train.flops import cpu_name


def curve(overrides: list[str], budget_s: float) -> dict:
    """points: (epoch, training seconds, test accuracy) after each epoch, until the epochs or the
    budget run out; final: the test accuracy the run ends with; setup_s: seconds before training;
    within_budget: whether the run ended by itself before the budget was spent."""
    with tempfile.TemporaryDirectory() as root:
        setup = time.perf_counter()
        cfg = compose(overrides + ["trainer.progress=none", "trainer.tensorboard=false", f"run.root={root}"])
        seed_everything(cfg.trainer.seed)
        splits = build_data(cfg.data)
        model = create_model(cfg.model.name, splits.spec, **builder_kwargs(cfg.model))
        trainer = build_trainer(typed(cfg), model, splits, Console("none"))
        run = RunDir.create(cfg, splits.spec)
        points, clock = [], {"paused": 0.0, "start": time.perf_counter()}
        setup_s = clock["start"] - setup

        def after_step():
            if trainer.state.step % trainer.steps_per_epoch:
                return
            pause = time.perf_counter()
            accuracy = trainer.evaluate(trainer.test_loader)["accuracy"]
            trainer.model.train()
            elapsed = pause - clock["start"] - clock["paused"]
            points.append((trainer.state.step // trainer.steps_per_epoch, elapsed, accuracy))
            clock["paused"] += time.perf_counter() - pause
            if elapsed > budget_s:
                trainer.state.stop_reason = "budget"

        trainer.step_hook = after_step
        final = trainer.fit(run, run.checkpoints)
        run.close()
        return {
            "points": points,
            "final": final.get("test/accuracy"),
            "setup_s": setup_s,
            "within_budget": trainer.state.stop_reason != "budget",
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.94)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training for the best-accuracy row")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "time_to_accuracy.json"))
    args = parser.parse_args()

    run = curve([], budget_s=float("inf"))
    default = run["points"]
    reached = next(((e, t, a) for e, t, a in default if a >= args.target), None)
    fast = curve(["trainer=fast"], budget_s=args.budget)
    within = [p for p in fast["points"] if p[1] <= args.budget]  # the epoch that crossed the budget does not count
    best = max(within, key=lambda p: p[2]) if within else None
    finished = fast["within_budget"]  # the whole run, not stopped by the budget
    result = {
        "command": " ".join(["python -P benchmarks/time_to_accuracy.py", *sys.argv[1:]]),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "default": {"curve": default, "reached_target": reached, "setup_s": run["setup_s"], "final": run["final"]},
        "fast": {
            "seconds": args.budget,
            "curve": fast["points"],
            "setup_s": fast["setup_s"],
            "finished_within_budget": finished,
            "final": fast["final"] if finished else None,
            "best_epoch": best,
        },
    }
    print(
        f"MNIST-1D, default `ember train` (cnn1d, AdamW, one-cycle, 20 epochs); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    if reached:
        print(
            f"  reaches {args.target:.0%} test accuracy after epoch {reached[0]} in {reached[1]:.1f} s of training, "
            f"{run['setup_s'] + reached[1]:.1f} s with the setup ({reached[2]:.2%})"
        )
    else:
        print(f"  does not reach {args.target:.0%}: best {max(a for _, _, a in default):.2%}")
    print(f"  final test accuracy after {default[-1][0]} epochs, {default[-1][1]:.1f} s: {run['final']:.2%}")
    last = fast["points"][-1]
    if finished:
        print(
            f"  trainer=fast: {last[0]} epochs in {last[1]:.1f} s of training ({fast['setup_s']:.1f} s setup), "
            f"final test accuracy {fast['final']:.2%}"
        )
    else:
        print(f"  trainer=fast did not finish within {args.budget:.0f} s (epoch {last[0]} at {last[1]:.1f} s)")
    if best:
        print(
            f"  trainer=fast, highest per-epoch test accuracy within {args.budget:.0f} s: "
            f"{best[2]:.2%} at epoch {best[0]} ({best[1]:.1f} s)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
