"""Transfer learning: start from another run's weights (`model.init`), freeze parts (`model.freeze`).

Weights are matched by name and shape, so a model trained on 10 classes initializes one for 4:
every tensor that fits is loaded, and the head, whose shape differs, keeps its fresh
initialization (a new head). The report says exactly what was loaded and what was not.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ember.errors import CheckpointError, ConfigError
from ember.files import load_checkpoint
from ember.models.params import real_numel

# Prefixes that wrappers add to parameter names: DDP's `module.` and torch.compile's `_orig_mod.`.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class InitReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, source shape, model shape)
    missing: list[str] = field(default_factory=list)  # in the model, not in the source
    unexpected: list[str] = field(default_factory=list)  # in the source, not in the model

    def describe(self) -> str:
        text = (
            f"model.init: loaded {len(self.loaded)} of "
            f"{len(self.loaded) + len(self.shape_mismatch) + len(self.missing)} tensors from {self.source}"
        )
        if self.shape_mismatch:
            shapes = ", ".join(f"{k} {tuple(s)} -> {tuple(m)}" for k, s, m in self.shape_mismatch)
            text += f"; skipped (shape differs, freshly initialized: a new head): {shapes}"
        if self.missing:
            text += f"; not in the source (freshly initialized): {_short(self.missing)}"
        if self.unexpected:
            text += f"; unused source tensors: {_short(self.unexpected)}"
        return text


def _short(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_state(source: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a run directory (its best checkpoint), a .pt checkpoint or a .safetensors file."""
    path = Path(source)
    if path.is_dir():
        best, weights = path / "checkpoints" / "best.pt", path / "model.safetensors"
        if best.is_file():
            path = best
        elif weights.is_file():
            path = weights
        else:
            raise CheckpointError(
                f"model.init={str(source)!r} is a directory without checkpoints/best.pt or model.safetensors; "
                "pass a run directory or a weights file"
            )
    elif not path.is_file():
        raise CheckpointError(
            f"model.init={str(source)!r} does not exist; pass a run directory, a .pt checkpoint or a .safetensors file"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"model.init: {str(path)!r} cannot be read as safetensors ({type(e).__name__})"
            ) from None
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # an ember (or Lightning-like) checkpoint
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"model.init: {str(path)!r} holds no state dict (a mapping of names to tensors)")
    return obj


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in WRAPPER_PREFIXES:
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def apply_init(model: nn.Module, source: str | Path) -> InitReport:
    """Load every tensor of `source` whose name and shape match the model; report the rest."""
    src = _strip_wrappers(load_state(source))
    own = model.state_dict()
    report = InitReport(source=str(source))
    matched = {}
    for key, mine in own.items():  # in the model's order, whatever order the file has
        if key not in src:
            report.missing.append(key)
        elif tuple(src[key].shape) != tuple(mine.shape):
            report.shape_mismatch.append((key, tuple(src[key].shape), tuple(mine.shape)))
        else:
            matched[key] = src[key]
            report.loaded.append(key)
    report.unexpected = [k for k in src if k not in own]
    if not matched:
        raise CheckpointError(
            f"model.init={str(source)!r}: none of its {len(src)} tensors fit this model (names or shapes differ "
            "everywhere); initialize from a run of the same model family"
        )
    model.load_state_dict(matched, strict=False)
    return report


def apply_freeze(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Stop gradients for parameters named `prefix` or `prefix.*`; returns the frozen names."""
    frozen: list[str] = []
    names = dict(model.named_parameters())
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hits:
            top = sorted({n.split(".")[0] for n in names})
            raise ConfigError(
                f"model.freeze: no parameter starts with {prefix!r}; the model's top-level parts are: {', '.join(top)}"
            )
        for n in hits:
            names[n].requires_grad_(False)
        frozen += hits
    if frozen and len(set(frozen)) == len(names):
        raise ConfigError("model.freeze freezes every parameter, so nothing would train; freeze fewer prefixes")
    return frozen


def apply_transfer(
    model: nn.Module, init: str | None = None, freeze: Iterable[str] = (), log: Callable[[str], None] = print
) -> InitReport | None:
    """Apply `model.init` then `model.freeze` and say what happened in one line each."""
    report = None
    if init:
        report = apply_init(model, init)
        log(report.describe())
    freeze = list(freeze or ())
    if freeze:
        frozen = apply_freeze(model, freeze)
        count = sum(real_numel(p) for n, p in model.named_parameters() if n in set(frozen))
        # BatchNorm running statistics of frozen parts still update in train mode; only weights are frozen.
        log(f"model.freeze: froze {len(frozen)} tensors ({count:,} parameters) under {', '.join(freeze)}")
    return report
