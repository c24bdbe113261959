"""Exported files read back, each through its own runtime: the TorchScript loader, ONNX Runtime,
torch.export's program (through ember's checked reader), an AOTInductor package, or a model
rebuilt from safetensors weights. `ember export` checks its artifact with these, and predict and
bench run them.
"""

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.deploy import aoti
from ember.deploy.common import Deployed, quiet, require
from ember.deploy.pt2 import load_program
from ember.errors import ConfigError
from ember.models import builder_kwargs, create_model

FILE_NAMES = {
    "torchscript": "model.ts",
    "onnx": "model.onnx",
    "exported": "model.pt2",
    "aoti": "model" + aoti.SUFFIX,
    "safetensors": "model.safetensors",
}


def load_artifact(
    path: str | Path, fmt: str | None = None, threads: int | None = None
) -> Callable[[torch.Tensor], Any]:
    """A function from a batch of raw inputs to the outputs of an exported file, in its runtime."""
    path = Path(path)
    fmt = fmt or format_of(path)
    if fmt == "torchscript":
        with quiet():
            module = torch.jit.load(str(path), map_location="cpu")
        return lambda x: module(x)
    if fmt == "exported":
        module = load_program(path).module()  # not torch.export.load, which runs code a crafted archive holds
        return lambda x: module(x)
    if fmt == "aoti":
        return aoti.load(path)
    if fmt == "onnx":
        ort = require("onnxruntime", "running an ONNX model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x):
            outs = session.run(None, {name: x.detach().cpu().float().numpy()})
            return [torch.from_numpy(o) for o in outs] if len(outs) > 1 else torch.from_numpy(outs[0])

        return run
    if fmt == "safetensors":
        module = load_safetensors(path)
        return lambda x: module(x)
    raise ConfigError(
        f"{path} is not an exported model; pass a .ts, .onnx, .pt2, "
        ".aoti.pt2 or .safetensors file written by ember export"
    )


def format_of(path: Path) -> str:
    if str(path).endswith(aoti.SUFFIX):  # before the plain .pt2 of torch.export programs
        return "aoti"
    by_suffix = {Path(name).suffix: fmt for fmt, name in FILE_NAMES.items() if fmt != "aoti"}
    fmt = by_suffix.get(Path(path).suffix)
    if fmt is None:
        meta = Path(str(path) + ".json")
        try:
            fmt = json.loads(meta.read_text()).get("format") if meta.is_file() else None
        except (ValueError, AttributeError):  # not JSON, or not an object: no format to read
            fmt = None
        if fmt in FILE_NAMES:
            return fmt
        raise ConfigError(f"cannot tell the format of {path}; exported files end in {', '.join(by_suffix)}")
    return fmt


def load_safetensors(path: str | Path) -> nn.Module:
    """The model of a safetensors export, rebuilt from the registry, taking raw inputs."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "ember_model" not in meta or "ember_spec" not in meta:
        raise ConfigError(
            f"{path} has no ember model description in its metadata; "
            "it was not written by ember export format=safetensors"
        )
    spec = DataSpec.from_dict(json.loads(meta["ember_spec"]))
    model_cfg = json.loads(meta["ember_model"])
    model = create_model(model_cfg["name"], spec, **builder_kwargs(model_cfg))
    model.load_state_dict(load_file(str(path)))
    wrapper = Deployed(model, spec)
    if "ember_fill" in meta:  # the run's data.fill_value (files written before it: the means)
        wrapper.fill.copy_(torch.tensor(json.loads(meta["ember_fill"])).reshape(wrapper.fill.shape))
    return wrapper.eval()


def _run_torchscript(path, wrapper, model_config):
    return load_artifact(path, "torchscript")


def _run_exported(path, wrapper, model_config):
    return load_artifact(path, "exported")


def _run_onnx(path, wrapper, model_config):
    return load_artifact(path, "onnx")


def _run_safetensors(path, wrapper, model_config):
    if model_config is not None:
        return load_artifact(path, "safetensors")
    # A model outside the registry: its own class, with the weights read back from the file.
    from safetensors.torch import load_file

    clone = copy.deepcopy(wrapper)
    clone.model.load_state_dict(load_file(str(path)))
    return lambda x: clone(x)


def _run_aoti(path, wrapper, model_config):
    return load_artifact(path, "aoti")


RUNNERS = {
    "torchscript": _run_torchscript,
    "onnx": _run_onnx,
    "exported": _run_exported,
    "aoti": _run_aoti,
    "safetensors": _run_safetensors,
}
