"""model.residual: the network learns the correction to its input, starting at the identity."""

import pytest
import torch

from ember.config.schema import ModelCommon
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import MODELS, create_model, list_models
from ember.models.residual import Residual

# Inputs and targets the same variables on the same grid (a bias correction), with different
# statistics: the identity must be moved from the inputs' standardized units to the targets'.
FIELDS = {
    "field2d": DataSpec(
        input_shape=(2, 16, 32),
        task="regression",
        target_shape=(2, 16, 32),
        mean=[279.0, 3.0],
        std=[9.0, 2.0],
        target_mean=[280.0, 2.0],
        target_std=[10.0, 1.0],
        identity_channels=[0, 1],
    ),
    "field1d": DataSpec(
        input_shape=(2, 64),
        task="regression",
        target_shape=(2, 64),
        mean=[1.0, 0.0],
        std=[2.0, 1.0],
        target_mean=[0.5, 0.0],
        target_std=[1.0, 3.0],
        identity_channels=[1, 0],
    ),
}


def _builds(name, spec):
    try:
        return create_model(name, spec)
    except (ConfigError, TypeError, ValueError, RuntimeError):
        return None  # a model meant for other data (images only, sequences of another shape)


@pytest.mark.parametrize("name", list_models())
def test_every_model_that_builds_for_a_field_starts_at_the_identity(name):
    built = {kind: _builds(name, spec) for kind, spec in FIELDS.items()}
    built = {k: m for k, m in built.items() if m is not None and not callable(getattr(m, "loss", None))}
    if not built:
        pytest.skip(f"{name} builds for no same-grid regression")
    for kind, model in built.items():
        spec = FIELDS[kind]
        assert isinstance(model, Residual), f"{name} on {kind}: model.residual=auto did not wrap"
        model.eval()
        x = torch.randn(3, *spec.input_shape)
        raw = x * torch.tensor(spec.std).reshape(1, -1, *[1] * (x.ndim - 2)) + torch.tensor(spec.mean).reshape(
            1, -1, *[1] * (x.ndim - 2)
        )
        # The uncorrected field in the targets' standardized units.
        idx = spec.identity_channels
        want = (raw[:, idx] - torch.tensor(spec.target_mean).reshape(1, -1, *[1] * (x.ndim - 2))) / torch.tensor(
            spec.target_std
        ).reshape(1, -1, *[1] * (x.ndim - 2))
        with torch.no_grad():
            assert torch.allclose(model(x), want, atol=1e-5), f"{name} on {kind} does not start at the identity"
        # And it learns: one step moves it off the identity.
        model.train()
        loss = (model(x) - torch.randn_like(want)).pow(2).mean()
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), (
            f"{name}: no gradient reaches the correction"
        )


def test_residual_true_on_other_variables_names_both():
    spec = DataSpec(
        input_shape=(2, 4, 8),
        task="regression",
        target_shape=(1, 4, 8),
        input_names=["t2m", "z500"],
        target_names=["precip"],
    )
    assert not isinstance(create_model("unet", spec), Residual)  # auto: off
    with pytest.raises(ConfigError, match=r"inputs are t2m, z500 on \(4, 8\) and the targets precip on \(4, 8\)"):
        create_model("unet", spec, residual="true")
    with pytest.raises(ConfigError, match="model.residual='maybe'"):
        create_model("unet", FIELDS["field2d"], residual="maybe")
    assert not isinstance(create_model("unet", FIELDS["field2d"], residual="false"), Residual)
    assert MODELS.config_schema("unet", base=ModelCommon).__dataclass_fields__["residual"].default == "auto"
