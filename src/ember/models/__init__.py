"""Models: a registry of builders sized from the DataSpec.

To add a model, write a function in a module of this package:

    @register_model("mymodel")
    def mymodel(spec: DataSpec, *, width: int = 64) -> nn.Module: ...

Its keyword-only arguments become `model.width` config keys with their types and defaults.
A model with a `loss(batch) -> (loss, logs)` method is trained through it; one with
`describe() -> str` has that line printed at the end of training.
"""

from typing import Any

from torch import nn

from ember.data.spec import DataSpec
from ember.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register
list_models = MODELS.names


def create_model(name: str, spec: DataSpec, **kwargs: Any) -> nn.Module:
    """Build registered model `name` for data described by `spec`; unknown arguments are errors."""
    MODELS.check_kwargs(name, kwargs)
    return MODELS.get(name)(spec, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Importing the family modules registers them.
from ember.models import cnn1d, mlp  # noqa: E402,F401

__all__ = ["MODELS", "count_parameters", "create_model", "list_models", "register_model"]
