"""Wall time for the default `ember train` (1-D CNN on MNIST-1D) to reach 94% test accuracy.

94% is the MNIST-1D paper's CNN row. The default job is run as `ember train` runs it; after every
epoch the test split is evaluated with the clock stopped, so the times are training time only.
Also: the best test accuracy reached within --budget seconds by the same recipe given more epochs.

    python -P benchmarks/time_to_accuracy.py      # prints a table, writes results/time_to_accuracy.json
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from ember.config import compose
from ember.data import build_data
from ember.models import builder_kwargs, create_model
from ember.run import RunDir
from ember.track.console import Console
from ember.train.trainer import Trainer, seed_everything


def curve(overrides: list[str], budget_s: float) -> list[tuple[int, float, float]]:
    """(epoch, training seconds, test accuracy) after each epoch, until the epochs or the budget run out."""
    with tempfile.TemporaryDirectory() as root:
        cfg = compose(overrides + ["trainer.progress=none", "trainer.tensorboard=false", f"run.root={root}"])
        seed_everything(cfg.trainer.seed)
        splits = build_data(cfg.data)
        model = create_model(cfg.model.name, splits.spec, **builder_kwargs(cfg.model))
        trainer = Trainer(cfg, model, splits, None, Console("none"))
        trainer.attach(RunDir.create(cfg, splits.spec))
        points, clock = [], {"paused": 0.0, "start": time.perf_counter()}

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
        trainer.fit()
        trainer.run.close()
        return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.94)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training for the best-accuracy row")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "time_to_accuracy.json"))
    args = parser.parse_args()

    default = curve([], budget_s=float("inf"))
    reached = next(((e, t, a) for e, t, a in default if a >= args.target), None)
    longer = curve(["trainer.max_epochs=80"], budget_s=args.budget)
    best = max(longer, key=lambda p: p[2])
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "default": {"curve": default, "reached_target": reached},
        "budget": {"seconds": args.budget, "epochs_run": len(longer), "best": best},
    }
    print(f"MNIST-1D, default `ember train` (cnn1d, AdamW, one-cycle, 20 epochs); torch {torch.__version__}, {torch.get_num_threads()} threads")
    if reached:
        print(f"  reaches {args.target:.0%} test accuracy after epoch {reached[0]} in {reached[1]:.1f} s of training ({reached[2]:.2%})")
    else:
        print(f"  does not reach {args.target:.0%}: best {max(a for _, _, a in default):.2%}")
    print(f"  final test accuracy after {default[-1][0]} epochs, {default[-1][1]:.1f} s: {default[-1][2]:.2%}")
    print(f"  same recipe over 80 epochs, stopped at {args.budget:.0f} s: best {best[2]:.2%} at epoch {best[0]} ({best[1]:.1f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
