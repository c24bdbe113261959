"""ember's FNO beside the neuraloperator library's FNO (`pip install 'ember[bench]'`) on the FNO
paper's two benchmarks: Burgers (1-D, s=1024 in the paper's Table 1) and Darcy flow (2-D, s=85),
and the paper's zero-shot super-resolution (trained on Burgers at s=256, tested at s=1024).

Both models train in one process through the same loop (`ember.fit` on the same `ember.load_data`
splits): the same data, standardization, test samples (the last 100), epochs, batch size (20, the
paper's), optimizer (AdamW, a one-cycle schedule peaking at --lr; --recipe paper for the paper's
Adam with the paper's weight decay and the step size halved every fifth of the run) and loss (the
relative L2 error in the data's units, the paper's; --loss h1 for the Sobolev one). The sizes are
the paper's: 16 modes and width 64 on Burgers, 12 modes and width 32 on Darcy, 4 Fourier layers,
domain padding of 1/10 on Darcy (not periodic). neuraloperator's FNO keeps its own defaults otherwise (a channel MLP in
each layer, soft-gating skips), so its parameter count differs.

    OMP_NUM_THREADS=2 python benchmarks/operators.py --budget full --cases burgers superres darcy

ember's trainer has glibc's malloc keep freed memory on CPU (ember.train.device.keep_freed_memory),
for both libraries' runs: a Darcy step takes 0.6x the time (benchmarks/fno_step.py), and
the paper's 500 Darcy epochs about 2.4 hours on two threads.

--budget small is the quick check (200 train samples, 10 epochs); --epochs, --samples and --lr
override a budget. Each case and library is one training, so a long budget can run a piece at a
time (--cases, --libraries): results merge into benchmarks/results/operators.json under the
budget's name (with the loss's where it is h1: "small_h1"). Reported per run: the test relative L2
(mean and median over the 100 samples), the training wall time per epoch, the process's CPU time
for the whole training (on a shared machine the wall time counts the waits, the CPU time does
not), the threads and the parameters.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from burgers_fno import relative_l2
from omegaconf import OmegaConf

import ember
from ember.config import compose
from ember.data import build_data
from ember.models import count_parameters, create_model

OUT = Path(__file__).parent / "results" / "operators.json"
PAPER = {"burgers": (1024, 0.0160), "superres": (1024, 0.0160), "darcy": (85, 0.0108)}  # FNO paper, Tables 1 and 2
SIZES = {"burgers": {"modes": 16, "width": 64, "padding": 0.0}, "darcy": {"modes": 12, "width": 32, "padding": 0.1}}
# What each case trains on: (data, resolution, resolution tested zero-shot or 0).
CASES = {"burgers": ("burgers", 1024, 0), "superres": ("burgers", 256, 1024), "darcy": ("darcy", 85, 0)}
# (train samples, epochs, peak learning rate) per case: the paper's 1000 training samples, batch
# 20, and a fifth of its 500 epochs at most, what this 2-core machine gives in a session: full
# Burgers at s=1024 is 11 minutes of ember's FNO on two threads, full Darcy at s=85 50 minutes.
BUDGETS = {
    "small": {"burgers": (200, 10, 1e-3), "superres": (200, 10, 1e-3), "darcy": (200, 10, 1e-3)},
    "medium": {"burgers": (1000, 20, 1e-3), "superres": (1000, 20, 1e-3), "darcy": (1000, 5, 1e-3)},
    "full": {"burgers": (1000, 100, 1e-3), "superres": (1000, 50, 1e-3), "darcy": (1000, 100, 1e-3)},
    # The paper's 500 epochs: Darcy took 3.5 hours here on two threads, made in sittings (--resume).
    "paper": {"burgers": (1000, 500, 1e-3), "superres": (1000, 500, 1e-3), "darcy": (1000, 500, 1e-3)},
}


def load(name: str, resolution: int, samples: int, stats_from=None):
    """`samples` training samples and 100 test samples, no validation split."""
    total = samples + 100
    overrides = [f"data={name}", f"data.resolution={resolution}", f"data.num_samples={total}", f"data.test_fraction={100 / total}", "data.val_fraction=0"]
    return build_data(compose(overrides).data, stats_from=stats_from)


def neuralop_fno(spec, modes: int, width: int, padding: float) -> torch.nn.Module:
    from neuralop.models import FNO

    dims = len(spec.input_shape) - 1
    # neuraloperator counts modes over negative and positive frequencies (it keeps n // 2 + 1 of
    # a real FFT axis); the paper and ember count the non-negative ones: 2x keeps the same modes.
    return FNO(n_modes=(2 * modes,) * dims, hidden_channels=width, in_channels=spec.input_shape[0], out_channels=1, n_layers=4, domain_padding=padding or None)


def build(library: str, data: str, spec, recipe: str = "ember") -> torch.nn.Module:
    torch.manual_seed(0)
    if library == "ember":  # --recipe paper: the paper's spectral initialization too
        return create_model("fno", spec, **SIZES[data], spectral_init="paper" if recipe == "paper" else "normal")
    return neuralop_fno(spec, **SIZES[data])


def errors(values: torch.Tensor, prefix: str = "") -> dict:
    return {f"{prefix}relative_l2": values.mean().item(), f"{prefix}relative_l2_median": values.median().item()}


def recipe_overrides(recipe: str, epochs: int) -> dict:
    """ember.fit's optimizer and schedule for `recipe`: ember's defaults (AdamW, weight decay
    0.01, one cycle), or the FNO paper's (Adam, the step size halved every 100 of its 500 epochs:
    every fifth of the run).

    The paper's weight decay is 1e-4 on a loss summed over its batch of 20; Adam's update does
    not see the gradient's scale but its (coupled) weight decay does, so on ember's loss, the
    mean over the batch, the same decay is 1e-4 / 20. Taken literally, 1e-4 held the Darcy fit
    back: 100 epochs gave test 0.0144 (training 0.0111) against 0.0133 (training 0.0073)."""
    if recipe == "ember":
        return {}
    return {"optim": {"name": "adam", "weight_decay": 1e-4 / 20}, "sched": {"name": "step", "step_size": max(1, epochs // 5), "gamma": 0.5}}


def train(model: torch.nn.Module, splits, epochs: int, lr: float, loss: str, fine=None, resume: str | None = None, recipe: str = "ember") -> dict:
    """Train on `splits`, test on its test split and, zero-shot, on `fine`'s (another grid).
    `resume`: the run directory of an interrupted training to finish (a long budget's run can
    span several sittings: stop it with Ctrl-C, go on later with --resume)."""
    cpu = time.process_time()
    result = ember.fit(model, splits, batch_size=20, max_epochs=epochs, lr=lr, loss=loss, progress="lines", log_every_n_steps=500, tensorboard=False, run={"root": "runs/benchmarks", "report": False}, resume=resume, **recipe_overrides(recipe, epochs))
    cpu = time.process_time() - cpu
    # The training loop's time without its evaluations (summary.json), so imports, baselines
    # and the first call's warm-up do not count against whichever library runs first.
    time_s = json.loads((result.run_dir / "summary.json").read_text())["time"]
    seconds = time_s["total_s"] - time_s["eval_s"]
    if resume:  # this sitting's time covers its own epochs only: the logged step times cover all
        seconds, cpu = logged_seconds(result.run_dir), None
    model = result.model.cpu()
    zero_shot = errors(relative_l2(model, fine.test, fine.spec), "eval_") if fine else {}
    return {
        **errors(relative_l2(model, splits.test, splits.spec)),
        **zero_shot,
        "s_per_epoch": round(seconds / epochs, 2),
        "train_wall_s": round(seconds, 1),
        "cpu_s": round(cpu, 1) if cpu is not None else None,
        "params": count_parameters(model),
        "threads": torch.get_num_threads(),
        "run_dir": str(result.run_dir),
    }


def logged_seconds(run_dir: Path) -> float:
    """The training time of a run made in several sittings: its steps at the median of its logged
    step times. The median, because a sitting may share the machine for a while, and because the
    trainer used to divide a resumed sitting's first record by the steps before the stop too
    (124 ms in the second sitting of the Darcy paper-budget run, where a step took about 500)."""
    step_ms = [json.loads(line).get("step_ms") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = json.loads((run_dir / "summary.json").read_text())["steps"]
    return statistics.median(ms for ms in step_ms if ms is not None) * steps / 1000


def run_case(case: str, libraries: list[str], samples: int, epochs: int, lr: float, loss: str, resume: str | None = None, recipe: str = "ember") -> dict:
    data, resolution, fine = CASES[case]
    splits = load(data, resolution, samples)
    # The zero-shot test set: fresh solutions at the finer grid, standardized like the training data.
    fine_splits = load(data, fine, samples, stats_from=splits.spec) if fine else None
    paper_resolution, paper = PAPER[case]
    record = {"resolution": resolution, "train_samples": samples, "test_samples": 100, "epochs": epochs, "lr": lr, "loss": loss, "paper_resolution": paper_resolution, "paper_relative_l2": paper}
    if fine:
        record["eval_resolution"] = fine
    for library in libraries:
        row = train(build(library, data, splits.spec, recipe), splits, epochs, lr, loss, fine_splits, resume, recipe)
        record[library] = row
        print(f"{case} s={resolution} {library}: {row}", flush=True)
    return record


def table(record: dict) -> None:
    print(f"{'case':<22} {'library':<15} {'epochs':>6} {'rel L2 mean':>11} {'median':>8} {'s/epoch':>8} {'cpu/ep':>7} {'thr':>3} {'params':>10} {'paper':>7}")
    for case, c in record["cases"].items():
        for library in ("ember", "neuraloperator"):
            if library not in c:
                continue
            r = c[library]
            cpu_per_epoch = f"{r['cpu_s'] / c['epochs']:.2f}" if r.get("cpu_s") is not None else "-"
            name = f"{case} s={c['resolution']}"
            print(f"{name:<22} {library:<15} {c['epochs']:>6} {r['relative_l2']:>11.4f} {r['relative_l2_median']:>8.4f} {r['s_per_epoch']:>8.2f} {cpu_per_epoch:>7} {r.get('threads', 1):>3} {r['params']:>10,} {c['paper_relative_l2']:>7.4f}")
            if "eval_relative_l2" in r:
                zero = f"  zero-shot s={c['eval_resolution']}"
                print(f"{zero:<22} {library:<15} {c['epochs']:>6} {r['eval_relative_l2']:>11.4f} {r['eval_relative_l2_median']:>8.4f}")


def started_recipe(run_dir: Path) -> str | None:
    """The --recipe a run was started with, from its config (the paper's is the step schedule);
    None where there is no config, which ember.fit's resume reports in its own words."""
    config = run_dir / "config.yaml"
    return ("paper" if OmegaConf.load(config).sched.name == "step" else "ember") if config.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--libraries", nargs="+", choices=["ember", "neuraloperator"], default=["ember", "neuraloperator"])
    parser.add_argument("--samples", type=int, help="training samples (default: the budget's)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the budget's)")
    parser.add_argument("--lr", type=float, help="the one-cycle schedule's peak learning rate, or --recipe paper's first one (default: the budget's)")
    parser.add_argument("--loss", choices=["rel_l2", "h1"], default="rel_l2")
    parser.add_argument("--recipe", choices=["ember", "paper"], default="ember", help="optimizer and schedule: ember's (AdamW, one cycle) or the FNO paper's (Adam, step halving)")
    parser.add_argument("--resume", help="the run directory of an interrupted training of one case and library, to finish")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.resume and len(args.cases) * len(args.libraries) != 1:
        parser.error("--resume finishes one training: name one case (--cases) and one library (--libraries)")
    if args.resume and (started := started_recipe(Path(args.resume))) not in (None, args.recipe):
        parser.error(f"{args.resume} was started with --recipe {started}; resume it with the same --recipe")
    # Results by budget, and by loss and recipe where they are not the defaults: "small",
    # "full", "small_h1", "full_paper-recipe".
    key = args.budget + ("" if args.loss == "rel_l2" else f"_{args.loss}") + ("" if args.recipe == "ember" else f"_{args.recipe}-recipe")
    for case in args.cases:
        samples, epochs, lr = BUDGETS[args.budget][case]
        fresh = run_case(case, args.libraries, args.samples or samples, args.epochs or epochs, args.lr or lr, args.loss, args.resume, args.recipe)
        # Read just before writing: other pieces of a long budget may have finished meanwhile.
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        record = results.setdefault(key, {"cases": {}})
        old = record["cases"].get(case, {})
        # Another library's earlier row stays if it ran with the same settings.
        same = all(old.get(k) == v for k, v in fresh.items() if k not in ("ember", "neuraloperator"))
        record["cases"][case] = {**(old if same else {}), **fresh}
        record["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # after every case: a long run keeps what it finished
    print()
    table(record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
