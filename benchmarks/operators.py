"""ember's FNO beside the neuraloperator library's FNO (`pip install 'ember[bench]'`) on the FNO
paper's two benchmarks: Burgers (1-D, s=1024 in the paper's Table 1) and Darcy flow (2-D, s=85),
and the paper's zero-shot super-resolution (trained on Burgers at s=256, tested at s=1024).

Three columns, each trained over several seeds (--seeds, three by default) on the same splits of
`ember.load_data`: `samples` training solutions and a test set of 100 drawn at random out of all
of them (data.split_seed=0: the same 100 for every seed and column), no validation split.

- ember: ember's FNO through `ember.fit` with ember's defaults (AdamW with weight decay 0.01, a
  one-cycle schedule peaking at the budget's lr, batch 20, the relative L2 loss).
- neuraloperator (the anchor, its own way): neuraloperator's FNO trained by neuralop.Trainer with
  the recipe of its shipped Darcy config (NEURALOP_CONFIG: neuralop.training.AdamW, lr 5e-3, weight
  decay 1e-4, StepLR halving every 60 of 300 epochs, the H1 loss, batch 8). The package ships no
  config for this 1-D Burgers task (its burgers_config is the 2-D space-time problem), so Burgers
  uses the Darcy recipe too. Scaled to the budget: the budget's epochs, the step decay every fifth
  of them (60 of 300); nothing else changes.
- neuraloperator, same loop: neuraloperator's FNO through `ember.fit` with ember's settings, the
  second view (the model alone, not the library's recipe).

The sizes are the paper's: 16 modes and width 64 on Burgers, 12 modes and width 32 on Darcy, 4
Fourier layers, domain padding of 1/10 on Darcy (not periodic). neuraloperator's FNO keeps its own
defaults otherwise (a channel MLP in each layer, soft-gating skips), so its parameter count
differs. Parameters are real numbers: a complex weight counts as two (ember.models.real_numel, as
neuralop.utils.count_model_params counts; the anchor's own count is recorded beside ours).

    OMP_NUM_THREADS=1 python benchmarks/operators.py --budget short --cases burgers   # and --cases darcy beside it

Reported per column: the test relative L2 in the data's units (the mean over the 100 test
samples, the median, the worst sample) as the mean, standard deviation, min and max over the
seeds; the training time per epoch and the CPU time. ember is said to be "ahead" of a column (or
"behind") only where the seeds' min-max ranges do not overlap; otherwise "within spread".
Results merge into benchmarks/results/operators.json under the budget's name (with the loss and
recipe where they are not the defaults), each row beside the recipe it ran. --budget tiny is the
smoke test (20 samples, one epoch). ember's trainer has glibc's malloc keep freed memory on CPU
(ember.train.device.keep_freed_memory); it is set for the whole process, so for all three columns.
"""

import argparse
import fcntl
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from burgers_fno import relative_l2
from torch.utils.data import DataLoader, Dataset

import ember
from ember.config import compose
from ember.data import build_data
from ember.models import count_parameters, create_model
from ember.train.device import keep_freed_memory

