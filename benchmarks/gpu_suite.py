"""ResNet-18 and ViT-S/16 on synthetic images: ember against a hand-written loop, in one run.

Two standard GPU workloads, each trained two ways on the same data, model and optimizer:
  resnet18   ResNet-18 (CIFAR stem) on 32x32 RGB images, 10 classes, batch 256
  vit_s16    ViT-S/16 (DeiT-small: dim 384, depth 12, 6 heads, 16 px patches) on 224x224, 1000 classes, batch 128
  raw        a hand-written loop, written well: bf16 autocast, torch.compile, channels-last input,
             fused AdamW, TF32, batches gathered on the GPU; no logging, no checks
  ember      ember.fit with trainer.precision=bf16 trainer.compile=true (its own channels-last,
             fused AdamW, NaN guard, metrics and checkpoint at the end)
  graphs     the same with trainer.cuda_graphs=true (CUDA only; compile's reduce-overhead mode
             replays each step as recorded CUDA graphs). If it fails, its error is recorded and
             the other numbers are kept
The images are random tensors created on the device (nothing is downloaded). Both loops run the
same number of steps; the first --warmup steps (compilation, autotuning) are not timed. images/s
is over the timed steps; MFU is the FLOPs of one step (torch.utils.flop_counter, the count ember
logs) times steps per second over the device's bf16 peak from ember.train.flops.GPU_PEAK_TFLOPS
(on CPU, a measured matmul peak). ember's numbers come from its run directory (metrics.jsonl).

    python -P benchmarks/gpu_suite.py                 # on a CUDA machine; writes results/gpu_suite.json
    python -P benchmarks/gpu_suite.py --smoke         # CPU: tiny models, a few steps, no compile

--smoke keeps the names but shrinks everything (it checks that the script runs, not speed).
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import ember
from ember.data.spec import DataSpec
from ember.train.flops import count_step_flops, cpu_name, peak_flops

# name -> registry model, its keyword arguments, image side, classes, batch size
CASES = {
    "resnet18": {"model": "resnet", "kwargs": {"depth": 18}, "image": 32, "classes": 10, "batch": 256},
    "vit_s16": {
        "model": "vit",
        "kwargs": {"size": "small", "patch_size": 16},
        "image": 224,
        "classes": 1000,
        "batch": 128,
    },
}
SMOKE = {
    "resnet18": {"model": "resnet", "kwargs": {"depth": 10, "width": 8}, "image": 16, "classes": 10, "batch": 8},
    "vit_s16": {
        "model": "vit",
        "kwargs": {"dim": 32, "depth": 2, "heads": 2, "patch_size": 8},
        "image": 32,
        "classes": 10,
        "batch": 8,
    },
}


def make_model(case: dict) -> nn.Module:
    spec = DataSpec(input_shape=(3, case["image"], case["image"]), task="classification", num_classes=case["classes"])
    torch.manual_seed(0)
    return ember.create_model(case["model"], spec, **case["kwargs"])


def raw_loop(case: dict, x, y, steps: int, warmup: int, compile: bool, device: torch.device) -> dict:
    model = make_model(case)
    cuda = device.type == "cuda"
    # What ember does on CUDA, done by hand: channels-last for conv nets, TF32, fused AdamW.
    channels_last = cuda and any(isinstance(m, nn.Conv2d) for m in model.modules())
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda or None)
    forward = torch.compile(model) if compile else model
    bs = case["batch"]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)

    def batch(i):
        idx = order[i * bs : (i + 1) * bs]
        xb = x[idx]
        return (xb.contiguous(memory_format=torch.channels_last) if channels_last else xb), y[idx]

    def loss_of(m, xb, yb):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return F.cross_entropy(m(xb), yb)

    flops = count_step_flops(model, loss_of, *batch(0))
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        xb, yb = batch(i)
        loss = loss_of(forward, xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss = loss.item()  # waits for the GPU
    elapsed = time.perf_counter() - start
    return {"images_per_s": steps * bs / elapsed, "flops_per_step": flops, "final_loss": loss}


def ember_loop(
    case: dict, x, y, steps: int, warmup: int, compile: bool, device: torch.device, root: str, cuda_graphs: bool = False
) -> dict:
    # One epoch of exactly warmup + steps batches, logged every `warmup` steps (which divides
    # `steps`): the first interval holds compilation and is left out.
    result = ember.fit(
        make_model(case),
        (x[: (warmup + steps) * case["batch"]], y[: (warmup + steps) * case["batch"]]),
        batch_size=case["batch"],
        trainer={
            "max_epochs": 1, "device": str(device), "precision": "bf16", "compile": compile, "cuda_graphs": cuda_graphs,
            "log_every_n_steps": warmup, "progress": "none", "tensorboard": False,
        },
        optim={"name": "adamw", "lr": 1e-3},
        sched={"name": "none"},
        run={"root": root, "report": False},
    )
    records = [json.loads(line) for line in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if r.get("split") == "train"][1:]
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    # Equal samples per interval: the rate over all timed steps is the harmonic mean.
    return {
        "images_per_s": statistics.harmonic_mean(rates),
        "flops_per_step": summary.get("flops_per_step"),
        "logged_mfu": [r.get("mfu") for r in records if r.get("split") == "train"][1:],
        "final_loss": summary["metrics"].get("train/loss"),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def print_table(results: dict) -> None:
    """Images per second, MFU and the ratio to the raw loop of each model and loop."""
    print(
        f"\n{results['device']}, bf16 autocast, compile={results['compile']}, {results['steps']} timed steps after "
        f"{results['warmup']}; torch {torch.__version__}"
        + (" (SMOKE: tiny sizes, not a measurement)" if results["smoke"] else "")
    )
    print(f"{'model':<10} {'image':>6} {'batch':>6} {'loop':<6} {'images/s':>10} {'MFU':>7}  {'over raw':>9}")
    for name, m in results["models"].items():
        for loop in ("raw", "ember", "graphs"):
            if loop not in m:
                continue
            r = m[loop]
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
            ratio = f"{r['over_raw']:.3f}" if loop != "raw" else ""
            print(
                f"{name:<10} {m['image']:>6} {m['batch']:>6} {loop:<6} {r['images_per_s']:>10.0f} {mfu:>7}  {ratio:>9}"
            )
    for what, error in results.get("errors", {}).items():
        print(f"{what} failed: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU check: tiny models, a few steps, no compile")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu with --smoke)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 60; 4 with --smoke)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 20; 2 with --smoke)")
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_suite.json"))
    args = parser.parse_args()
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    warmup = args.warmup or (2 if args.smoke else 20)
    steps = args.steps or (4 if args.smoke else 60)
    if steps % warmup:
        parser.error(f"--steps ({steps}) must be a multiple of --warmup ({warmup}): ember logs every --warmup steps")
    compile = not args.smoke
    if device.type != "cuda" and not args.smoke:
        print("note: no CUDA device; this suite is meant for a GPU (use --smoke to check it on CPU)", file=sys.stderr)
    peak = peak_flops(device, "bf16")

    table = CASES if not args.smoke else SMOKE
    results = {
        "device": device_name(device),
        "device_type": device.type,
        "smoke": args.smoke,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "peak_flops": peak,
        "steps": steps,
        "warmup": warmup,
        "compile": compile,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as root:
        for name in args.models.split(","):
            case = table[name]
            n = (warmup + steps) * case["batch"]
            g = torch.Generator(device=device).manual_seed(0)
            x = torch.randn(n, 3, case["image"], case["image"], generator=g, device=device)
            y = torch.randint(case["classes"], (n,), generator=g, device=device)
            print(f"{name}: raw loop ...", flush=True)
            raw = raw_loop(case, x, y, steps, warmup, compile, device)
            print(f"{name}: ember ...", flush=True)
            ours = ember_loop(case, x, y, steps, warmup, compile, device, root)
            loops = {"raw": raw, "ember": ours}
            if device.type == "cuda":
                print(f"{name}: ember with CUDA graphs ...", flush=True)
                try:
                    loops["graphs"] = ember_loop(case, x, y, steps, warmup, compile, device, root, cuda_graphs=True)
                except Exception as e:  # a measurement that failed is reported, not fatal
                    results.setdefault("errors", {})[f"{name}/graphs"] = f"{type(e).__name__}: {e}"
            for r in loops.values():
                r["mfu"] = (
                    r["flops_per_step"] * r["images_per_s"] / case["batch"] / peak
                    if r["flops_per_step"] and peak
                    else None
                )
                r["over_raw"] = r["images_per_s"] / raw["images_per_s"]
            results["models"][name] = {**case, **loops, "ember_over_raw": ours["images_per_s"] / raw["images_per_s"]}
            del x, y
            if device.type == "cuda":
                torch.cuda.empty_cache()

    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
