"""`trainer.compile=true` against eager, on this machine's CPU: what compiling costs once and saves per epoch.

The same model, data and seed trained by `ember.fit` twice in one process, eager then compiled
(torch.compile with inductor), each logging once per epoch, in --repeats rounds. The first epoch
holds the compilation (its cost is the first round's: a cold compile); the steady step time is the
median of the other epochs' logged `step_ms`, and the speedup the median of the rounds'. The final
weights of the two runs are compared: inductor fuses and reorders floating-point work, so they
agree closely but not bit for bit (tests/train/test_trainer.py checks the same on a small run).
On a GPU, benchmarks/gpu_suite.py measures compile with bf16 instead.

    python -P benchmarks/compile.py       # prints a table, writes benchmarks/results/compile.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# A cold compile, as on a fresh machine: inductor's on-disk cache would otherwise make the second
# run of this script compile in a fraction of the time.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="ember-inductor-"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import ember  # noqa: E402
from ember.api import load_data  # noqa: E402
from ember.data.spec import DataSpec  # noqa: E402
from ember.train.flops import cpu_name  # noqa: E402


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn():
    return ember.create_model(
        "cnn1d", DataSpec(input_shape=(1, 40), task="classification", num_classes=10), dropout=0.0
    )


CASES = {"tiny-mlp": mlp, "cnn1d": cnn}


def run(make_model, x, y, epochs: int, batch_size: int, compile: bool, root: str) -> dict:
    torch.manual_seed(0)
    model = make_model()
    steps_per_epoch = -(-len(x) // batch_size)
    start = time.perf_counter()
    result = ember.fit(
        model, (x, y), max_epochs=epochs, batch_size=batch_size, compile=compile, log_every_n_steps=steps_per_epoch,
        progress="none", tensorboard=False, checkpoint_every_n_epochs=epochs, measure_flops=False,
        sched={"name": "none"}, run={"root": root, "report": False},
    )
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()]
    step_ms = [r["step_ms"] for r in records if r["split"] == "train"]
    steady = statistics.median(step_ms[1:])
    return {
        "wall_s": wall,
        "first_epoch_s": step_ms[0] * steps_per_epoch / 1000,
        "steady_step_ms": steady,
        "steady_epoch_s": steady * steps_per_epoch / 1000,
        "weights": [p.detach().clone() for p in model.state_dict().values()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of one eager and one compiled run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "compile.json"))
    args = parser.parse_args()

    splits = load_data("mnist1d")
    x, y = splits.train.x, splits.train.y
    results = {
        "command": " ".join(["python -P benchmarks/compile.py", *sys.argv[1:]]),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "epochs": args.epochs, "repeats": args.repeats, "cases": {},
    }
    with tempfile.TemporaryDirectory() as root:
        for name, make in CASES.items():
            # Rounds of one eager and one compiled run back to back, so that a change in the load
            # of a shared machine hits both; the speedup is the median of the rounds' own.
            rounds = [
                (
                    run(make, x, y, args.epochs, args.batch_size, False, root),
                    run(make, x, y, args.epochs, args.batch_size, True, root),
                )
                for _ in range(args.repeats)
            ]
            eager, compiled = rounds[0]  # the first compile is the cold one
            diff = max((a - b).abs().max().item() for a, b in zip(eager["weights"], compiled["weights"]))
            for e, c in rounds:
                del e["weights"], c["weights"]
            results["cases"][name] = {
                "eager_step_ms": statistics.median(e["steady_step_ms"] for e, _ in rounds),
                "compiled_step_ms": statistics.median(c["steady_step_ms"] for _, c in rounds),
                "steady_speedup": statistics.median(e["steady_step_ms"] / c["steady_step_ms"] for e, c in rounds),
                "compile_cost_s": compiled["first_epoch_s"] - eager["first_epoch_s"],
                "max_weight_diff": diff,
                "rounds": rounds,
            }

    print(
        f"ember.fit eager vs trainer.compile=true, {args.epochs} epochs of MNIST-1D (batch {args.batch_size}), "
        f"median of {args.repeats} rounds; {results['machine']}, torch {torch.__version__}, "
        f"{results['threads']} threads"
    )
    print(
        f"{'case':<10} {'eager ms/step':>13} {'compiled ms/step':>16} {'speedup':>8} "
        f"{'compile cost s':>15} {'max |dw|':>9}"
    )
    for name, r in results["cases"].items():
        print(
            f"{name:<10} {r['eager_step_ms']:>13.3f} {r['compiled_step_ms']:>16.3f} {r['steady_speedup']:>7.2f}x "
            f"{r['compile_cost_s']:>15.1f} {r['max_weight_diff']:>9.1e}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
