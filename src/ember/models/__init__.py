"""Models: a registry of builders sized from the DataSpec.

To add a model, write a function in a module of this package:

    @register_model("mymodel", example="image")
    def mymodel(spec: DataSpec, *, width: int = 64) -> nn.Module: ...

Its keyword-only arguments become `model.width` config keys with their types and defaults.
`example` names the data the model is meant for (a key of EXAMPLE_SPECS): `ember models` counts
parameters on it and the conformance test trains the model on a small version of it.
A model with a `loss(batch) -> (loss, logs)` method is trained through it; one with
`describe() -> str` has that line printed at the end of training; one with
`sample(n, generator) -> Tensor` can be sampled with `ember sample`.
"""

import dataclasses
import os
import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError, first_line
from ember.models.params import real_numel
from ember.models.residual import Residual, wants_residual
from ember.models.transfer import apply_transfer
from ember.registry import Registry

MODELS = Registry("model")
list_models = MODELS.names

# The data each family is meant for, at the size `ember models` reports parameters for.
EXAMPLE_SPECS = {
    "signal": DataSpec(input_shape=(1, 40), task="classification", num_classes=10),  # MNIST-1D
    "scalar": DataSpec(input_shape=(1,), task="regression", target_shape=(1,)),  # the tutorials' toys
    "digits": DataSpec(input_shape=(1, 28, 28), task="classification", num_classes=10),  # MNIST
    "image": DataSpec(input_shape=(3, 32, 32), task="classification", num_classes=10),  # CIFAR-10
    "field1d": DataSpec(input_shape=(1, 1024), task="regression", target_shape=(1, 1024)),  # Burgers
    "field2d": DataSpec(input_shape=(4, 32, 64), task="regression", target_shape=(4, 32, 64)),  # a weather state
}
EXAMPLES: dict[str, str] = {}

# Keys every model understands (ember.config.schema.ModelCommon), applied after the builder runs.
COMMON_KEYS = ("init", "freeze", "residual")


def register_model(name: str, *, example: str = "signal", **base_defaults: Any) -> Callable[[Callable], Callable]:
    """Register a builder as `name`; `example` is a key of EXAMPLE_SPECS."""
    if example not in EXAMPLE_SPECS:
        raise ValueError(f"model {name!r}: example must be one of {', '.join(EXAMPLE_SPECS)}")
    EXAMPLES[name] = example
    return MODELS.register(name, **base_defaults)


def example_spec(name: str) -> DataSpec:
    """The DataSpec of the data model `name` is meant for."""
    MODELS.get(name)  # unknown names fail with the list of known ones
    return EXAMPLE_SPECS[EXAMPLES.get(name, "signal")]


def create_model(name: str, spec: DataSpec, **kwargs: Any) -> nn.Module:
    """Build registered model `name` for data described by `spec`; unknown arguments are errors.

    Besides the builder's own arguments it takes the keys every model has: `init` (a checkpoint,
    weights file or run directory to load shape-matching weights from) and `freeze` (parameter
    name prefixes to freeze), see ember.models.transfer; `residual` (auto, true, false: predict
    the correction to the input), see ember.models.residual.
    """
    common = {k: kwargs.pop(k) for k in COMMON_KEYS if k in kwargs}
    MODELS.check_kwargs(name, kwargs)
    model = _build(name, spec, kwargs)
    if common.get("init") or common.get("freeze"):
        apply_transfer(model, init=common.get("init"), freeze=common.get("freeze") or ())
    if wants_residual(common.get("residual", "auto"), spec, name, generative=brings_own_loss(model)):
        model = Residual(model, spec, zero_init=not common.get("init"))  # weights given by init= are the start
    return model


def _build(name: str, spec: DataSpec, kwargs: dict[str, Any]) -> nn.Module:
    """The builder's model, refused in one line (ConfigError) where its weights cannot fit in this
    machine's memory: counted first on the meta device (no memory), else caught at allocation."""
    builder = MODELS.get(name)
    n = _meta_size(builder, spec, kwargs)
    memory = _physical_memory()
    if n is not None and memory and n > memory:
        raise ConfigError(
            _too_large(
                name,
                spec,
                kwargs,
                f"its weights would take {n / 1e9:,.1f} GB, more than this machine's {memory / 1e9:.0f} GB",
            )
        )
    try:
        return builder(spec, **kwargs)
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise ConfigError(_too_large(name, spec, kwargs, f"allocating its weights failed ({first_line(e)})")) from None


def _meta_size(builder: Callable, spec: DataSpec, kwargs: dict[str, Any]) -> int | None:
    """Bytes of the model's parameters and buffers, built on the meta device (shapes, no data);
    None where a builder cannot be built there. The random generators are left as they were."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = builder(spec, **kwargs)
        return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    except Exception:  # noqa: BLE001 - the real build below reports its own errors
        return None
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _too_large(name: str, spec: DataSpec, kwargs: dict[str, Any], why: str) -> str:
    sizes = [f"model.{k}={v}" for k, v in kwargs.items() if isinstance(v, int) and not isinstance(v, bool) and v > 1]
    reduce = f"reduce {', '.join(sizes)} or" if sizes else "choose a smaller model or reduce"
    return (
        f"model={name} is too large for data of input shape {tuple(spec.input_shape)}: {why}; {reduce} the data's size"
    )


def brings_own_loss(model: nn.Module) -> bool:
    """Whether `model` is trained through its own `loss(batch) -> (loss, logs)` (generative
    models): the trainer then builds no loss function and the model has no target to predict."""
    return callable(getattr(model, "loss", None))


def model_kwargs(model_cfg: Any) -> dict[str, Any]:
    """The arguments `create_model` takes beside the name, from a `model` config group: a
    DictConfig node or the typed config's dataclass."""
    values = dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else dict(model_cfg)
    return {k: v for k, v in values.items() if k != "name"}


def builder_kwargs(model_cfg: Any) -> dict[str, Any]:
    """The arguments that rebuild a trained model's architecture from a `model` config node: the
    builder's own and `residual`, without init and freeze (the weights come from a checkpoint)."""
    return {k: v for k, v in model_kwargs(model_cfg).items() if k not in ("init", "freeze")}


def count_parameters(model: nn.Module) -> int:
    """The trainable parameters of `model`, counted as real numbers (`real_numel`)."""
    return sum(real_numel(p) for p in model.parameters() if p.requires_grad)


# Importing the family modules registers them; they import the registry above, so they come last.
from ember.models import (  # noqa: E402, F401
    cnn1d,
    diffusion,
    fno,
    mlp,
    resnet,
    sequence,
    tutorial,
    unet,
    vae,
    vit,
)

__all__ = [
    "EXAMPLE_SPECS",
    "MODELS",
    "builder_kwargs",
    "model_kwargs",
    "count_parameters",
    "real_numel",
    "create_model",
    "example_spec",
    "list_models",
    "register_model",
]
