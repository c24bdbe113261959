"""Burgers' equation with a Fourier Neural Operator, beside the FNO paper (Li et al. 2021, Table 1:
FNO relative L2 test error 0.0160 at resolution s=1024, 1000 training and 100 test samples,
500 epochs).

The data is ember's `burgers` source (viscosity 0.1, u(x, 0) -> u(x, 1) on the periodic unit
interval) at resolution 1024: 1100 samples, 100 of them held out as the test set. The model is
`model=fno` at its defaults (16 modes, width 64, 4 Fourier layers: the paper's). Training goes
through ember's loop with `ember.fit` on the data built once (generating 1100 solutions at s=1024
takes minutes), with the MSE loss (the paper trains on the relative L2 loss), AdamW and a
one-cycle schedule, for fewer epochs than the paper's 500 by default.

    OMP_NUM_THREADS=1 python benchmarks/burgers_fno.py [epochs] [resolution]

Prints the relative L2 test error (mean over test samples of ||u - u_hat|| / ||u||, and the median)
and the wall times, and writes benchmarks/results/burgers_fno.json. The data is cached in
~/.cache/ember after the first run. The same training from the command line:

    ember train model=fno data=burgers data.resolution=1024 data.num_samples=1100 \\
        data.test_fraction=0.0909091 data.val_fraction=0 data.batch_size=20 trainer.max_epochs=50
"""

import json
import platform
import sys
import time
from pathlib import Path

import torch

import ember
from ember.config import compose
from ember.data import Splits, TensorData, build_data
from ember.data.spec import DataSpec
from ember.models import count_parameters, create_model

PAPER_REL_L2 = 0.0160  # FNO, s=1024


def cached_splits(cfg, resolution: int) -> Splits:
    """The built splits, kept in ~/.cache/ember: generating them takes minutes at s=1024."""
    cache = Path.home() / ".cache" / "ember" / f"burgers-fno-benchmark-{resolution}.pt"
    if cache.exists():
        d = torch.load(cache, weights_only=True)
        spec = DataSpec.from_dict(json.loads(d["spec"]))
        return Splits(train=TensorData(d["x"], d["y"]), test=TensorData(d["x_test"], d["y_test"]), spec=spec)
    splits = build_data(cfg.data)
    cache.parent.mkdir(parents=True, exist_ok=True)
    d = {"x": splits.train.x, "y": splits.train.y, "x_test": splits.test.x, "y_test": splits.test.y, "spec": json.dumps(splits.spec.to_dict())}
    torch.save(d, cache)
    return splits


def relative_l2(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """||u - u_hat|| / ||u|| of each sample (the paper reports the mean)."""
    model.eval()
    errors = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            pred = model(x[i : i + batch]).flatten(1)
            true = y[i : i + batch].flatten(1)
            errors.append((pred - true).norm(dim=1) / true.norm(dim=1))
    return torch.cat(errors)


def main(epochs: int = 50, resolution: int = 1024) -> None:
    data_overrides = [
        "data=burgers",
        f"data.resolution={resolution}",
        "data.num_samples=1100",
        "data.test_fraction=0.0909091",  # 100 of 1100
        "data.val_fraction=0",
    ]
    cfg = compose(["model=fno", *data_overrides])
    start = time.perf_counter()
    splits = cached_splits(cfg, resolution)
    data_time = time.perf_counter() - start
    print(f"burgers at s={resolution}: {len(splits.train)} train, {len(splits.test)} test samples in {data_time:.0f} s", flush=True)

    torch.manual_seed(0)
    model = create_model("fno", splits.spec)
    start = time.perf_counter()
    result = ember.fit(
        model,
        splits.train,
        test=splits.test,
        data={"batch_size": 20},
        optim={"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
        sched={"name": "onecycle"},
        trainer={"max_epochs": epochs, "loss": "mse", "progress": "none", "tensorboard": False, "log_every_n_steps": 1000},
        run={"root": "runs/benchmarks"},
    )
    train_time = time.perf_counter() - start
    errors = relative_l2(result.model.cpu(), splits.test.x, splits.test.y)
    error, median = errors.mean().item(), errors.median().item()
    # u(., 1) keeps the mean of u(., 0) (Burgers conserves it) while viscosity damps the rest, so a
    # sample whose mean is near 0 has a small norm and a large relative error: the median shows
    # the typical sample, the mean (the paper's number) is dominated by those few.
    norms = splits.test.y.flatten(1).norm(dim=1)
    print()
    print(f"{'':<28} {'ember':>10} {'FNO paper':>10}")
    print(f"{'relative L2 (test, mean)':<28} {error:>10.4f} {PAPER_REL_L2:>10.4f}")
    print(f"{'relative L2 (test, median)':<28} {median:>10.4f}")
    print(f"{'test ||u|| min / median':<28} {norms.min().item():>4.2f} / {norms.median().item():.1f}")
    print(f"{'epochs':<28} {epochs:>10} {500:>10}")
    print(f"{'parameters':<28} {count_parameters(model):>10,}")
    print(f"{'train wall time (s)':<28} {train_time:>10.0f}")
    print(f"{'data wall time (s)':<28} {data_time:>10.0f}")
    out = Path(__file__).parent / "results" / "burgers_fno.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "relative_l2": error,
        "relative_l2_median": median,
        "paper_relative_l2": PAPER_REL_L2,
        "resolution": resolution,
        "epochs": epochs,
        "params": count_parameters(model),
        "train_wall_time_s": round(train_time, 1),
        "data_wall_time_s": round(data_time, 1),
        "test_mse": result.metrics.get("test/mse"),
        "run_dir": str(result.run_dir),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
