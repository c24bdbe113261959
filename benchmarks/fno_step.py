"""One training step of the paper's FNO: ember's 1x1 layers (a batched matrix product,
ember.models.layers.PointwiseConv) against nn.Conv's 1x1 convolutions with the same weights.

Both models train on the same batch (20 samples, the paper's) with Adam and the relative L2 loss,
each in its own process (in one process, the other model's freed memory changed the convolution's
time by a fifth: the allocator's state is part of a step's cost), in interleaved rounds so a busy
moment of a shared machine hits both; the step time is each model's median over its rounds and the
speedup their ratio.

A third column runs ember's layers with glibc's malloc told to keep freed memory, as every CPU
run of ember's trainer does (ember.train.device.keep_freed_memory): by default glibc maps large
blocks (over a threshold that it raises to at most 32 MiB) straight from the kernel and hands them
back when they are freed, and the next step's tensors of the same size come back as fresh pages
the kernel must zero, time that torch's CPU profiler puts on the ops that first touch them (fill_,
copy_).

Darcy (s=85, 12 modes, width 32, 1/10 padding) and Burgers (s=1024, 16 modes, width 64) are the
sizes of benchmarks/operators.py.

    OMP_NUM_THREADS=2 python -P benchmarks/fno_step.py   # writes benchmarks/results/fno_step.json
"""

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.models import create_model
from ember.models.layers import PointwiseConv
from ember.train.device import keep_freed_memory
from ember.train.losses import RelativeL2Loss

OUT = Path(__file__).parent / "results" / "fno_step.json"
CASES = {
    "darcy": ((85, 85), {"modes": 12, "width": 32, "padding": 0.1}),
    "burgers": ((1024,), {"modes": 16, "width": 64}),
}


def with_convolutions(model: nn.Module) -> nn.Module:
    """A copy of `model` whose PointwiseConv layers are nn.Conv layers holding the same weights."""
    model = copy.deepcopy(model)
    for layer in list(model.modules()):
        for child_name, child in list(layer.named_children()):
            if isinstance(child, PointwiseConv):
                c_out, c_in, *kernel = child.weight.shape
                conv = (nn.Conv1d if len(kernel) == 1 else nn.Conv2d)(c_in, c_out, 1)
                conv.load_state_dict(child.state_dict())
                setattr(layer, child_name, conv)
    return model


def stepper(model: nn.Module, spec: DataSpec, x: torch.Tensor, y: torch.Tensor):
    loss_fn, opt = RelativeL2Loss(spec), torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    return step


def step_times(case: str, layers: str, steps: int) -> list[float]:
    """`steps` timed training steps (after two untimed ones) of one model in this process."""
    if layers == "ember_kept" and not keep_freed_memory():
        raise SystemExit("glibc's malloc settings could not be set here (not glibc, or GLIBC_TUNABLES/MALLOC_* set)")
    size, sizes = CASES[case]
    spec = DataSpec(
        input_shape=(1, *size), task="regression", target_shape=(1, *size), target_mean=[0.0], target_std=[1.0]
    )
    torch.manual_seed(0)
    model = create_model("fno", spec, **sizes)
    if layers == "conv":
        model = with_convolutions(model)
    step = stepper(model, spec, torch.randn(20, 1, *size), torch.randn(20, 1, *size))
    step(), step()
    return [step() for _ in range(steps)]


def run_case(case: str, rounds: int, steps: int) -> dict:
    times: dict[str, list[float]] = {"ember": [], "conv": [], "ember_kept": []}
    for _ in range(rounds):
        for name in times:
            command = [sys.executable, "-P", __file__, "--one", case, name, "--steps", str(steps)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            times[name] += json.loads(out.splitlines()[-1])
    ms = {name: round(1000 * statistics.median(t), 1) for name, t in times.items()}
    return {
        **{f"{name}_step_ms": v for name, v in ms.items()},
        "ratio": round(ms["ember"] / ms["conv"], 3),
        "kept_ratio": round(ms["ember_kept"] / ms["conv"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--one", nargs=2, metavar=("CASE", "LAYERS"), help=argparse.SUPPRESS)  # a round's process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(step_times(*args.one, args.steps)))
        return
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "batch": 20, "cases": {}}
    for case, (size, _) in CASES.items():
        results["cases"][case] = row = run_case(case, args.rounds, args.steps)
        print(
            f"{case:<8} s={'x'.join(map(str, size)):<6} nn.Conv {row['conv_step_ms']:>6.1f} ms  ember "
            f"{row['ember_step_ms']:>6.1f} ms ({row['ratio']:.2f}x)  ember, "
            f"freed memory kept {row['ember_kept_step_ms']:>6.1f} ms ({row['kept_ratio']:.2f}x)",
            flush=True,
        )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
