"""`ember bench run=DIR`: inference latency and throughput per backend and batch size.

Backends: eager PyTorch, `torch.compile`, TorchScript and ONNX Runtime; the last two run the
files `ember export` writes (exported to a temporary folder and parity-checked first). Each
(backend, batch size) is warmed up, then timed call by call: p50 and p95 latency, and throughput
as samples per second of the mean latency. Inputs are random, in the data's units; the model
takes raw inputs as exported. The table is printed and, for a run, written to `<run>/bench.json`.
"""

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.config import compose
from ember.data import build_data
from ember.data.spec import DataSpec
from ember.deploy.common import load_model, quiet
from ember.deploy.export import export_model, load_artifact
from ember.errors import ConfigError, EmberError, first_line
from ember.files import check_output, output_errors, write_atomic
from ember.models import builder_kwargs, create_model
from ember.options import parse_options
from ember.ranges import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Ranged
from ember.scoring.units import Normalized, raw_inputs
from ember.train.flops import cpu_name

BACKENDS = ("eager", "compile", "torchscript", "onnxruntime", "aoti")
# aoti compiles for tens of seconds, so it runs when asked for by name (backends=eager,aoti).
DEFAULT_BACKENDS = BACKENDS[:-1]
DEFAULTS = {
    "run": None,
    "batch_sizes": Ranged((1, 8, 64), AT_LEAST_1),
    "backends": DEFAULT_BACKENDS,
    "iters": Ranged(100, AT_LEAST_1),
    "warmup": Ranged(10, NON_NEGATIVE),
    "seconds": Ranged(2.0, POSITIVE),
    "threads": Ranged(0, NON_NEGATIVE),  # 0: torch's own choice
    "out": None,
}


def bench_command(overrides: list[str]) -> int:
    """ember bench run=DIR [batch_sizes=1,8,64] [backends=...] [iters=100] [warmup=10] [seconds=2] [threads=N]
    [out=FILE]
    ember bench model=NAME data=NAME [model.key=value ...]: a freshly initialized model, no run needed."""
    opts, rest = parse_options("bench", overrides, DEFAULTS, rest_ok=True)
    if opts["run"] and rest:
        raise ConfigError(
            f"ember bench run=DIR takes the run's model; {rest[0]!r} is not an option of bench: "
            f"{', '.join(f'{k}=' for k in DEFAULTS)}"
        )
    bench_run(
        opts["run"],
        rest,
        batch_sizes=opts["batch_sizes"],
        backends=opts["backends"],
        iters=opts["iters"],
        warmup=opts["warmup"],
        seconds=opts["seconds"],
        threads=opts["threads"],
        out=opts["out"],
    )
    return 0


def bench_run(
    run_dir: str | Path | None = None,
    overrides: list[str] = (),
    *,
    batch_sizes: tuple[int, ...] = (1, 8, 64),
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
    iters: int = 100,
    warmup: int = 10,
    seconds: float = 2.0,
    threads: int = 0,
    out: str | Path | None = None,
) -> dict:
    """Benchmark a run's model (or `model=... data=...` overrides); returns what bench.json holds."""
    _check_settings(batch_sizes, backends, iters, warmup)
    path = Path(out) if out else (Path(run_dir) / "bench.json" if run_dir else None)
    if path is not None:  # before minutes of timing are spent for it
        check_output(path, "the benchmark", "out=")
    if threads:
        torch.set_num_threads(threads)
    wrapper, spec, name = _model(run_dir, overrides)
    fns, skipped = _backends(backends, wrapper, spec)
    results = []
    for b in batch_sizes:
        rows = compare(fns, _inputs(spec, b), iters=iters, warmup=warmup, seconds=seconds, failed=skipped)
        results += [{"backend": k, "batch": b, **row} for k, row in rows.items()]
    results = [r for r in results if r["backend"] not in skipped]  # a backend that failed at any size
    eager = {r["batch"]: r["samples_per_s"] for r in results if r["backend"] == "eager"}
    for r in results:
        if r["batch"] in eager:
            r["vs_eager"] = round(r["samples_per_s"] / eager[r["batch"]], 3)
    report = {
        "model": name,
        "run": str(Path(run_dir).resolve()) if run_dir else None,
        "input_shape": list(spec.input_shape),
        "device": "cpu",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "versions": _versions(),
        "settings": {
            "batch_sizes": list(batch_sizes),
            "backends": list(backends),
            "iters": iters,
            "warmup": warmup,
            "seconds": seconds,
        },
        "results": results,
        "skipped": skipped,
    }
    _print(report)
    if path is not None:
        with output_errors(path, "the benchmark", "out="):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return report


def _check_settings(batch_sizes: tuple[int, ...], backends: tuple[str, ...], iters: int, warmup: int) -> None:
    for b in backends:
        if b not in BACKENDS:
            raise ConfigError(f"unknown backend {b!r}; choose from: {', '.join(BACKENDS)}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch_sizes={','.join(map(str, batch_sizes))} must be sizes of at least 1")
    if iters < 1 or warmup < 0:
        raise ConfigError(f"iters={iters} must be at least 1 and warmup={warmup} at least 0")


def _backends(names: tuple[str, ...], wrapper: torch.nn.Module, spec: DataSpec) -> tuple[dict, dict[str, str]]:
    """The model ready to run on each backend, and why each one that cannot take it was skipped."""
    fns, skipped = {}, {}
    for backend in names:
        try:
            fns[backend] = _backend(backend, wrapper, spec)
        except EmberError as e:
            skipped[backend] = str(e)
        except Exception as e:  # noqa: BLE001 - a backend that cannot take this model is reported, not fatal
            skipped[backend] = first_line(e, innermost=True)
    return fns, skipped


