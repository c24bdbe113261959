"""The Fourier Neural Operator as the paper defines it: any resolution, domain padding, bad modes."""

import math

import pytest
import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import create_model
from ember.models.fno import SpectralConv, fft_size
from ember.models.layers import PointwiseConv


def field(*size, channels=1):
    return DataSpec(input_shape=(channels, *size), task="regression", target_shape=(1, *size))


def test_the_fno_is_the_papers_lift_fourier_layers_project_with_no_normalization():
    model = create_model("fno", field(64), modes=8, width=16, depth=4)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) for m in model.modules())
    assert len(model.spectral) == len(model.pointwise) == 4 and isinstance(model.act, nn.GELU)
    assert model.lift.weight.shape[1] == 2  # the field and its grid coordinate


@pytest.mark.parametrize("size", [(33,), (17, 21)])
def test_the_pointwise_layer_is_a_1x1_convolution_with_its_parameters_and_initialization(size):
    """The batched matrix product that replaces oneDNN's slow 1x1 convolution: the same outputs
    and gradients, the same parameter names (a convolution's state dict loads) and, from the same
    seed, the same initial weights."""
    conv = (nn.Conv1d if len(size) == 1 else nn.Conv2d)(3, 5, 1).double()
    torch.manual_seed(0)
    fresh = PointwiseConv(3, 5, len(size))
    torch.manual_seed(0)
    fresh_conv = (nn.Conv1d if len(size) == 1 else nn.Conv2d)(3, 5, 1)
    assert torch.equal(fresh.weight, fresh_conv.weight) and torch.equal(fresh.bias, fresh_conv.bias)
    layer = PointwiseConv(3, 5, len(size)).double()
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    out, expected = layer(x), conv(x)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), (x, layer.weight))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, conv.weight))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size, modes", [((32,), [8]), ((16, 20), [5, 6])])
def test_the_spectral_layer_multiplies_the_lowest_modes_by_its_complex_weights(size, modes):
    """Against torch's complex arithmetic: the layer keeps its weights as (real, imaginary) pairs
    and mixes the modes with one real matmul."""
    layer = SpectralConv(3, 4, modes)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    layer = layer.double()
    weights = torch.view_as_complex(layer.weight)  # (blocks, in, out, *modes)
    if len(size) == 1:
        x_ft = torch.fft.rfft(x)
        out = torch.zeros(2, 4, size[0] // 2 + 1, dtype=torch.complex128)
        out[..., : modes[0]] = torch.einsum("bix,iox->box", x_ft[..., : modes[0]], weights[0])
        expected = torch.fft.irfft(out, n=size[0])
    else:
        (m1, m2), h = modes, size[0]
        x_ft = torch.fft.rfft2(x)
        out = torch.zeros(2, 4, h, size[1] // 2 + 1, dtype=torch.complex128)
        out[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :m1, :m2], weights[0])
        out[:, :, h - m1 :, :m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, h - m1 :, :m2], weights[1])
        expected = torch.fft.irfft2(out, s=size)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("size, modes", [((32,), 8), ((16, 20), 6)])
def test_a_trained_fno_runs_on_finer_grids_of_the_same_domain(size, modes):
    model = create_model("fno", field(*size), modes=modes, width=8, depth=2).eval()
    fine = tuple(4 * s for s in size)
    with torch.no_grad():
        assert model(torch.randn(2, 1, *fine)).shape == (2, 1, *fine)
    # A band-limited input gives the same output at the shared points of both grids.
    if len(size) == 1:
        x = torch.arange(fine[0]) / fine[0]
        u = torch.sin(2 * math.pi * x).reshape(1, 1, -1)
        with torch.no_grad():
            # The coordinate channel is linspace(0, 1, s), as in the paper, so the grids agree to O(1/s).
            torch.testing.assert_close(model(u)[..., ::4], model(u[..., ::4]), atol=0.05, rtol=0.05)


def test_domain_padding_keeps_the_output_on_the_input_grid():
    model = create_model("fno", field(30, 24), modes=6, width=8, depth=2, padding=0.25).eval()
    plain = create_model("fno", field(30, 24), modes=6, width=8, depth=2).eval()
    plain.load_state_dict(model.state_dict())  # padding adds no weights
    x = torch.randn(2, 1, 30, 24)
    with torch.no_grad():
        padded, periodic = model(x), plain(x)
    assert padded.shape == periodic.shape == (2, 1, 30, 24)
    assert not torch.allclose(padded, periodic)  # the padding changed what the FFT sees
    with pytest.raises(ConfigError, match="model.padding=2"):
        create_model("fno", field(30), padding=2)


def test_domain_padding_rounds_the_grid_up_to_a_fast_fft_size():
    # Darcy at s=85 with 1/10 padding: 94 = 2 x 47 becomes 96 = 2^5 x 3.
    assert [fft_size(n) for n in (94, 96, 97, 1024, 1)] == [96, 96, 98, 1024, 1]
    model = create_model("fno", field(85, 85), modes=4, width=4, depth=1, padding=0.1)
    seen = []
    model.spectral[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[-2:]))
    with torch.no_grad():
        assert model(torch.randn(1, 1, 85, 85)).shape == (1, 1, 85, 85)
    assert seen == [(96, 96)]


def test_a_grid_too_small_for_the_modes_is_a_config_error():
    with pytest.raises(
        ConfigError,
        match=(
            r"model.modes=16 needs a grid of at least 32 points per axis, but the data's grid is \(20,\); "
            r"lower model.modes to 11"
        ),
    ):
        create_model("fno", field(20), modes=16)
    with pytest.raises(ConfigError, match=r"lower model.modes to 8"):
        create_model("fno", field(16, 40), modes=12)


def test_the_papers_spectral_initialization_is_uniform_in_0_to_1_over_in_times_out_and_others_are_errors():
    model = create_model("fno", field(32, 32), modes=4, width=8, spectral_init="paper")
    weight = model.spectral[0].weight
    assert weight.min() >= 0 and weight.max() <= 1 / 64 and weight.max() > 0.5 / 64
    assert create_model("fno", field(32, 32), modes=4, width=8).spectral[0].weight.min() < 0  # normal
    with pytest.raises(
        ConfigError, match="model.spectral_init='xavier' is not a valid choice; choose one of: normal, paper"
    ):
        create_model("fno", field(32, 32), modes=4, width=8, spectral_init="xavier")
