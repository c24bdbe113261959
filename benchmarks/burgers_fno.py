"""Burgers' equation with a Fourier Neural Operator, beside the FNO paper (Li et al. 2021, Table 1:
FNO relative L2 test error 0.0160 at resolution s=1024 and 0.0149 at s=256, 1000 training and 100
test samples, 500 epochs).

The data is ember's `burgers` source (viscosity 0.1, u(x, 0) -> u(x, 1) on the periodic unit
interval): 1100 samples, 100 of them drawn at random as the test set (data.test_fraction with
data.split_seed=0: the same 100 every run; not the last 100). The model is `model=fno` at its
defaults, trained through ember's loop with `ember.fit` on the relative L2 loss (trainer.loss=auto
picks it for neural operators, as the paper trains), batch 20 (the paper's), AdamW and a one-cycle
schedule, for fewer epochs than the paper's 500. With `eval_resolution` the trained model is then
scored on a fresh 1100-sample set at that resolution, never seen in training (zero-shot
super-resolution, the paper's Table 1 claim).

    OMP_NUM_THREADS=1 python benchmarks/burgers_fno.py [epochs] [resolution] [eval_resolution]

Prints the relative L2 test error (mean over test samples of ||u - u_hat|| / ||u|| in the data's
units, and the median) and the wall times, and writes benchmarks/results/burgers_fno.json. The
data is cached in ~/.cache/ember by the burgers source. The same training from the command line:

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
from ember.data import build_data
from ember.models import count_parameters, create_model

PAPER_REL_L2 = {256: 0.0149, 512: 0.0158, 1024: 0.0160, 2048: 0.0146, 4096: 0.0142, 8192: 0.0139}


def data_overrides(resolution: int) -> list[str]:
    return [
        "data=burgers",
        f"data.resolution={resolution}",
        "data.num_samples=1100",
        "data.test_fraction=0.0909091",
        "data.val_fraction=0",
    ]


def relative_l2(model: torch.nn.Module, data, spec, batch: int = 100) -> torch.Tensor:
    """||u - u_hat|| / ||u|| of each sample in the data's units (the paper reports the mean)."""
    mean, std = spec.target_mean[0], spec.target_std[0]
    model.eval()
    errors = []
    with torch.no_grad():
        for i in range(0, len(data.x), batch):
            pred = model(data.x[i : i + batch]).flatten(1) * std + mean
            true = data.y[i : i + batch].flatten(1) * std + mean
            errors.append((pred - true).norm(dim=1) / true.norm(dim=1))
    return torch.cat(errors)


def zero_shot(model: torch.nn.Module, spec, resolution: int) -> torch.Tensor:
    """Errors on fresh data at another resolution, standardized with the training run's statistics."""
    splits = build_data(compose(["model=fno", *data_overrides(resolution)]).data, stats_from=spec)
    return relative_l2(model, splits.test, splits.spec)


def main(epochs: int = 50, resolution: int = 1024, eval_resolution: int = 0) -> None:
    cfg = compose(["model=fno", *data_overrides(resolution)])
    start = time.perf_counter()
    splits = build_data(cfg.data)
    data_time = time.perf_counter() - start
    print(
        f"burgers at s={resolution}: {len(splits.train)} train, {len(splits.test)} "
        f"test samples in {data_time:.1f} s ({splits.notes[0]})",
        flush=True,
    )

    torch.manual_seed(0)
    model = create_model("fno", splits.spec)
    start = time.perf_counter()
    result = ember.fit(
        model,
        splits.train,
        test=splits.test,
        data={"batch_size": 20},
        sched={"name": "onecycle"},
        trainer={"max_epochs": epochs, "progress": "none", "tensorboard": False, "log_every_n_steps": 1000},
        run={"root": "runs/benchmarks"},
    )
    train_time = time.perf_counter() - start
    model = result.model.cpu()
    errors = relative_l2(model, splits.test, splits.spec)
    error, median = errors.mean().item(), errors.median().item()
    paper = PAPER_REL_L2.get(resolution)
    print()
    print(f"{'':<28} {'ember':>10} {'FNO paper':>10}")
    print(f"{'relative L2 (test, mean)':<28} {error:>10.4f} {paper or float('nan'):>10.4f}")
    print(f"{'relative L2 (test, median)':<28} {median:>10.4f}")
    record = {
        "relative_l2": error,
        "relative_l2_median": median,
        "paper_relative_l2": paper,
        "resolution": resolution,
        "epochs": epochs,
    }
    if eval_resolution:
        fine = zero_shot(model, splits.spec, eval_resolution)
        record.update(
            eval_resolution=eval_resolution,
            eval_relative_l2=fine.mean().item(),
            eval_relative_l2_median=fine.median().item(),
        )
        print(
            f"{f'zero-shot at s={eval_resolution} (mean)':<28} {fine.mean().item():>10.4f} "
            f"{PAPER_REL_L2.get(eval_resolution) or float('nan'):>10.4f}"
        )
    print(f"{'epochs':<28} {epochs:>10} {500:>10}")
    print(f"{'parameters (real numbers)':<28} {count_parameters(model):>10,}")
    print(f"{'train wall time (s)':<28} {train_time:>10.0f}")
    out = Path(__file__).parent / "results" / "burgers_fno.json"
    record.update(
        params=count_parameters(model),
        train_wall_time_s=round(train_time, 1),
        data_wall_time_s=round(data_time, 1),
        test_relative_l2_ember_metric=result.metrics.get("test/relative_l2"),
        run_dir=str(result.run_dir),
        machine={"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    )
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
