"""Export time and latency: AOTInductor against TorchScript and eager PyTorch, batch 1 and 64.

For each model (trained briefly by ember: the run's model behind its normalization, as exported),
`ember export` to format=torchscript and format=aoti is timed (each with its parity check; aoti
compiles with the system's C++ compiler, from a cold inductor cache). Then the eager model and the
two files, loaded in Python by their runtimes, are timed call by call on the same inputs,
interleaved in rounds (ember.deploy.bench.compare) so that the shared machine's load hits all
three alike: the median latency, and each format's ratio to eager. One thread, so that the
numbers do not depend on what else runs on the machine's other core.

    python -P benchmarks/export_latency.py       # table; writes benchmarks/results/export_latency.json
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# A cold compile, as a user's first export: inductor's on-disk cache would hide the compile time.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="ember-inductor-"))

import torch

from ember.deploy.bench import compare
from ember.deploy.common import load_model
from ember.scoring.units import Normalized, raw_inputs

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "mlp on lorenz96 (the coupled closure)": ["model=mlp", "data=lorenz96", "data.num_samples=2000"],
    "cnn1d on mnist1d (the default job)": ["model=cnn1d", "data=mnist1d", "data.num_samples=2000"],
    "unet on darcy 32x32": ["model=unet", "data=darcy", "data.num_samples=64", "data.resolution=32", "model.width=16"],
}
FORMATS = ("torchscript", "aoti")
BATCHES = (1, 64)


def one_model(name: str, overrides: list[str], work: Path, iters: int, rounds: int) -> dict:
    from ember.api import train
    from ember.config import compose
    from ember.deploy.export import export_run, load_artifact

    cfg = compose([*overrides, "trainer.max_epochs=1", "trainer.progress=none", f"run.root={work / 'runs'}"])
    run_dir = train(cfg).run_dir
    export_s, paths = {}, {}
    for fmt in FORMATS:
        t0 = time.perf_counter()
        paths[fmt] = export_run(run_dir, fmt, echo=lambda s: None).path  # into the run's export/
        export_s[fmt] = round(time.perf_counter() - t0, 2)
    model, _, spec, _ = load_model(run_dir)
    fns = {"eager": Normalized(model, spec).eval(), **{fmt: load_artifact(p, fmt) for fmt, p in paths.items()}}
    latency = {}
    for batch in BATCHES:
        x = raw_inputs(
            torch.randn((batch, *spec.input_shape), generator=torch.Generator().manual_seed(batch)), spec
        ).contiguous()
        with torch.inference_mode():
            rows = compare(fns, x, iters=iters, warmup=20, seconds=10.0, rounds=rounds)
        eager = rows["eager"]["p50_ms"]
        latency[batch] = {
            k: {
                "p50_ms": round(v["p50_ms"], 4),
                "p95_ms": round(v["p95_ms"], 4),
                "over_eager": round(v["p50_ms"] / eager, 3),
            }
            for k, v in rows.items()
        }
    return {"name": name, "overrides": overrides, "export_s": export_s, "latency": latency}


def table(results: list[dict]) -> str:
    lines = [
        "| model | export s (torchscript / aoti) | batch | eager ms | torchscript ms (x eager) | aoti ms (x eager) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for i, batch in enumerate(BATCHES):
            row = r["latency"][batch]
            export = f"{r['export_s']['torchscript']:.1f} / {r['export_s']['aoti']:.1f}" if i == 0 else ""
            cells = [f"{row[f]['p50_ms']:.3f} ({row[f]['over_eager']:.2f}x)" for f in FORMATS]
            lines.append(
                f"| {r['name'] if i == 0 else ''} | {export} | {batch} | {row['eager']['p50_ms']:.3f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=400, help="timed calls per backend and batch size")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds the calls are spread over")
    parser.add_argument("--only", help="a substring of the model names to run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="ember-export-latency-"))
    results = [
        one_model(name, o, work, args.iters, args.rounds)
        for name, o in MODELS.items()
        if not args.only or args.only in name
    ]
    report = {
        "results": results,
        "threads": 1,
        "iters": args.iters,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "statistic": "median latency (p50) of each backend's calls; over_eager = p50 / eager's p50",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
