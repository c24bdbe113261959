"""`ember graph`: the autograd graph of one forward pass, as the tutorials draw it with torchviz.

The graph is read from the output's grad_fn chain (the operations backward will run, each pointing
to the ones before it) and written as Graphviz DOT, then rendered to SVG and PNG by Graphviz's
`dot` program. Parameters are the blue leaves, named as in the state dict; the output is green.
The module tree (print(model)) is written beside it.
"""

import shutil
import subprocess
from pathlib import Path

import torch
from torch import nn

from ember.config import compose
from ember.data import build_data
from ember.data.spec import DataSpec
from ember.errors import ConfigError, EmberError
from ember.files import check_output, output_errors, write_atomic
from ember.models import brings_own_loss, create_model, model_kwargs
from ember.options import parse_options


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def autograd_dot(model: nn.Module, spec: DataSpec, batch_size: int = 2) -> tuple[str, int]:
    """DOT source of the autograd graph of model's forward pass (its loss for generative models),
    and the number of operation nodes."""
    params = {id(p): name for name, p in model.named_parameters()}
    x = torch.randn(batch_size, *spec.input_shape, device=next(model.parameters()).device)
    model.train()
    if brings_own_loss(model):
        y = torch.zeros(batch_size, dtype=torch.long, device=x.device)
        out, _ = model.loss((x, y))
    else:
        out = model(x)
    outputs = [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)]
    lines = [
        "digraph autograd {",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=12];',
        '  node [shape=box, style=filled, fillcolor=lightgray, fontname="Helvetica", fontsize=10, height=0.2];',
    ]
    seen: set[int] = set()
    ops = 0
    stack = []
    for i, o in enumerate(outputs):
        shape = "x".join(map(str, o.shape)) or "scalar"
        lines.append(f'  out{i} [label="output\\n{shape}", fillcolor=darkolivegreen1];')
        if o.grad_fn is not None:
            lines.append(f"  n{id(o.grad_fn)} -> out{i};")
            stack.append(o.grad_fn)
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        variable = getattr(fn, "variable", None)  # AccumulateGrad: a leaf tensor
        if variable is not None:
            name = params.get(id(variable), "tensor")
            shape = "x".join(map(str, variable.shape))
            lines.append(f'  n{id(fn)} [label="{_label(name)}\\n{shape}", fillcolor=lightblue];')
        else:
            ops += 1
            lines.append(f'  n{id(fn)} [label="{_label(type(fn).__name__)}"];')
        for next_fn, _ in fn.next_functions:
            if next_fn is not None:
                lines.append(f"  n{id(next_fn)} -> n{id(fn)};")
                stack.append(next_fn)
    lines.append("}")
    return "\n".join(lines) + "\n", ops


def render(dot_source: str, out: str | Path, formats: tuple[str, ...] = ("svg", "png")) -> list[Path]:
    """Write `out`.dot and render it to each format with Graphviz; returns the files written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dot_file = out.with_name(out.name + ".dot")
    write_atomic(dot_file, dot_source)
    written = [dot_file]
    exe = shutil.which("dot")
    if exe is None:
        raise ConfigError(
            f"wrote {dot_file}, but rendering needs Graphviz's dot program: apt-get install graphviz (or brew install "
            "graphviz, conda install graphviz)"
        )
    for fmt in formats:
        target = out.with_name(f"{out.name}.{fmt}")
        result = subprocess.run(
            [exe, f"-T{fmt}", str(dot_file), "-o", str(target)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise EmberError(
                f"Graphviz could not render {dot_file} to {fmt}: "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no message'}"
            )
        written.append(target)
    return written


def graph(model: nn.Module, spec: DataSpec, out: str | Path) -> tuple[list[Path], int]:
    """Render the autograd graph to `out`.svg/.png/.dot and the module tree to `out`.modules.txt."""
    source, ops = autograd_dot(model, spec)
    out = Path(out)
    files = render(source, out)
    tree = out.with_name(out.name + ".modules.txt")
    write_atomic(tree, str(model) + "\n")
    return files + [tree], ops


def graph_command(overrides: list[str], config_file: str | None = None) -> int:
    """ember graph [--config FILE] [out=PATH] [overrides]: render the configured model's graph."""
    options, rest = parse_options("graph", overrides, {"out": None}, rest_ok=True)
    cfg = compose(rest, config_file)
    out = options["out"] or f"{cfg.model.name}-graph"
    check_output(f"{out}.dot", "the graph", "out=")  # out= names the files' stem: out.dot, out.svg, out.png
    spec = build_data(cfg.data).spec
    model = create_model(cfg.model.name, spec, **model_kwargs(cfg.model))
    with output_errors(f"{out}.dot", "the graph", "out="):
        files, ops = graph(model, spec, out)
    print(f"{cfg.model.name}: {ops} operations in one forward pass; wrote {', '.join(str(f) for f in files)}")
    return 0
