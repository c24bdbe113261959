"""What export, predict, bench and compress share: the run's model behind its normalization,
a held-out batch to check exports on, the optional libraries.
"""

import importlib
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.data import TensorData, build_data
from ember.data.spec import DataSpec
from ember.errors import ConfigError, EmberError
from ember.files import pid_alive
from ember.rundir.directory import RunDir
from ember.rundir.loading import load_run
from ember.scoring.units import Normalized, raw_inputs


class ExportError(EmberError):
    """A model that cannot be exported to a format, or an export that failed its parity check."""


_WORK = re.compile(r"^\..+\.(\d+)\.[^.]+\.export$")


def work_dir(path: Path) -> Path:
    """A fresh folder beside `path` for an export to write and check its files in, named after
    this process (`.<name>.<pid>.<random>.export`). One left by an export that was killed
    (SIGKILL, a node lost) is removed here by the next export into that folder: its pid is gone."""
    for p in path.parent.glob(".*.export"):
        m = _WORK.match(p.name)
        if (
            m
            and p.is_dir()
            and not p.is_symlink()
            and int(m.group(1)) != os.getpid()
            and not pid_alive(int(m.group(1)))
        ):
            shutil.rmtree(p, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".export", dir=path.parent))


# -- optional libraries -------------------------------------------------------------------------
def require(module: str, what: str) -> Any:
    """Import onnx, onnxscript or onnxruntime, or say that the `export` extra installs them."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(
            f"{what} needs the {module} package, which is not installed; pip install 'ember[export]'"
        ) from None


@contextmanager
def quiet():
    """Silence the exporters' deprecation notes and torchvision-missing log lines: ember prints
    what matters (the method used, the parity errors) itself."""
    loggers = [
        logging.getLogger(n)
        for n in (
            "torch.onnx",
            "torch.export",
            "torch._export",
            "torch._dynamo",
            "torch.fx",
            "torch._subclasses",
            "torch._functorch",
            "onnxscript",
        )
    ]
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


def load_model(run_dir: str | Path) -> tuple[nn.Module, Any, DataSpec, dict]:
    """A run's best model (last, without validation) in eval mode, compressed as its summary says;
    its config, spec and summary."""
    run = RunDir.open(run_dir)
    if not (run.path / "spec.json").is_file():
        raise ConfigError(f"{run.path} has no spec.json; pass run= a directory written by ember train")
    # A run without validation has no best.pt: its model is the last one.
    which = "best" if (run.checkpoints / "best.pt").is_file() or not (run.checkpoints / "last.pt").is_file() else "last"
    model, cfg, spec = load_run(run.path, which)
    model.eval()
    summary = run.summary()
    compression = summary.get("compression") or {}
    if compression.get("method") == "dynamic_int8":  # the float weights, quantized again as compress did
        model = quantize_dynamic_int8(model)
    return model, cfg, spec, summary


class Deployed(Normalized):
    """What ember ships and predicts with: the model between the run's standardizations, with the
    run's masks (contract C1). A NaN input element becomes the run's fill value (data.fill_value)
    or else the channel mean, which is 0 once standardized, as in training; the target points the
    run masked (spec.mask: land in a sea-surface field) come out NaN. Without masks and NaN it
    is `Normalized` exactly. Plain tensor ops, so TorchScript, torch.export, ONNX and AOTInductor
    carry it into the graph."""

    def __init__(self, model: nn.Module, spec: DataSpec, fill_value: float | None = None):
        super().__init__(model, spec)
        fill = self.mean if fill_value is None else torch.full_like(self.mean, float(fill_value))
        self.register_buffer("fill", fill.clone())
        flat = torch.zeros(spec.out_features if spec.task == "regression" else 0, dtype=torch.bool)
        if spec.task == "regression" and spec.mask:
            flat[torch.as_tensor(spec.mask, dtype=torch.long)] = True
        self.masked = bool(flat.any())
        self.register_buffer("mask", flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.fill, x)
        out = self.model((x - self.mean) / self.std)
        if self.scaled:
            out = out * self.target_std + self.target_mean
        if self.masked:
            out = out.reshape(out.shape[0], -1).masked_fill(self.mask, float("nan")).reshape(out.shape)
        return out


def deployed(model: nn.Module, spec: DataSpec, data: Any = None) -> Deployed:
    """`Deployed` in eval mode, with the fill value of the run's `data` config (a dict or config)."""
    fill = data.get("fill_value") if data is not None else None
    return Deployed(model, spec, None if fill is None else float(fill)).eval()


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """nn.Linear weights as int8, activations quantized per batch at run time (CPU)."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear layer, "
            "which is what method=dynamic_int8 quantizes; use method=prune"
        )
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # pragma: no cover - removed from a future torch
        raise ConfigError(
            "this torch has no torch.ao.quantization.quantize_dynamic; use method=prune, or a torch that has it"
        ) from None
    with quiet():
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8).eval()


def held_out_batch(cfg: Any, spec: DataSpec, n: int = 64) -> tuple[torch.Tensor, str]:
    """Up to n raw inputs of the run's test split (else val, else train), and where they came from.

    When the data cannot be built any more (files moved, a library missing), random inputs in
    the data's units stand in, and the description says so.
    """
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