OUT = Path(__file__).parent / "results" / "operators.json"
PAPER = {"burgers": (1024, 0.0160), "superres": (1024, 0.0160), "darcy": (85, 0.0108)}  # FNO paper, Tables 1, 2
SIZES = {"burgers": {"modes": 16, "width": 64, "padding": 0.0}, "darcy": {"modes": 12, "width": 32, "padding": 0.1}}
# What each case trains on: (data, resolution, resolution tested zero-shot or 0).
CASES = {"burgers": ("burgers", 1024, 0), "superres": ("burgers", 256, 1024), "darcy": ("darcy", 85, 0)}
COLUMNS = ("ember", "neuraloperator", "neuraloperator_same_loop")
# (train samples, epochs, ember's peak learning rate) per case: the paper's 1000 training samples.
BUDGETS = {
    "tiny": {"burgers": (20, 1, 1e-3), "superres": (20, 1, 1e-3), "darcy": (20, 1, 1e-3)},
    "small": {"burgers": (200, 10, 1e-3), "superres": (200, 10, 1e-3), "darcy": (200, 10, 1e-3)},
    # What 3 seeds x 3 columns of Burgers and Darcy could take in the last 45 minutes of a session on the
    # loaded, shared 2-core machine (one epoch measured first: Darcy 127 s of 2 threads for the three columns).
    "short": {"burgers": (1000, 5, 1e-3), "superres": (1000, 5, 1e-3), "darcy": (1000, 1, 1e-3)},
    "medium": {"burgers": (1000, 20, 1e-3), "superres": (1000, 20, 1e-3), "darcy": (1000, 5, 1e-3)},
    "full": {"burgers": (1000, 100, 1e-3), "superres": (1000, 50, 1e-3), "darcy": (1000, 100, 1e-3)},
    "paper": {"burgers": (1000, 500, 1e-3), "superres": (1000, 500, 1e-3), "darcy": (1000, 500, 1e-3)},
}
# neuraloperator's own recipe: its Darcy config and training script at this commit.
NEURALOP_CONFIG = {
    "source": "github.com/neuraloperator/neuraloperator@93d3f06: config/darcy_config.py (DarcyOptConfig, "
    "DarcyDatasetConfig) read by scripts/train_darcy.py",
    "trainer": "neuralop.Trainer",
    "optimizer": "neuralop.training.AdamW",
    "lr": 5e-3,
    "weight_decay": 1e-4,
    "config_epochs": 300,
    "step_size": 60,
    "gamma": 0.5,
    "loss": "neuralop.H1Loss(d=dims), its reduction (the sum over the batch)",
    "batch_size": 8,
}


def load(name: str, resolution: int, samples: int, stats_from=None):
    """`samples` training samples and 100 test samples drawn at random (data.split_seed=0)."""
    total = samples + 100
    overrides = [f"data={name}", f"data.resolution={resolution}", f"data.num_samples={total}"]
    overrides += [f"data.test_fraction={100 / total}", "data.val_fraction=0"]
    return build_data(compose(overrides).data, stats_from=stats_from)


def neuralop_fno(spec, modes: int, width: int, padding: float) -> torch.nn.Module:
    from neuralop.models import FNO

    dims = len(spec.input_shape) - 1
    # neuraloperator counts modes over negative and positive frequencies (it keeps n // 2 + 1 of
    # a real FFT axis); the paper and ember count the non-negative ones: 2x keeps the same modes.
    return FNO(
        n_modes=(2 * modes,) * dims,
        hidden_channels=width,
        in_channels=spec.input_shape[0],
        out_channels=1,
        n_layers=4,
        domain_padding=padding or None,
    )


def build(column: str, data: str, spec, seed: int, recipe: str = "ember") -> torch.nn.Module:
    torch.manual_seed(seed)
    if column == "ember":  # --recipe paper: the paper's spectral initialization too
        return create_model("fno", spec, **SIZES[data], spectral_init="paper" if recipe == "paper" else "normal")
    return neuralop_fno(spec, **SIZES[data])


def errors(values: torch.Tensor, prefix: str = "") -> dict:
    return {
        f"{prefix}relative_l2": values.mean().item(),
        f"{prefix}relative_l2_median": values.median().item(),
        f"{prefix}relative_l2_worst": values.max().item(),
    }