def compare(
    fns: dict[str, Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
    *,
    iters: int = 100,
    warmup: int = 10,
    seconds: float = 2.0,
    rounds: int = 5,
    failed: dict | None = None,
) -> dict[str, dict]:
    """Time each function on `x`: warm-up, then `iters` calls each, interleaved in `rounds`
    rounds so that a change in the machine's load (other jobs, clock) hits all of them alike.

    A function stops early once its calls passed `seconds` (after at least 5). One that raises
    is left out, its error's first line in `failed`.
    """
    failed = {} if failed is None else failed
    live, first = {}, {}
    for name, fn in fns.items():
        if name in failed:
            continue
        try:
            t0 = time.perf_counter()
            with quiet():  # the first call compiles (torch.compile) or initializes lazily
                fn(x)
            first[name] = round(time.perf_counter() - t0, 4)
            for _ in range(max(0, warmup - 1)):
                fn(x)
        except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a C++ compiler
            failed[name] = first_line(e, innermost=True)
            continue
        live[name] = fn
    times: dict[str, list[float]] = {name: [] for name in live}
    per_round = max(1, -(-iters // rounds))
    for _ in range(rounds):
        for name, fn in live.items():
            t = times[name]
            if len(t) >= iters or (sum(t) > seconds and len(t) >= min(iters, 5)):
                continue
            for _ in range(min(per_round, iters - len(t))):
                t0 = time.perf_counter()
                fn(x)
                t.append(time.perf_counter() - t0)
    return {name: {**_stats(np.array(t), len(x)), "first_call_s": first[name]} for name, t in times.items()}


def measure(
    fn: Callable[[torch.Tensor], Any], x: torch.Tensor, *, iters: int = 100, warmup: int = 10, seconds: float = 2.0
) -> dict:
    """Latency and throughput of one function on `x` (see `compare`)."""
    failed: dict = {}
    rows = compare({"fn": fn}, x, iters=iters, warmup=warmup, seconds=seconds, failed=failed)
    if failed:
        raise RuntimeError(failed["fn"])
    return rows["fn"]


def _stats(t: np.ndarray, batch: int) -> dict:
    return {
        "p50_ms": float(np.percentile(t, 50) * 1e3),
        "p95_ms": float(np.percentile(t, 95) * 1e3),
        "mean_ms": float(t.mean() * 1e3),
        "samples_per_s": float(batch / t.mean()),
        "iters": len(t),
    }


def _model(run_dir, overrides) -> tuple[torch.nn.Module, DataSpec, str]:
    if run_dir:
        model, cfg, spec, _ = load_model(run_dir)
        return Normalized(model, spec).eval(), spec, f"{cfg.model.name} ({Path(run_dir).name})"
    cfg = compose(list(overrides))
    with quiet():
        spec = build_data(cfg.data).spec
    model = create_model(cfg.model.name, spec, **builder_kwargs(cfg.model)).eval()
    return Normalized(model, spec).eval(), spec, f"{cfg.model.name} on {cfg.data.name} (untrained)"


def _inputs(spec: DataSpec, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return raw_inputs(torch.randn((batch, *spec.input_shape), generator=g), spec).contiguous()


def _backend(name: str, wrapper: torch.nn.Module, spec: DataSpec) -> Callable[[torch.Tensor], Any]:
    if name == "eager":
        return _no_grad(wrapper)
    if name == "compile":
        with quiet():
            compiled = torch.compile(wrapper, dynamic=False)
        return _no_grad(compiled)
    # The files `ember export` writes, parity-checked, run by their own runtime.
    fmt, fname = {
        "torchscript": ("torchscript", "model.ts"),
        "onnxruntime": ("onnx", "model.onnx"),
        "aoti": ("aoti", "model.aoti.pt2"),
    }[name]
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as tmp:
        path = Path(tmp) / fname
        export_model(wrapper, fmt, path, _inputs(spec, 8), spec=spec, checked_on="random inputs")
        with quiet():
            fn = load_artifact(path, fmt, threads=torch.get_num_threads())
    return _no_grad(fn)


def _no_grad(fn):
    def call(x):
        with torch.inference_mode():
            return fn(x)

    return call


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{report['model']}: inference on {report['device']}, {report['threads']} thread(s), "
        f"input {'x'.join(map(str, report['input_shape']))}"
    )
    table = Table(title=title, title_justify="left")
    for col, right in (
        ("backend", False),
        ("batch", True),
        ("p50 ms", True),
        ("p95 ms", True),
        ("samples/s", True),
        ("vs eager", True),
    ):
        table.add_column(col, justify="right" if right else "left")
    for r in report["results"]:
        ratio = f"{r['vs_eager']:.2f}x" if "vs_eager" in r else ""
        table.add_row(
            r["backend"],
            str(r["batch"]),
            f"{r['p50_ms']:.3g}",
            f"{r['p95_ms']:.3g}",
            f"{r['samples_per_s']:,.0f}",
            ratio,
        )
    console = Console(highlight=False, soft_wrap=True, markup=False)  # names and paths are text, not rich markup
    console.print(table)
    for b, why in report["skipped"].items():
        console.print(f"{b}: skipped ({why})")


def _versions() -> dict:
    out = {"torch": torch.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out
