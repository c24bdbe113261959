"""What `trainer.ema` (an exponential moving average of the weights) does, on the EDM diffusion
model and the FNO, side by side in one run: the same config, seed and data, with the average off
and at each decay.

    python -P benchmarks/weight_average.py            # writes benchmarks/results/weight_average.json

The diffusion model is scored by its denoising loss on the test split (EDM's weighted loss, with
the same noise levels and noise for every model: comparable numbers); the FNO by its test relative
L2 error. The runs train with the default one-cycle schedule, whose lr anneals to zero: the
average helps least there, and this measures how much.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import ember

CASES = {
    "diffusion-digits": (["model=diffusion", "data=digits"], "test/loss", 30),
    "fno-burgers-256": (
        ["model=fno", "data=burgers", "data.num_samples=600", "data.resolution=256"],
        "test/relative_l2",
        30,
    ),
}


def run(overrides: list[str], epochs: int, decay: float, root: str) -> tuple[dict, float]:
    start = time.perf_counter()
    cfg = [
        *overrides,
        f"trainer.max_epochs={epochs}",
        f"trainer.ema={decay}",
        "trainer.progress=none",
        f"run.root={root}",
    ]
    result = ember.train_config(cfg)
    return result.metrics, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--decays", nargs="*", type=float, default=[0.0, 0.99, 0.999])
    parser.add_argument("--epochs", type=int, default=0, help="0: each case's own")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "weight_average.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is the steady choice
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for case in args.cases:
            overrides, metric, epochs = CASES[case]
            epochs = args.epochs or epochs
            rows = {}
            for decay in args.decays:
                metrics, seconds = run(overrides, epochs, decay, root)
                rows[f"{decay:g}"] = {metric: metrics[metric], "seconds": round(seconds, 1)}
                print(f"{case}  trainer.ema={decay:g}  {metric} {metrics[metric]:.5g}  ({seconds:.0f} s)", flush=True)
            off = rows["0"][metric] if "0" in rows else None
            for row in rows.values():
                row["ratio_to_off"] = round(row[metric] / off, 4) if off else None
            results[case] = {"metric": metric, "epochs": epochs, "by_decay": rows}
    out = {"cases": results, "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1}}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
