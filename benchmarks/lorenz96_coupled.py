"""An ember network as the sub-grid closure of a Fortran Lorenz '96 model, coupled online.

The two-scale Lorenz '96 system (ember's simulator, `data=lorenz96`: K=8 slow X, 32 fast Y per X,
F=20, the parameters of Arnold et al. 2013) is the truth. A one-scale model of X alone, written in
Fortran (ember_infer/examples/lorenz96, RK4, dt=0.005), needs a closure for the tendency U that the
fast variables exert on X. Three closures, side by side in one run:

    none    U = 0
    cubic   U = b0 + b1 X_k + b2 X_k^2 + b3 X_k^3, least squares on the training data (Arnold et al. 2013)
    net     an MLP trained by `ember train data=lorenz96 model=mlp` on the same data, exported and
            called through `use ember_infer` at every RK4 stage of every step

Forecasts start from states on the truth's attractor (independent trajectories, after a spin-up);
RMSE against the truth's X at each lead, and the lead where it passes the climatological standard
deviation of X. The climate of a long run from the same states: mean, standard deviation and the
Hellinger distance between the PDF of X and the truth's. The cost of a coupled step: the Fortran
program's own clock per RK4 step at batch 1, with each closure.

    python -P benchmarks/lorenz96_coupled.py            # table; writes benchmarks/results/lorenz96_coupled.json
    python -P benchmarks/lorenz96_coupled.py --quick    # a small run (tests/ember_infer uses it)

Builds and installs ember_infer (CMake, gfortran, the torch wheel's libtorch) under --work unless
--program names a built ember_infer/examples/lorenz96 program.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ember.data.physics import _rk4, simulate_l96  # the truth: ember's own two-scale integrator

ROOT = Path(__file__).resolve().parents[1]
K, J, FORCING, DT = 8, 32, 20.0, 0.005
EVERY = 10  # steps between saved states: 0.05 time units
FULL = {"samples": 20000, "epochs": 40, "starts": 200, "lead": 4.0, "climate": 100.0, "members": 32, "cost_steps": 4000}
QUICK = {"samples": 2000, "epochs": 10, "starts": 16, "lead": 1.0, "climate": 5.0, "members": 4, "cost_steps": 200}


def build_program(work: Path) -> Path:
    """Configure, build and install ember_infer, then build the Fortran model against the installation."""
    prefix = work / "install"
    steps = [
        [
            "-S",
            ROOT / "ember_infer",
            "-B",
            work / "build",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
        ],
        ["--build", work / "build", "--parallel", "2"],
        ["--install", work / "build"],
        [
            "-S",
            ROOT / "ember_infer" / "examples" / "lorenz96",
            "-B",
            work / "l96",
            f"-DCMAKE_PREFIX_PATH={prefix}",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        ["--build", work / "l96"],
    ]
    for args in steps:
        done = subprocess.run(["cmake", *map(str, args)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"cmake {' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return work / "l96" / "lorenz96"


def train_network(work: Path, samples: int, epochs: int, formats: tuple[str, ...]) -> tuple[Path, dict, dict]:
    """The sub-grid tendency learned by ember, its test metrics, and its exports."""
    from ember.api import train
    from ember.config import compose
    from ember.deploy.export import export_run

    cfg = compose(
        [
            "data=lorenz96",
            "model=mlp",
            f"data.num_samples={samples}",
            f"trainer.max_epochs={epochs}",
            "trainer.progress=none",
            f"run.root={work / 'runs'}",
        ]
    )
    result = train(cfg)
    exports = {fmt: export_run(result.run_dir, fmt, echo=lambda s: None).path for fmt in formats}
    return (
        result.run_dir,
        {k: v for k, v in result.metrics.items() if k.startswith("test/") and "/" not in k[5:]},
        exports,
    )


def fit_cubic(samples: int) -> list[float]:
    """b0..b3 of the cubic in X_k, least squares over the training split's (X, U) pairs, pooled over k."""
    x, u = simulate_l96(samples, K, J, FORCING, seed=0)  # what data=lorenz96 trains on (its seed 0)
    return np.polynomial.polynomial.polyfit(x.numpy().ravel(), u.numpy().ravel(), 3).tolist()


