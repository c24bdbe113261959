"""Masks in every exported graph (contract C1): NaN inputs become the channel mean (0 once
standardized), the run's masked target points come out NaN, in each format's own runtime."""

import pytest
import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.deploy.common import Deployed
from ember.deploy.export import export_model, load_artifact

GRID = (4, 5)
MASK = [0, 1, 7, 19]  # flat indices into one (1, 4, 5) sample: "land"


def _spec(**extra):
    return DataSpec(
        input_shape=(2, *GRID),
        task="regression",
        target_shape=(1, *GRID),
        mean=[280.0, 5.0],
        std=[10.0, 2.0],
        target_mean=[281.0],
        target_std=[9.0],
        mask=MASK,
        input_mask=MASK,
        **extra,
    )


def _model():
    torch.manual_seed(0)
    return nn.Conv2d(2, 1, 3, padding=1)


def _raw(n=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, *GRID, generator=g) * torch.tensor([10.0, 2.0]).reshape(2, 1, 1) + torch.tensor(
        [280.0, 5.0]
    ).reshape(2, 1, 1)
    x.reshape(n, -1)[:, MASK] = float("nan")  # land in the first channel, as a real file holds it
    return x


def test_nan_inputs_are_the_standardized_mean_and_masked_outputs_nan():
    spec, model = _spec(), _model().eval()
    x = _raw()
    with torch.no_grad():
        got = Deployed(model, spec)(x)
        filled = torch.where(torch.isnan(x), torch.tensor([280.0, 5.0]).reshape(2, 1, 1), x)
        want = (
            model((filled - torch.tensor([280.0, 5.0]).reshape(2, 1, 1)) / torch.tensor([10.0, 2.0]).reshape(2, 1, 1))
            * 9
            + 281
        )
    flat = got.reshape(len(x), -1)
    assert torch.isnan(flat[:, MASK]).all() and torch.isfinite(flat[:, [i for i in range(20) if i not in MASK]]).all()
    keep = ~torch.isnan(got)
    torch.testing.assert_close(got[keep], want[keep])
    with torch.no_grad():  # data.fill_value: NaN inputs take that value instead of the mean
        other = Deployed(model, spec, fill_value=0.0)(x)
    assert not torch.allclose(other[keep], got[keep])


def test_without_masks_it_is_the_plain_normalized_model():
    from ember.scoring.units import Normalized

    spec = DataSpec(
        input_shape=(2, *GRID), task="regression", target_shape=(1, *GRID), mean=[280.0, 5.0], std=[10.0, 2.0]
    )
    model, x = _model().eval(), torch.randn(3, 2, *GRID)
    with torch.no_grad():
        torch.testing.assert_close(Deployed(model, spec)(x), Normalized(model, spec)(x))


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("torchscript", "m.ts"),
        ("exported", "m.pt2"),
        ("onnx", "m.onnx"),
        ("aoti", "m.aoti.pt2"),
        ("safetensors", "m.safetensors"),
    ],
)
def test_every_format_keeps_the_masks(tmp_path, fmt, name):
    spec = _spec()
    wrapper = Deployed(_model(), spec).eval()
    model_config = {"name": "unused"} if fmt != "safetensors" else None
    result = export_model(wrapper, fmt, tmp_path / name, _raw(4), spec=spec, model_config=model_config)
    assert result.max_abs_error <= 1e-4
    x = _raw(3)
    run = load_artifact(result.path, fmt) if fmt != "safetensors" else None
    if run is None:  # a model outside the registry: the weights go back into the wrapper
        return
    with torch.no_grad():
        got, want = run(x), wrapper(x)
    assert torch.isnan(got.reshape(3, -1)[:, MASK]).all()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, equal_nan=True)
