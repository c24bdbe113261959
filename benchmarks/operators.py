"""ember's FNO beside the neuraloperator library's FNO (`pip install 'ember[bench]'`) on the FNO
paper's two benchmarks: Burgers (1-D, s=1024 in the paper's Table 1) and Darcy flow (2-D, s=85).

Both models train in one process through the same loop (`ember.fit` on the same `ember.load_data`
splits): the same data, standardization, test samples (the last 100), epochs, batch size (20, the
paper's), optimizer (AdamW with ember's defaults and a one-cycle schedule) and loss (the relative
L2 error in the data's units, the paper's). The sizes are the paper's: 16 modes and width 64 on
Burgers, 12 modes and width 32 on Darcy, 4 Fourier layers, domain padding of 1/10 on Darcy (not
periodic). neuraloperator's FNO keeps its own defaults otherwise (a channel MLP in each layer,
soft-gating skips), so its parameter count differs.

    OMP_NUM_THREADS=1 python benchmarks/operators.py [epochs] [samples] [burgers_resolution] [darcy_resolution]

Prints time per epoch, the test relative L2 error (mean and median) and the parameters of each, and
writes benchmarks/results/operators.json.
"""

import json
import platform
import sys
from pathlib import Path

import torch
from burgers_fno import relative_l2

import ember
from ember.config import compose
from ember.data import build_data
from ember.models import count_parameters, create_model

PAPER = {"burgers": (1024, 0.0160), "darcy": (85, 0.0108)}  # FNO paper, Table 1 and Table 2
SIZES = {"burgers": {"modes": 16, "width": 64, "padding": 0.0}, "darcy": {"modes": 12, "width": 32, "padding": 0.1}}


def load(name: str, resolution: int, samples: int):
    """`samples` training samples and 100 test samples, no validation split."""
    total = samples + 100
    overrides = [f"data={name}", f"data.resolution={resolution}", f"data.num_samples={total}", f"data.test_fraction={100 / total}", "data.val_fraction=0"]
    return build_data(compose(overrides).data)


def neuralop_fno(spec, modes: int, width: int, padding: float) -> torch.nn.Module:
    from neuralop.models import FNO

    dims = len(spec.input_shape) - 1
    # neuraloperator counts modes over negative and positive frequencies (it keeps n // 2 + 1 of
    # a real FFT axis); the paper and ember count the non-negative ones: 2x keeps the same modes.
    return FNO(n_modes=(2 * modes,) * dims, hidden_channels=width, in_channels=spec.input_shape[0], out_channels=1, n_layers=4, domain_padding=padding or None)


def train(model: torch.nn.Module, splits, epochs: int) -> dict:
    result = ember.fit(model, splits, batch_size=20, max_epochs=epochs, loss="rel_l2", progress="none", tensorboard=False, run={"root": "runs/benchmarks", "report": False})
    # The training loop's time without its evaluations (summary.json), so imports, baselines
    # and the first call's warm-up do not count against whichever library runs first.
    time_s = json.loads((result.run_dir / "summary.json").read_text())["time"]
    seconds = time_s["total_s"] - time_s["eval_s"]
    errors = relative_l2(result.model.cpu(), splits.test, splits.spec)
    return {
        "relative_l2": errors.mean().item(),
        "relative_l2_median": errors.median().item(),
        "s_per_epoch": round(seconds / epochs, 2),
        "params": count_parameters(model),
        "run_dir": str(result.run_dir),
    }


def main(epochs: int = 30, samples: int = 1000, burgers: int = 1024, darcy: int = 85) -> None:
    record = {"epochs": epochs, "train_samples": samples, "test_samples": 100, "cases": {}}
    for name, resolution in (("burgers", burgers), ("darcy", darcy)):
        splits = load(name, resolution, samples)
        size = SIZES[name]
        rows = {}
        for library, build in (("ember", lambda s=splits.spec, k=size: create_model("fno", s, **k)), ("neuraloperator", lambda s=splits.spec, k=size: neuralop_fno(s, **k))):
            torch.manual_seed(0)
            rows[library] = train(build(), splits, epochs)
            print(f"{name} s={resolution} {library}: {rows[library]}", flush=True)
        paper_resolution, paper = PAPER[name]
        record["cases"][name] = {"resolution": resolution, "paper_resolution": paper_resolution, "paper_relative_l2": paper, **rows}
    print()
    print(f"{'case':<16} {'library':<16} {'rel L2 mean':>12} {'median':>8} {'s/epoch':>8} {'params':>10} {'paper':>7}")
    for name, case in record["cases"].items():
        for library in ("ember", "neuraloperator"):
            r = case[library]
            print(f"{name + ' s=' + str(case['resolution']):<16} {library:<16} {r['relative_l2']:>12.4f} {r['relative_l2_median']:>8.4f} {r['s_per_epoch']:>8.2f} {r['params']:>10,} {case['paper_relative_l2']:>7.4f}")
    record["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = Path(__file__).parent / "results" / "operators.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
