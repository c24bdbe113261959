"""`ember compress run=DIR method=dynamic_int8|prune [sparsity=0.5]`: a smaller model, measured.

- dynamic_int8: the weights of every nn.Linear stored as int8, activations quantized on the fly
  (`torch.ao.quantization.quantize_dynamic`); no data or training needed. The new run directory
  keeps the float checkpoint and says `compression: dynamic_int8` in summary.json, so ember's
  commands (predict, export, bench) quantize it again on loading, deterministically; its
  `export/model.ts` is the quantized model as TorchScript, parity-checked.
- prune: the `sparsity` share of the weights of linear and convolution layers with the smallest
  magnitude (over all those layers together) set to zero, then a short fine-tuning with the
  run's own training settings (`epochs`, and any config override) during which they stay zero
  (their gradients are masked). The result is an ordinary run directory.

The table compares the model before and after: test metric, nonzero weights, size on disk,
latency at batch 1 and throughput at batch 64 (eager, this machine).
"""

import copy
import dataclasses
import io
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.api import train_model
from ember.config import compose_typed
from ember.data import build_data
from ember.deploy.bench import compare
from ember.deploy.common import ExportError, load_model, quantize_dynamic_int8, quiet
from ember.deploy.export import export_run
from ember.errors import ConfigError
from ember.files import check_output
from ember.options import parse_options
from ember.ranges import AT_LEAST_1, OPEN_UNIT, Ranged
from ember.rundir.record import RunRecord
from ember.scoring.units import Normalized, raw_inputs
from ember.track.console import Console
from ember.train.build import build_evaluator
from ember.train.device import seed_everything

METHODS = ("dynamic_int8", "prune")
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def compress_command(overrides: list[str]) -> int:
    """ember compress run=DIR method=dynamic_int8|prune [sparsity=0.5] [epochs=1] [out=DIR] [config overrides
    for fine-tuning]."""
    opts, rest = parse_options(
        "compress",
        overrides,
        {"run": None, "method": None, "sparsity": Ranged(0.5, OPEN_UNIT), "epochs": Ranged(1, AT_LEAST_1), "out": None},
        rest_ok=True,
    )
    if not opts["run"]:
        raise ConfigError(
            "ember compress needs the run to compress: ember compress run=runs/<name>/<time> method=dynamic_int8"
        )
    compress_run(
        opts["run"], opts["method"], sparsity=opts["sparsity"], epochs=opts["epochs"], out=opts["out"], overrides=rest
    )
    return 0


def compress_run(
    run_dir: str | Path,
    method: str | None,
    *,
    sparsity: float = 0.5,
    epochs: int = 1,
    out: str | Path | None = None,
    overrides: list[str] = (),
) -> Path:
    """Compress a run's best model into a new run directory; print and return where it is."""
    if method not in METHODS:
        raise ConfigError(f"ember compress needs method=, one of: {', '.join(METHODS)} (got {method!r})")
    if method == "dynamic_int8" and overrides:
        raise ConfigError(
            f"method=dynamic_int8 does not train, so it takes no config override like {overrides[0]!r}; "
            "options: run=, method=, out="
        )
    if method == "prune" and not 0 < sparsity < 1:
        raise ConfigError(f"sparsity={sparsity} must be between 0 and 1 (the share of weights set to zero)")
    if method == "prune" and epochs < 1:
        raise ConfigError(f"epochs={epochs} must be at least 1: pruning is followed by fine-tuning")
    run_dir = Path(run_dir)
    model, cfg, spec, summary = load_model(run_dir)
    if (summary.get("compression") or {}).get("method") == "dynamic_int8":
        raise ConfigError(
            f"{run_dir} is already quantized to int8; compress its source run "
            f"{summary['compression'].get('source')} instead"
        )
    suffix = "int8" if method == "dynamic_int8" else f"pruned{round(sparsity * 100)}"
    out = Path(out) if out else run_dir.with_name(f"{run_dir.name}-{suffix}")
    if (out / "config.yaml").exists():
        raise ConfigError(f"{out} already holds a run; pass out= a new directory")
    check_output(out, "the compressed run", "out=", folder=True)

    with quiet():
        splits = build_data(cfg.data)
    split = "test" if splits.test is not None else "val" if splits.val is not None else "train"
    score = Scorer(cfg, splits, split, model)
    before = _profile(model, score)
    if method == "dynamic_int8":
        _write_int8_run(run_dir, out, summary, quantize_dynamic_int8(copy.deepcopy(model)), score)
    else:
        info = {"method": method, "source": str(run_dir.resolve()), "sparsity": sparsity, "finetune_epochs": epochs}
        _prune_and_finetune(model, cfg, out, sparsity, epochs, list(overrides), info)
    after_model, _, _, _ = load_model(out)
    after = _profile(after_model, score)
    _timings(model, after_model, spec, before, after)
    _print_comparison(run_dir, out, method, before, after)
    return out


