"""`ember summary`: what a model is before it trains: layers, output shapes, parameters, FLOPs per
sample and the memory a training step needs.

FLOPs come from torch.utils.flop_counter (matrix multiplications and convolutions, counted as 2 per
multiply-add; elementwise operations are not counted). The activation estimate adds up the outputs
of every leaf module in one training-mode forward pass, which is roughly what autograd keeps for
the backward pass; it is an estimate, not a measurement.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ember.config import compose
from ember.data import build_data
from ember.data.spec import DataSpec
from ember.models import create_model, model_kwargs, real_numel
from ember.options import parse_options
from ember.ranges import NON_NEGATIVE, Ranged


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: str
    params: int
    depth: int


@dataclass
class Summary:
    model: str
    input_shape: tuple
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    flops_per_sample: int = 0  # forward pass
    activation_bytes_per_sample: int = 0
    param_bytes: int = 0
    batch_size: int = 1

    @property
    def training_state_bytes(self) -> int:
        # Weights, gradients and two AdamW moments for the trainable ones.
        return self.param_bytes + 3 * self.param_bytes * self.trainable_params // max(self.total_params, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "flops_per_sample": self.flops_per_sample,
            "activation_bytes_per_sample": self.activation_bytes_per_sample,
            "batch_size": self.batch_size,
            "layers": [row.__dict__ for row in self.rows],
        }


def _shape(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return "x".join(str(s) for s in out.shape[1:]) or "scalar"
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return _shape(out[0]) + (f" (+{len(out) - 1})" if len(out) > 1 else "")
    return "-"


def _numel(out: Any) -> int:
    if isinstance(out, torch.Tensor):
        return out[0].numel() if out.ndim else 1
    if isinstance(out, (tuple, list)):
        return sum(_numel(o) for o in out)
    return 0


def summarize(model: nn.Module, spec: DataSpec, batch_size: int = 1, depth: int = 2, name: str = "") -> Summary:
    """Layers down to `depth` levels of nesting, parameters, FLOPs and memory for `spec`'s inputs."""
    summary = Summary(model=name or type(model).__name__, input_shape=tuple(spec.input_shape), batch_size=batch_size)
    params = list(model.parameters())
    # Real numbers: a complex weight is two (neuraloperator's spectral weights).
    summary.total_params = sum(real_numel(p) for p in params)
    summary.trainable_params = sum(real_numel(p) for p in params if p.requires_grad)
    summary.param_bytes = sum(p.numel() * p.element_size() for p in params)

    seen: dict[str, LayerRow] = {}
    activation = [0]
    hooks = []
    for mod_name, module in model.named_modules():
        if not mod_name:
            continue
        level = mod_name.count(".")
        is_leaf = next(module.children(), None) is None

        def hook(mod, inputs, out, mod_name=mod_name, level=level, is_leaf=is_leaf):
            if is_leaf:
                activation[0] += _numel(out) * 4
            if level < depth and mod_name not in seen:
                own = sum(real_numel(p) for p in mod.parameters())
                seen[mod_name] = LayerRow(mod_name, type(mod).__name__, _shape(out), own, level)

        hooks.append(module.register_forward_hook(hook))
    # Two samples: BatchNorm needs more than one value per channel in training mode.
    x = torch.randn(2, *spec.input_shape, device=next(iter(params), torch.empty(0)).device)
    was_training = model.training
    try:
        model.train()
        with torch.no_grad():
            model(x)
        summary.activation_bytes_per_sample = activation[0]
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    # Rows in definition order: a container, then its children, indented.
    summary.rows = [seen[n] for n, _ in model.named_modules() if n in seen]
    # Parameters that belong to the model itself (position embeddings, class tokens) get rows too.
    for pname, p in model.named_parameters(recurse=False):
        summary.rows.append(LayerRow(pname, "Parameter", "x".join(map(str, p.shape)), real_numel(p), 0))
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    model.train(was_training)
    summary.flops_per_sample = int(counter.get_total_flops())
    return summary


def human(n: float, unit: str = "", base: int = 1000) -> str:
    """3 significant digits and an SI prefix (binary prefixes, KiB, MiB, ..., for base 1024)."""
    for prefix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < base or prefix == "P":
            binary = "i" if base == 1024 and prefix else ""
            return f"{n:.3g} {prefix}{binary}{unit}".strip()
        n /= base
    return str(n)


def print_summary(summary: Summary, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(markup=False)  # module names are text, not rich markup
    table = Table(title=f"{summary.model}: input {'x'.join(map(str, summary.input_shape))}")
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    for row in summary.rows:
        table.add_row(
            "  " * row.depth + row.name.rsplit(".", 1)[-1] if row.depth else row.name,
            row.kind,
            row.output_shape,
            f"{row.params:,}" if row.params else "",
        )
    console.print(table)
    frozen = summary.total_params - summary.trainable_params
    b = summary.batch_size
    lines = [
        f"parameters: {summary.total_params:,} ({summary.trainable_params:,} trainable"
        + (f", {frozen:,} frozen)" if frozen else ")"),
        (
            f"FLOPs per sample: {human(summary.flops_per_sample, 'FLOP')} forward, "
            f"about {human(3 * summary.flops_per_sample, 'FLOP')} for a training step"
        ),
        (
            f"memory: weights {human(summary.param_bytes, 'B', 1024)}, training "
            f"state with AdamW {human(summary.training_state_bytes, 'B', 1024)}, "
            f"activations about {human(summary.activation_bytes_per_sample * b, 'B', 1024)} for a batch of {b}"
        ),
    ]
    for line in lines:
        console.print(line)


def summary_from_config(cfg, depth: int = 2) -> Summary:
    """Build the data's spec and the model that `cfg` describes, and summarize it."""
    spec = build_data(cfg.data).spec
    model = create_model(cfg.model.name, spec, **model_kwargs(cfg.model))
    return summarize(model, spec, batch_size=cfg.data.batch_size, depth=depth, name=cfg.model.name)


def summary_command(overrides: list[str], config_file: str | None = None) -> int:
    """ember summary [--config FILE] [depth=N] [overrides]: the model the config describes."""
    options, rest = parse_options("summary", overrides, {"depth": Ranged(2, NON_NEGATIVE)}, rest_ok=True)
    cfg = compose(rest, config_file)
    print_summary(summary_from_config(cfg, depth=options["depth"]))
    return 0
