"""MNIST-1D: ember's models beside the paper's table (Greydanus 2020, "Scaling down deep learning").

Each model trains with `ember.api.train` on the default data (MNIST-1D, 4000 train samples of which
10% validate, 1000 test), the default optimizer and schedule, and its own epoch count; the test
accuracy is that of the best validation checkpoint. Paper: logistic regression 32%, MLP 68%,
CNN 94%, GRU 91%, human 96%.

    OMP_NUM_THREADS=1 python benchmarks/mnist1d.py                 # every model
    OMP_NUM_THREADS=1 python benchmarks/mnist1d.py cnn1d resnet1d  # some

Prints a table and writes benchmarks/results/mnist1d.json.
"""

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

# This file is called mnist1d.py: drop its folder from the path, or `import mnist1d` finds it
# instead of the mnist1d package that generates the data.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402 (after the path is mended, above)

from ember.api import train  # noqa: E402
from ember.config import compose  # noqa: E402

PAPER = {"linear": 0.32, "mlp": 0.68, "cnn1d": 0.94, "gru": 0.91, "resnet1d": None}
# Per-model settings beside the defaults; everything else is `ember train model=<name>`.
SETTINGS = {
    "linear": ["trainer.max_epochs=50", "optim.lr=0.01"],
    "mlp": ["model.width=512", "model.dropout=0.5", "trainer.max_epochs=50"],
    "cnn1d": [],  # the default job, unchanged
    "resnet1d": [],
    "gru": ["trainer.max_epochs=40", "optim.lr=0.003", "trainer.grad_clip=1.0"],
}


def run(name: str, root: str) -> dict:
    overrides = [
        f"model={name}",
        *SETTINGS[name],
        "trainer.progress=none",
        "trainer.tensorboard=false",
        "trainer.seed=0",
        f"run.root={root}",
    ]
    start = time.perf_counter()
    result = train(compose(overrides))
    wall = time.perf_counter() - start
    return {
        "model": name,
        "command": "ember train "
        + " ".join(o for o in overrides if not o.startswith(("run.root", "trainer.progress", "trainer.tensorboard"))),
        "params": result.summary.get("params"),
        "test_accuracy": result.metrics["test/accuracy"],
        "paper_accuracy": PAPER[name],
        "epochs": result.summary.get("epochs"),
        "wall_time_s": round(wall, 1),
    }


def main(names: list[str]) -> None:
    names = names or list(SETTINGS)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            rows.append(run(name, root))
            r = rows[-1]
            print(f"{name}: test accuracy {r['test_accuracy']:.4f} in {r['wall_time_s']} s", flush=True)
    print()
    print(f"{'model':<10} {'params':>8} {'epochs':>6} {'test acc':>9} {'paper':>6} {'wall s':>7}")
    for r in rows:
        paper = f"{r['paper_accuracy']:.0%}" if r["paper_accuracy"] else "-"
        print(
            f"{r['model']:<10} {r['params']:>8,} {r['epochs']:>6} {r['test_accuracy']:>9.2%} {paper:>6} "
            f"{r['wall_time_s']:>7}"
        )
    print(f"{'human':<10} {'':>8} {'':>6} {'':>9} {'96%':>6}")
    best = max(rows, key=lambda r: r["test_accuracy"])
    print(f"best: {best['model']} {best['test_accuracy']:.2%} (target: above 98%)")
    out = Path(__file__).parent / "results" / "mnist1d.json"
    out.parent.mkdir(exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