# -- dynamic int8 --------------------------------------------------------------------------------
def _write_int8_run(source: Path, out: Path, summary: dict, qmodel: nn.Module, score: "Scorer") -> None:
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "spec.json", "splits.json", "model.safetensors"):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    # The float weights: quantizing them again on loading gives exactly this model.
    which = "best.pt" if (source / "checkpoints" / "best.pt").is_file() else "last.pt"
    shutil.copy2(source / "checkpoints" / which, out / "checkpoints" / which)
    metrics = score(qmodel)
    RunRecord(out).derived(
        {
            "run_dir": str(out),
            "metrics": metrics,
            "compression": {
                "method": "dynamic_int8",
                "source": str(source.resolve()),
                "layers": "nn.Linear",
                "dtype": "qint8",
            },
            "params": summary.get("params"),
            "versions": {"torch": torch.__version__},
            "finished": time.time(),
        },
    )
    # The deployable artifact: TorchScript of the quantized model, raw inputs in, parity-checked.
    try:
        export_run(out, "torchscript", echo=lambda s: None)
    except ExportError as e:
        print(f"note: the int8 model was not exported to TorchScript ({e})")


# -- magnitude pruning ---------------------------------------------------------------------------
def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Masks (True = kept) zeroing the `sparsity` share of smallest |weight| over all linear and
    convolution weights together, so layers with many small weights give up more of them."""
    weights = {
        f"{name}.weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE) and m.weight.requires_grad
    }
    if not weights:
        raise ConfigError(f"{type(model).__name__} has no trainable linear or convolution weights to prune")
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    k = round(sparsity * flat.numel())
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    drop[torch.topk(flat, k, largest=False).indices] = True
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = ~drop[start : start + w.numel()].reshape(w.shape)
        start += w.numel()
    return masks


def _prune_and_finetune(
    model: nn.Module, cfg, out: Path, sparsity: float, epochs: int, overrides: list[str], info: dict
) -> nn.Module:
    cfg, conf = compose_typed(
        [f"trainer.max_epochs={epochs}", "trainer.max_steps=-1", f"run.dir={out}", "resume=null", *overrides], saved=cfg
    )
    model = copy.deepcopy(model).train()
    masks = magnitude_masks(model, sparsity)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
            # A zero gradient keeps a pruned weight at zero under SGD, Adam and AdamW alike: their
            # moments stay zero and decoupled weight decay scales zero to zero.
            params[name].register_hook(lambda g, m=mask: g * m.to(g.device))
    seed_everything(conf.trainer.seed)
    splits = build_data(conf.data)
    result = train_model(cfg, conf, model, splits, Console(conf.trainer.progress))
    info["achieved_sparsity"] = round(_sparsity(result.model), 4)
    RunRecord(out).annotated("compression", info)
    return result.model


def _sparsity(model: nn.Module) -> float:
    ws = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / max(total, 1)


# -- measuring before and after ------------------------------------------------------------------
class Scorer:
    """A model's loss and metrics on one split by the evaluator training's test uses (in the data's
    units, with the run's baselines as reference), on the CPU: PyTorch's int8 kernels run there only."""

    def __init__(self, cfg, splits, split: str, model: nn.Module):
        _, conf = compose_typed(["trainer.device=cpu", "trainer.precision=fp32", "trainer.compile=false"], saved=cfg)
        self.evaluator, loaders = build_evaluator(conf, model, splits)
        self.split, self.loader = split, dict(zip(("train", "val", "test"), loaders, strict=True))[split]

    def __call__(self, model: nn.Module) -> dict[str, float]:
        scored = dataclasses.replace(self.evaluator, model=model, module=model)
        return {f"{self.split}/{k}": v for k, v in scored.evaluate(self.loader, self.split).items()}


def _profile(model: nn.Module, score: Scorer) -> dict[str, Any]:
    weights = [t for t in model.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    profile: dict[str, Any] = score(model)
    qlinear = [
        m
        for m in model.modules()
        if type(m).__name__ == "Linear" and type(m).__module__.startswith("torch.ao.nn.quantized")
    ]
    total = sum(t.numel() for t in weights) + sum(m.weight().numel() for m in qlinear)
    nonzero = sum(int((t != 0).sum()) for t in weights) + sum(
        int((m.weight().int_repr() != m.weight().q_zero_point()).sum()) for m in qlinear
    )
    profile.update(weights=total, nonzero=nonzero, size_mb=buf.getbuffer().nbytes / 2**20)
    return profile


def _timings(model: nn.Module, after_model: nn.Module, spec, before: dict, after: dict) -> None:
    """Latency at batch 1 and throughput at batch 64 of both models, timed in alternation."""
    fns = {}
    for key, m in (("before", model), ("after", after_model)):
        wrapper = Normalized(m, spec).eval()

        def run(x, wrapper=wrapper):
            with torch.inference_mode():
                return wrapper(x)

        fns[key] = run
    for batch in (1, 64):
        x = raw_inputs(torch.randn(batch, *spec.input_shape, generator=torch.Generator().manual_seed(0)), spec)
        rows = compare(fns, x, iters=100, warmup=5, seconds=1.0)
        for key, profile in (("before", before), ("after", after)):
            if batch == 1:
                profile["latency_ms_b1"] = rows[key]["p50_ms"]
            else:
                profile["samples_per_s_b64"] = rows[key]["samples_per_s"]


def _print_comparison(source: Path, out: Path, method: str, before: dict, after: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{method}: {source} -> {out}", title_justify="left")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="left" if not col else "right")
    metric_keys = [k for k in before if "/" in k]
    for k in metric_keys:
        table.add_row(k, f"{before[k]:.4g}", f"{after[k]:.4g}", f"{after[k] - before[k]:+.4g}")
    table.add_row(
        "nonzero weights",
        f"{before['nonzero']:,}",
        f"{after['nonzero']:,}",
        f"{after['nonzero'] / max(before['nonzero'], 1):.2f}x",
    )
    table.add_row(
        "size (MB)",
        f"{before['size_mb']:.3g}",
        f"{after['size_mb']:.3g}",
        f"{after['size_mb'] / before['size_mb']:.2f}x",
    )
    table.add_row(
        "latency batch 1 (ms)",
        f"{before['latency_ms_b1']:.3g}",
        f"{after['latency_ms_b1']:.3g}",
        f"{after['latency_ms_b1'] / before['latency_ms_b1']:.2f}x",
    )
    table.add_row(
        "samples/s batch 64",
        f"{before['samples_per_s_b64']:,.0f}",
        f"{after['samples_per_s_b64']:,.0f}",
        f"{after['samples_per_s_b64'] / before['samples_per_s_b64']:.2f}x",
    )
    console = Console(highlight=False, soft_wrap=True, markup=False)  # names and paths are text, not rich markup
    console.print(table)
    console.print(f"compressed run: {out}")
