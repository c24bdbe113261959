"""`ember export run=DIR format=...`: the run's model as a file another program can run, checked.

    torchscript   model.ts     torch.jit.script, or torch.jit.trace where scripting fails
    onnx          model.onnx   the torch.onnx dynamo exporter (pip install 'ember[export]')
    exported      model.pt2    a torch.export program
    aoti          model.aoti.pt2   an AOTInductor package: compiled for C/C++ (TorchScript's successor)
    safetensors   model.safetensors   the weights, with config and spec in its metadata

The graph formats take raw inputs: the run's per-channel standardization is part of the graph.
Every export is run through its own runtime (the TorchScript loader, ONNX Runtime, torch.export's
loader, a model rebuilt from the weights) on held-out samples and compared with the eager model;
an export above the tolerance is an error, and nothing is left where the artifact would be.
The writer of each format, and the report of a model that does not convert, are in deploy/writers.py.
Beside the artifact, `<artifact>.json` names its inputs and outputs with shapes and dtypes.
"""

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils._pytree import tree_leaves

import ember
from ember.data.spec import DataSpec
from ember.deploy import trust
from ember.deploy.artifacts import (  # noqa: F401 - tests and benchmarks import the loaders from here too
    FILE_NAMES,
    RUNNERS,
    format_of,
    load_artifact,
    load_safetensors,
)
from ember.deploy.common import ExportError, deployed, held_out_batch, load_model, output_name, work_dir
from ember.deploy.writers import INPUT_NAME, TITLES, WRITERS
from ember.errors import ConfigError, first_line
from ember.files import check_output, output_errors, publish, run_folder
from ember.models import builder_kwargs
from ember.options import parse_options
from ember.ranges import AT_LEAST_1, NON_NEGATIVE, Ranged

FORMATS = FILE_NAMES  # format -> default file name
# torch 2.13 warns that torch.jit.script/trace/load are deprecated on every call, which ember's
# exporters and loaders silence (quiet()); the user reads it here once, with what to do about it.
TORCHSCRIPT_NOTE = (
    "note: TorchScript is deprecated upstream (torch 2.13 warns on torch.jit.script, trace and load) "
    "but libtorch still runs it; ember keeps it "
    "because FTorch, the Fortran bridge, takes only TorchScript. For C, C++ or ember_infer's Fortran module, "
    "format=aoti (AOTInductor) is its successor"
)


@dataclass
class Exported:
    """What an export wrote and how close it came to the eager model."""

    path: Path
    meta_path: Path
    format: str
    method: str  # torch.jit.script | torch.jit.trace | torch.onnx dynamo exporter | torch.export | weights
    max_abs_error: float
    max_rel_error: float
    checked_on: str
    note: str = ""


# -- the command ---------------------------------------------------------------------------------
def export_command(overrides: list[str]) -> int:
    """ember export run=DIR format=torchscript|onnx|exported|safetensors [batch=dynamic] [out=PATH] [atol=] [rtol=]."""
    opts, _ = parse_options(
        "export",
        overrides,
        {
            "run": None,
            "format": None,
            "batch": "dynamic",
            "out": None,
            "atol": Ranged(1e-5, NON_NEGATIVE),
            "rtol": Ranged(1e-4, NON_NEGATIVE),
            "samples": Ranged(64, AT_LEAST_1),
        },
    )
    if not opts["run"]:
        raise ConfigError("ember export needs the run to export: ember export run=runs/<name>/<time> format=onnx")
    if not opts["format"]:
        raise ConfigError(f"ember export needs format=, one of: {', '.join(FORMATS)}")
    export_run(
        opts["run"],
        opts["format"],
        out=opts["out"],
        batch=parse_batch(opts["batch"]),
        atol=opts["atol"],
        rtol=opts["rtol"],
        samples=opts["samples"],
    )
    return 0


def parse_batch(value: Any) -> int | None:
    """batch=dynamic -> None (any batch size); batch=N -> N."""
    if value is None or str(value) == "dynamic":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"batch={value!r} must be dynamic or a batch size of at least 1")
    return n


