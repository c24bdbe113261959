"""What export, predict, bench and compress share: the run's model behind its normalization,
a held-out batch to check exports on, the optional libraries.
"""

import importlib
import io
import logging
import warnings
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError, EmberError


class ExportError(EmberError):
    """A model that cannot be exported to a format, or an export that failed its parity check."""


# -- optional libraries -------------------------------------------------------------------------
def require(module: str, what: str) -> Any:
    """Import onnx, onnxscript or onnxruntime, or say that the `export` extra installs them."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{what} needs the {module} package, which is not installed; pip install 'ember[export]'") from None


@contextmanager
def quiet():
    """Silence the exporters' deprecation notes and torchvision-missing log lines: ember prints
    what matters (the method used, the parity errors) itself."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "torch._subclasses", "torch._functorch", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        # torch.export prints the partial graph of a failed export straight to stderr.
        with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# -- the model as shipped -----------------------------------------------------------------------
class Normalized(nn.Module):
    """The trained model between the run's standardizations, so it takes raw inputs and returns
    targets in physical units.

    `(x - mean) / std` per input channel (dimension 1 of a batch), exactly what `build_data`
    applied to the training data, and `out * target_std + target_mean` per target channel where
    the targets were standardized (data.normalize_target); with no statistics, the identity.
    """

    def __init__(self, model: nn.Module, spec: DataSpec):
        super().__init__()
        self.model = model
        self.register_buffer("mean", _per_channel(spec.mean, 0.0, len(spec.input_shape)))
        self.register_buffer("std", _per_channel(spec.std, 1.0, len(spec.input_shape)))
        # Outputs keep the model's own shape: a scalar target's (N, 1) stays (N, 1).
        self.scaled = spec.task == "regression" and spec.target_mean is not None
        self.register_buffer("target_mean", _per_channel(spec.target_mean, 0.0, len(spec.target_shape)))
        self.register_buffer("target_std", _per_channel(spec.target_std, 1.0, len(spec.target_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model((x - self.mean) / self.std)
        if self.scaled:
            out = out * self.target_std + self.target_mean
        return out


def _per_channel(values: list[float] | None, default: float, sample_ndim: int) -> torch.Tensor:
    """Per-channel statistics shaped to broadcast over one sample (channels first); a sample of
    scalars or a flat vector broadcasts over its last dimension."""
    t = torch.tensor(values if values is not None else [default], dtype=torch.float32)
    return t.reshape((-1,) + (1,) * (max(1, sample_ndim) - 1))


def raw_inputs(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Standardized inputs back in the units of the data files (what an exported model takes)."""
    if spec.mean is None or spec.std is None:
        return x
    shape = (-1,) + (1,) * (x.ndim - 2)
    std, mean = (torch.tensor(v, dtype=x.dtype, device=x.device).reshape(shape) for v in (spec.std, spec.mean))
    return x * std + mean


def physical_targets(y: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Standardized regression targets (or outputs) of a batch back in the data's units
    (data.normalize_target): what `Normalized` does inside an exported graph."""
    if spec.target_mean is None or spec.target_std is None:
        return y
    shape = (1, -1) + (1,) * (y.ndim - 2) if y.ndim > 1 else (-1,)
    std, mean = (torch.tensor(v, dtype=y.dtype, device=y.device).reshape(shape) for v in (spec.target_std, spec.target_mean))
    return y * std + mean


def load_model(run_dir: str | Path) -> tuple[nn.Module, Any, DataSpec, dict]:
    """A run's best model (last, without validation) in eval mode, compressed as its summary says;
    its config, spec and summary."""
    from ember.evaluation import load_run
    from ember.run import RunDir

    run = RunDir.open(run_dir)
    if not (run.path / "spec.json").is_file():
        raise ConfigError(f"{run.path} has no spec.json; pass run= a directory written by ember train")
    # A run without validation has no best.pt: its model is the last one.
    which = "best" if (run.checkpoints / "best.pt").is_file() or not (run.checkpoints / "last.pt").is_file() else "last"
    model, cfg, spec = load_run(run.path, which)
    model.eval()
    summary = run.summary()
    compression = summary.get("compression") or {}
    if compression.get("method") == "dynamic_int8":
        from ember.export.compress import quantize_dynamic_int8

        model = quantize_dynamic_int8(model)
    return model, cfg, spec, summary


def held_out_batch(cfg: Any, spec: DataSpec, n: int = 64) -> tuple[torch.Tensor, str]:
    """Up to n raw inputs of the run's test split (else val, else train), and where they came from.

    When the data cannot be built any more (files moved, a library missing), random inputs in
    the data's units stand in, and the description says so.
    """
    from ember.data import TensorData, build_data

    try:
        with quiet():
            splits = build_data(cfg.data)
        for name in ("test", "val", "train"):
            data = getattr(splits, name)
            if data is not None and len(data) > 0:
                break
        k = min(n, len(data))
        x = data.x[:k] if isinstance(data, TensorData) else torch.stack([torch.as_tensor(data[i][0]) for i in range(k)])
        return raw_inputs(x.float().cpu(), spec), f"{k} samples of the {name} split"
    except EmberError as e:
        g = torch.Generator().manual_seed(0)
        x = torch.randn((n, *spec.input_shape), generator=g)
        return raw_inputs(x, spec), f"{n} random inputs (the run's data is not available: {e})"


def output_name(spec: DataSpec) -> str:
    return "logits" if spec.task == "classification" else "prediction"