def recipe_overrides(recipe: str, epochs: int) -> dict:
    """ember.fit's optimizer and schedule for `recipe`: ember's defaults (AdamW, weight decay
    0.01, one cycle), or the FNO paper's (Adam, the step size halved every 100 of its 500 epochs:
    every fifth of the run).

    The paper's weight decay is 1e-4 on a loss summed over its batch of 20; Adam's update does
    not see the gradient's scale but its (coupled) weight decay does, so on ember's loss, the
    mean over the batch, the same decay is 1e-4 / 20."""
    if recipe == "ember":
        return {}
    return {
        "optim": {"name": "adam", "weight_decay": 1e-4 / 20},
        "sched": {"name": "step", "step_size": max(1, epochs // 5), "gamma": 0.5},
    }


def ember_recipe(recipe: str, epochs: int, lr: float, loss: str) -> dict:
    """What `ember.fit` ran, read from the config it composes (so the record cannot drift)."""
    overrides = recipe_overrides(recipe, epochs)
    cfg = compose([])
    optim, sched = {**cfg.optim, **overrides.get("optim", {})}, {**cfg.sched, **overrides.get("sched", {})}
    schedule = sched["name"] + (
        f"(step_size={sched['step_size']}, gamma={sched['gamma']})"
        if sched["name"] == "step"
        else f"(peak lr {lr}, pct_start {sched['pct_start']})"
    )
    return {
        "trainer": "ember.fit",
        "optimizer": optim["name"],
        "lr": lr,
        "weight_decay": optim["weight_decay"],
        "scheduler": schedule,
        "loss": loss,
        "batch_size": 20,
        "recipe": recipe,
    }


def neuralop_recipe(epochs: int) -> dict:
    step = max(1, round(epochs * NEURALOP_CONFIG["step_size"] / NEURALOP_CONFIG["config_epochs"]))
    scaled = (
        f"{epochs} epochs instead of the config's {NEURALOP_CONFIG['config_epochs']}; StepLR every {step} "
        f"(the config's {NEURALOP_CONFIG['step_size']} of {NEURALOP_CONFIG['config_epochs']}: a fifth of the run)"
    )
    return {
        **NEURALOP_CONFIG,
        "epochs": epochs,
        "scheduler": f"StepLR(step_size={step}, gamma=0.5)",
        "scheduler_step_size": step,
        "scaled": scaled,
    }


def train_ember(model, splits, epochs: int, lr: float, loss: str, seed: int, recipe: str) -> tuple:
    """`model` through ember's loop: the trained model, its seconds per epoch and CPU seconds."""
    cpu = time.process_time()
    result = ember.fit(
        model,
        splits,
        batch_size=20,
        max_epochs=epochs,
        lr=lr,
        loss=loss,
        seed=seed,
        progress="none",
        log_every_n_steps=500,
        tensorboard=False,
        run={"root": "runs/benchmarks", "report": False},
        **recipe_overrides(recipe, epochs),
    )
    cpu = time.process_time() - cpu
    # The training loop's time without its evaluations (summary.json), so imports, baselines
    # and the first call's warm-up do not count against whichever column runs first.
    time_s = json.loads((result.run_dir / "summary.json").read_text())["time"]
    return result.model.cpu(), (time_s["total_s"] - time_s["eval_s"]) / epochs, cpu


class Pairs(Dataset):
    """A split as the {"x", "y"} samples neuralop.Trainer reads."""

    def __init__(self, data):
        self.x, self.y = data.x, data.y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def train_neuralop(model, splits, epochs: int, seed: int) -> tuple:
    """`model` through neuraloperator's own Trainer and recipe (neuralop_recipe), on ember's
    standardized splits: the trained model, its seconds per epoch and CPU seconds."""
    from neuralop import H1Loss, Trainer
    from neuralop.training import AdamW

    recipe = neuralop_recipe(epochs)
    dims = splits.train.x.ndim - 2
    loader = DataLoader(
        Pairs(splits.train),
        batch_size=recipe["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=recipe["scheduler_step_size"], gamma=recipe["gamma"]
    )
    trainer = Trainer(model=model, n_epochs=epochs, device="cpu", verbose=False)
    torch.manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    # No test loaders: its per-epoch evaluation changes nothing in training; the test is scored below.
    trainer.train(loader, {}, optimizer, scheduler, training_loss=H1Loss(d=dims))
    return model.cpu(), (time.perf_counter() - wall) / epochs, time.process_time() - cpu


def train(column: str, data: str, splits, fine, settings: dict, seed: int) -> dict:
    """One column, one seed: its test errors, times and parameters."""
    model = build(column, data, splits.spec, seed, settings["recipe"])
    if column == "neuraloperator":
        model, per_epoch, cpu = train_neuralop(model, splits, settings["epochs"], seed)
    else:
        model, per_epoch, cpu = train_ember(
            model, splits, settings["epochs"], settings["lr"], settings["loss"], seed, settings["recipe"]
        )
    row = {
        **errors(relative_l2(model, splits.test, splits.spec)),
        "s_per_epoch": round(per_epoch, 2),
        "cpu_s": round(cpu, 1),
        "threads": torch.get_num_threads(),
        "params": count_parameters(model),
    }
    if fine:
        row.update(errors(relative_l2(model, fine.test, fine.spec), "eval_"))
    if column != "ember":
        from neuralop.utils import count_model_params

        row["params_anchor"] = count_model_params(model)  # neuraloperator's own count, beside ours
    return row


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def verdict(ours: dict, theirs: dict) -> str:
    """ "ahead" or "behind" only where the seeds' min-max ranges of the mean test error do not overlap."""
    if ours["n"] < 2 or theirs["n"] < 2:
        return "one seed: no claim"
    if ours["max"] < theirs["min"]:
        return f"ahead ({theirs['mean'] / ours['mean']:.2f}x lower error)"
    if theirs["max"] < ours["min"]:
        return f"behind ({ours['mean'] / theirs['mean']:.2f}x higher error)"
    return "within spread"


def summarize(record: dict) -> None:
    """Each column's spread over its seeds, and ember's verdict against the others, in `record`."""
    record["summary"] = {}
    for column, runs in record["runs"].items():
        rows = list(runs.values())
        record["summary"][column] = {
            key: spread([r[key] for r in rows])
            for key in rows[0]
            if key.endswith(("relative_l2", "relative_l2_worst", "s_per_epoch"))
        }
    if "ember" in record["summary"]:
        ours = record["summary"]["ember"]["relative_l2"]
        record["verdicts"] = {
            f"ember vs {c}": verdict(ours, s["relative_l2"]) for c, s in record["summary"].items() if c != "ember"
        }


def save(out: Path, key: str, case: str, settings: dict, recipes: dict, column: str, seed: int, row: dict) -> dict:
    """Merge one training into `out` under a lock: several pieces of a budget (--cases, --columns,
    --seeds) may run at once; a case's earlier rows stay while its settings are the same."""
    with out.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = out.read_text()
        results = json.loads(text) if text.strip() else {}
        record = results.setdefault(key, {"cases": {}})
        entry = record["cases"].get(case, {})
        if entry.get("settings") != settings:
            entry = {"settings": settings, "runs": {}}
        entry["recipes"] = {**entry.get("recipes", {}), **recipes}
        entry["runs"].setdefault(column, {})[str(seed)] = row
        summarize(entry)
        record["cases"][case] = entry
        record["machine"] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        }
        out.write_text(json.dumps(results, indent=2) + "\n")
    return record


def settings_for(case: str, args) -> dict:
    samples, epochs, lr = BUDGETS[args.budget][case]
    _, resolution, fine = CASES[case]
    paper_resolution, paper = PAPER[case]
    settings = {
        "resolution": resolution,
        "train_samples": args.samples or samples,
        "test_samples": 100,
        "test_split": "100 drawn at random out of all samples (data.split_seed=0), the same for every run",
        "epochs": args.epochs or epochs,
        "lr": args.lr or lr,
        "loss": args.loss,
        "recipe": args.recipe,
        "paper_resolution": paper_resolution,
        "paper_relative_l2": paper,
    }
    return {**settings, "eval_resolution": fine} if fine else settings


def run_case(case: str, args, key: str) -> dict:
    settings = settings_for(case, args)
    data, resolution, fine = CASES[case]
    splits = load(data, resolution, settings["train_samples"])
    # The zero-shot test set: fresh solutions at the finer grid, standardized like the training data.
    fine_splits = load(data, fine, settings["train_samples"], stats_from=splits.spec) if fine else None
    ours = ember_recipe(args.recipe, settings["epochs"], settings["lr"], args.loss)
    recipes = {
        "ember": {**ours, "model": "ember FNO"},
        "neuraloperator": neuralop_recipe(settings["epochs"]),
        "neuraloperator_same_loop": {**ours, "model": "neuralop.models.FNO"},
    }
    record = {}
    for seed in args.seeds:
        for column in args.columns:
            row = train(column, data, splits, fine_splits, settings, seed)
            print(f"{case} s={resolution} {column} seed {seed}: {row}", flush=True)
            record = save(args.out, key, case, settings, {column: recipes[column]}, column, seed, row)
    return record


def interval(s: dict) -> str:
    return f"{s['mean']:.4f} ± {s['std']:.4f} [{s['min']:.4f}, {s['max']:.4f}]"


def table(record: dict) -> None:
    print(
        f"{'case':<16} {'column':<25} {'ep':>3} {'seeds':>5} {'test rel L2 mean ± std [min, max]':>37} "
        f"{'worst sample':>12} {'s/epoch':>7} {'params':>9} {'anchor':>9} {'paper':>6}"
    )
    for case, entry in record["cases"].items():
        if "settings" not in entry:  # a record of the single-seed benchmark before fair anchors
            continue
        settings, name = entry["settings"], f"{case} s={entry['settings']['resolution']}"
        for column in COLUMNS:
            if column not in entry["summary"]:
                continue
            s, rows = entry["summary"][column], list(entry["runs"][column].values())
            anchor = f"{rows[0]['params_anchor']:,}" if "params_anchor" in rows[0] else "-"
            print(
                f"{name:<16} {column:<25} {settings['epochs']:>3} {s['relative_l2']['n']:>5} "
                f"{interval(s['relative_l2']):>37} {s['relative_l2_worst']['max']:>12.4f} "
                f"{s['s_per_epoch']['mean']:>7.2f} {rows[0]['params']:>9,} {anchor:>9} "
                f"{settings['paper_relative_l2']:>6.4f}"
            )
            if "eval_relative_l2" in s:
                zero = f"  zero-shot s={settings['eval_resolution']}"
                print(
                    f"{zero:<16} {column:<25} {'':>3} {'':>5} {interval(s['eval_relative_l2']):>37} "
                    f"{s['eval_relative_l2_worst']['max']:>12.4f}"
                )
        for versus, said in entry.get("verdicts", {}).items():
            print(f"{'':<16} {versus}: {said}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=list(BUDGETS), default="small")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, help="training samples (default: the budget's)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the budget's)")
    parser.add_argument("--lr", type=float, help="ember's peak learning rate (default: the budget's)")
    parser.add_argument("--loss", choices=["rel_l2", "h1"], default="rel_l2", help="ember's loss (ember's columns)")
    parser.add_argument(
        "--recipe",
        choices=["ember", "paper"],
        default="ember",
        help="ember's columns' optimizer and schedule: ember's (AdamW, one cycle) or the FNO paper's",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    keep_freed_memory()  # for the whole process: every column trains with it
    # Results by budget, and by loss and recipe where they are not the defaults: "small", "small_h1",
    # "full_paper-recipe".
    key = args.budget + ("" if args.loss == "rel_l2" else f"_{args.loss}")
    key += "" if args.recipe == "ember" else f"_{args.recipe}-recipe"
    for case in args.cases:
        record = run_case(case, args, key)
    print()
    table(record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