def export_run(
    run_dir: str | Path,
    fmt: str,
    *,
    out: str | Path | None = None,
    batch: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    samples: int = 64,
    echo: Callable[[str], None] = print,
) -> Exported:
    """Export a run's best model to `fmt` (in `<run>/export/` unless `out`), with a parity check."""
    check_format(fmt)
    path = Path(out) if out else run_folder(Path(run_dir), "export") / FORMATS[fmt]  # refused if a link
    model, cfg, spec, summary = load_model(run_dir)
    check_output(path, f"the {fmt} export", "out=")
    x, where = held_out_batch(cfg, spec, max(2, samples))
    config = OmegaConf.to_container(cfg, resolve=True)
    meta = {
        "run": str(Path(run_dir).resolve()),
        "model": cfg.model.name,
        "compression": summary.get("compression"),
        "config": config,
    }
    model_config = {"name": cfg.model.name, **builder_kwargs(config["model"])}
    result = export_model(
        deployed(model, spec, cfg.data),
        fmt,
        path,
        x,
        spec=spec,
        batch=batch,
        atol=atol,
        rtol=rtol,
        meta=meta,
        checked_on=where,
        model_config=model_config,
    )
    shape = ", ".join(str(d) for d in ["batch" if batch is None else batch, *spec.input_shape])
    if fmt == "safetensors":
        echo(
            f"exported {result.path} (weights; model config and normalization statistics in its metadata: "
            "ember.deploy.load_safetensors rebuilds the model)"
        )
    else:
        units = ", and the outputs come back in the data's units" if spec.target_mean is not None else ""
        echo(
            f"exported {result.path} ({result.method}; input [{shape}] in raw units: "
            f"the normalization is in the graph{units})"
        )
    if result.note:
        echo(f"note: {result.note}")
    if fmt == "torchscript":
        echo(TORCHSCRIPT_NOTE)
    echo(
        f"parity on {where}: max abs error {result.max_abs_error:.3g}, max rel error {result.max_rel_error:.3g} "
        f"(tolerance atol {atol:g} + rtol {rtol:g} x max|output|)"
    )
    echo(f"wrote {result.meta_path}")
    return result


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        import difflib

        hint = difflib.get_close_matches(str(fmt), list(FORMATS), n=1)
        did = f"did you mean {hint[0]}? " if hint else ""
        raise ConfigError(f"unknown export format {fmt!r}; {did}choose one of: {', '.join(FORMATS)}")


# -- the engine ----------------------------------------------------------------------------------
def export_model(
    wrapper: nn.Module,
    fmt: str,
    path: str | Path,
    x: torch.Tensor,
    *,
    spec: DataSpec,
    batch: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    meta: dict | None = None,
    checked_on: str = "",
    model_config: dict | None = None,
) -> Exported:
    """Export `wrapper` (a model taking raw inputs) to `path`, run it back and compare with eager.

    `x` is a batch of raw inputs; `batch=None` makes the batch dimension dynamic (checked at the
    size of `x` and at 1), an int fixes it. Nothing is written at `path` unless the check passes.
    `model_config` (the run's `model` config) lets a safetensors export be rebuilt from the registry.
    """
    check_format(fmt)
    wrapper = wrapper.eval()
    path = Path(path)
    example = _example(x, batch)
    checks = [example] if batch is not None else [example, example[:1]]
    if spec.input_mask:  # the masked points as NaN, as a real file holds them: the graph's fill is checked too
        checks.append(_with_nan(example, spec.input_mask))
    with output_errors(path, f"the {fmt} export", "out="):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = work_dir(path)
    try:
        tmp = tmpdir / path.name
        method, note = WRITERS[fmt](wrapper, example, tmp, batch is None, spec, model_config)
        run = RUNNERS[fmt](tmp, wrapper, model_config)
        max_abs, max_rel = parity(run, wrapper, checks, atol, rtol, f"{TITLES[fmt]} export", checked_on)
        checked = {
            "max_abs_error": max_abs,
            "max_rel_error": max_rel,
            "atol": atol,
            "rtol": rtol,
            "checked_on": checked_on,
            "batch_sizes": [len(c) for c in checks],
        }
        info = _description(fmt, path.name, method, wrapper, example, spec, batch, checked) | (meta or {})
        info["sha256"] = trust.sha256(tmp)  # what predict checks a program file against (deploy/trust.py)
        with output_errors(path, f"the {fmt} export", "out="):
            (tmpdir / (path.name + ".json")).write_text(json.dumps(info, indent=2) + "\n")  # published below
            # The artifact (and ONNX's external data, if any) first, its description last.
            for f in sorted(tmpdir.iterdir(), key=lambda p: p.suffix == ".json"):
                publish(f, path.parent / f.name)
            if fmt in trust.PROGRAMS:  # this user's own program: predict loads it without trust=true
                trust.remember(info["sha256"], path.resolve())
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return Exported(path, path.with_name(path.name + ".json"), fmt, method, max_abs, max_rel, checked_on, note)