def truth(starts: int, duration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent states on the attractor (after a spin-up of 10 time units) and the two-scale
    truth's X from there, every EVERY steps: (starts, K) and (saves, starts, K)."""
    g = torch.Generator().manual_seed(seed)
    x = FORCING * (0.5 + 0.1 * torch.randn(starts, K, generator=g, dtype=torch.float64))
    y = 0.1 * torch.randn(starts, K * J, generator=g, dtype=torch.float64)
    for _ in range(round(10.0 / DT)):
        x, y = _rk4(x, y, DT, FORCING)
    path = [x.numpy().copy()]
    for step in range(1, round(duration / DT) + 1):
        x, y = _rk4(x, y, DT, FORCING)
        if step % EVERY == 0:
            path.append(x.numpy().copy())
    if not np.isfinite(path[-1]).all():
        sys.exit("the two-scale truth blew up")
    return path[0], np.stack(path)


def coupled(
    program: Path, closure: str, arg: str, x0: np.ndarray, steps: int, every: int, work: Path
) -> tuple[np.ndarray, float]:
    """The Fortran model from states x0 (B, K): X every `every` steps (saves, B, K), and its time per step (us)."""
    init, out = work / f"init_{closure}.txt", work / f"out_{closure}.bin"
    rows = "\n".join(" ".join(f"{v:.17g}" for v in row) for row in x0)
    init.write_text(f"{len(x0)} {K}\n{FORCING} {DT}\n{rows}\n")
    done = subprocess.run(
        [str(program), closure.split("-")[0], arg, str(init), str(out), str(steps), str(every)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"lorenz96 {closure} failed:\n{done.stdout}{done.stderr}")
    per_step = float(done.stdout.split("us_per_step")[1].split()[0])
    states = np.fromfile(out).reshape(-1, K, len(x0)).transpose(0, 2, 1)  # snapshots of x(B, K), Fortran order
    return states, per_step


def hellinger(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    p = np.histogram(a, bins)[0] / a.size
    q = np.histogram(b, bins)[0] / b.size
    return float(math.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def forecasts(program: Path, closures: dict, p: dict, clim_std: float, work: Path) -> dict:
    """RMSE against the truth at each lead, and the lead where it first passes clim_std."""
    x0, path = truth(p["starts"], p["lead"], seed=11)
    leads = np.arange(len(path)) * EVERY * DT
    out = {"leads": leads.round(4).tolist(), "starts": p["starts"], "rmse": {}, "lead_past_climate_std": {}}
    for name, arg in closures.items():
        states, _ = coupled(program, name, arg, x0, round(p["lead"] / DT), EVERY, work)
        rmse = np.sqrt(((states - path) ** 2).mean(axis=(1, 2)))
        past = np.nonzero(rmse > clim_std)[0]
        out["rmse"][name] = rmse.round(5).tolist()
        out["lead_past_climate_std"][name] = float(leads[past[0]]) if len(past) else None
    return out


def climates(program: Path, closures: dict, p: dict, work: Path) -> dict:
    """Mean, std and max |X| of long runs, and the Hellinger distance of each PDF of X to the truth's."""
    x0, path = truth(p["members"], p["climate"], seed=23)
    truth_x = path[len(path) // 10 :]  # the first tenth is left out of every run's statistics
    bins = np.linspace(truth_x.min() - 5, truth_x.max() + 5, 61)
    out = {
        "duration": p["climate"],
        "members": p["members"],
        "truth": {"mean": float(truth_x.mean()), "std": float(truth_x.std())},
    }
    for name, arg in closures.items():
        states, _ = coupled(program, name, arg, x0, round(p["climate"] / DT), EVERY, work)
        x = states[len(states) // 10 :]
        finite = bool(np.isfinite(x).all())
        out[name] = {
            "mean": float(x.mean()),
            "std": float(x.std()),
            "max_abs": float(np.abs(x).max()),
            "finite": finite,
            "hellinger": hellinger(x, truth_x, bins) if finite else None,
        }
    return out


def costs(program: Path, closures: dict, p: dict, work: Path) -> dict:
    """The Fortran program's time per RK4 step at batch 1 (one state of K=8: the system's size)."""
    x0, _ = truth(1, 0.0, seed=5)
    return {
        name: coupled(program, name, arg, x0, p["cost_steps"], p["cost_steps"], work)[1]
        for name, arg in closures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a small run: fewer samples, epochs, starts and a shorter climate"
    )
    parser.add_argument(
        "--program", type=Path, help="a built ember_infer/examples/lorenz96 (else ember_infer is built under --work)"
    )
    parser.add_argument("--work", type=Path, help="where to build, train and run (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lorenz96_coupled.json")
    args = parser.parse_args()
    p = QUICK if args.quick else FULL
    work = args.work or Path(tempfile.mkdtemp(prefix="ember-l96-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    program = args.program or build_program(work)
    formats = ("torchscript",) if args.quick else ("torchscript", "aoti")
    run_dir, metrics, exports = train_network(work, p["samples"], p["epochs"], formats)
    cubic = fit_cubic(p["samples"])
    closures = {
        "none": "-",
        "cubic": ",".join(f"{b:.17g}" for b in cubic),
        **{f"net-{fmt}": str(path) for fmt, path in exports.items()},
    }
    climate = climates(program, closures, p, work)
    result = {
        "settings": {**p, "K": K, "J": J, "forcing": FORCING, "dt": DT, "quick": args.quick},
        "network": {"run": str(run_dir), "test_metrics": metrics},
        "cubic": cubic,
        "forecast": forecasts(program, closures, p, climate["truth"]["std"], work),
        "climate": climate,
        "us_per_step": costs(program, closures, p, work),
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")


def table(r: dict) -> str:
    f, c, cost = r["forecast"], r["climate"], r["us_per_step"]
    at = {lead: f["leads"].index(lead) for lead in (0.5, 1.0, 2.0) if lead in f["leads"]}
    head = (
        "| closure | "
        + " | ".join(f"RMSE at {lead:g}" for lead in at)
        + " | lead RMSE > clim. std | mean | std | Hellinger | us per step |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    lines.append(
        "| two-scale truth | "
        + " | ".join("0" for _ in at)
        + f" | | {c['truth']['mean']:.3f} | {c['truth']['std']:.3f} | 0 | |"
    )
    for name in f["rmse"]:
        lead = f["lead_past_climate_std"][name]
        hel = c[name]["hellinger"]
        cells = [f"{f['rmse'][name][i]:.3f}" for i in at.values()]
        climate = f"{c[name]['mean']:.3f} | {c[name]['std']:.3f} | {hel:.4f}" if hel is not None else "blew up | | "
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {'> ' + format(f['leads'][-1], 'g') if lead is None else format(lead, 'g')} | {climate} "
            f"| {cost[name]:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