def _description(
    fmt: str,
    name: str,
    method: str,
    wrapper: nn.Module,
    example: torch.Tensor,
    spec: DataSpec,
    batch: int | None,
    checked: dict,
) -> dict:
    """What `<artifact>.json` says of an export: its inputs and outputs with shapes, the
    normalization folded into it, the parity check, the DataSpec and the library versions."""
    with torch.no_grad():
        outputs = [o for o in tree_leaves(wrapper(example)) if isinstance(o, torch.Tensor)]
    output_names = [output_name(spec)] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    batch_dim = "batch" if batch is None else batch
    return {
        "format": fmt,
        "file": name,
        "method": method,
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": [batch_dim, *spec.input_shape],
                "dtype": str(example.dtype).removeprefix("torch."),
            }
        ],
        "outputs": [
            {"name": n, "shape": [batch_dim, *o.shape[1:]], "dtype": str(o.dtype).removeprefix("torch.")}
            for n, o in zip(output_names, outputs)
        ],
        "task": spec.task,
        "class_names": spec.class_names,
        "normalization": {
            "folded": fmt != "safetensors",
            "mean": spec.mean,
            "std": spec.std,
            "dim": 1,
            "target_mean": spec.target_mean,
            "target_std": spec.target_std,
            "note": (
                "inside the graph: pass raw inputs, get outputs in the data's units"
                if fmt != "safetensors"
                else (
                    "ember.deploy.load_safetensors applies it; a model rebuilt by hand takes (x - mean) "
                    "/ std per channel and its output is y * target_std + target_mean"
                )
            ),
        },
        "parity": checked,
        "spec": spec.to_dict(),
        "versions": _versions(fmt),
        "created": time.time(),
    }


def _with_nan(x: torch.Tensor, flat: list[int]) -> torch.Tensor:
    """`x` with NaN at the flat indices `flat` of every sample (before any mask channel)."""
    out = x.clone().reshape(len(x), -1)
    out[:, torch.as_tensor(flat, dtype=torch.long)] = float("nan")
    return out.reshape(x.shape)


def _example(x: torch.Tensor, batch: int | None) -> torch.Tensor:
    x = x.float().contiguous()
    want = batch or max(2, len(x))  # a dynamic batch is traced at >= 2: torch.export specializes 1
    if len(x) < want:
        x = x.repeat((want + len(x) - 1) // len(x), *([1] * (x.ndim - 1)))
    return x[:want].contiguous()


def parity(
    run: Callable,
    wrapper: nn.Module,
    inputs: list[torch.Tensor],
    atol: float,
    rtol: float,
    what: str,
    checked_on: str = "",
) -> tuple[float, float]:
    """Largest absolute and relative (to max|output|) difference of `run` from `wrapper`; raise
    above atol + rtol * max|output|."""
    worst_abs = worst_rel = 0.0
    for x in inputs:
        with torch.no_grad():
            want = [t for t in tree_leaves(wrapper(x)) if isinstance(t, torch.Tensor)]
            try:
                got = [torch.as_tensor(t) for t in tree_leaves(run(x))]
            except Exception as e:  # noqa: BLE001 - the runtime's own failure, reported in one line
                raise ExportError(
                    f"parity check failed: the {what} cannot run a batch of {len(x)} "
                    f"({first_line(e, innermost=True)}); no artifact was written; export with batch={len(inputs[0])} "
                    "for a fixed batch size, or try another format"
                ) from None
        if [tuple(t.shape) for t in got] != [tuple(t.shape) for t in want]:
            raise ExportError(
                f"parity check failed: the {what} returns shapes {[tuple(t.shape) for t in got]} for a batch of "
                f"{len(x)}, the eager model {[tuple(t.shape) for t in want]}; no artifact was written"
            )
        for g, w in zip(got, want):
            g, w = g.double(), w.double()
            # NaN where both are NaN (the run's masked points) agrees; NaN on one side only does not.
            diff = torch.where(torch.isnan(g) & torch.isnan(w), 0.0, (g - w).abs())
            err = diff.max().item() if g.numel() else 0.0
            scale = w.nan_to_num(0.0).abs().max().item() if w.numel() else 0.0
            rel = err / scale if scale > 0 else err
            if math.isnan(err) or err > atol + rtol * scale:
                where = f" on {checked_on}" if checked_on else ""
                raise ExportError(
                    f"parity check failed: the {what} differs from the eager model by up to {err:.3g} (relative "
                    f"{rel:.3g}){where}, batch {len(x)}, "
                    f"above atol={atol:g} + rtol={rtol:g} x max|output|; no artifact was written; "
                    "raise atol=/rtol= if that difference is expected, or use another format"
                )
            worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
    return worst_abs, worst_rel


def _versions(fmt: str) -> dict:
    out = {"ember": ember.__version__, "torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        out.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return out
