"""The U-Net: any grid (odd sides, thin bands), upsampling by resize and convolution (no
transposed convolution, no checkerboard), a depth that follows the grid."""

import pytest
import torch

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import create_model
from ember.models.unet import auto_depth


def field_spec(h: int, w: int, channels: int = 2) -> DataSpec:
    return DataSpec(input_shape=(channels, h, w), task="regression", target_shape=(channels, h, w))


@pytest.mark.parametrize("size", [(18, 432), (17, 33), (5, 7)])
def test_odd_grids_come_back_in_their_own_shape(size):
    model = create_model("unet", field_spec(*size), width=4, residual="false").eval()
    with torch.no_grad():
        out = model(torch.randn(3, 2, *size))
    assert out.shape == (3, 2, *size) and torch.isfinite(out).all()


def test_no_transposed_convolution():
    model = create_model("unet", field_spec(32, 64), width=4, depth=3, residual="false")
    kinds = {type(m).__name__ for m in model.modules()}
    assert not {"ConvTranspose2d", "ConvTranspose1d"} & kinds and "Conv2d" in kinds


def test_depth_follows_the_grid_by_default():
    assert [auto_depth(s) for s in [(18, 432), (16, 32), (64, 64), (181, 360), (5, 7)]] == [2, 2, 4, 4, 1]
    model = create_model("unet", field_spec(18, 432), residual="false")
    assert len(model.downs) == 2 and model.pads == [0, 0, 0, 2]  # 18 -> 20 rows, not 32
    assert len(create_model("unet", field_spec(18, 432), depth=3, residual="false").downs) == 3
    with pytest.raises(ConfigError, match="depth"):
        create_model("unet", field_spec(18, 432), depth=0)


def test_upsampling_leaves_no_checkerboard():
    """A constant coarse feature map comes back constant after the resize: a stride-2 transposed
    convolution (four kernel weights per 2x2 block) would give a 2-periodic pattern instead."""
    model = create_model("unet", field_spec(16, 16), width=4, depth=2, residual="false")
    up = model.ups[0]
    x = torch.ones(1, up.reduce.in_channels, 4, 4)
    skip = torch.zeros(1, up.reduce.out_channels, 8, 8)
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(
            up.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
    assert torch.allclose(resized, resized[..., :1, :1].expand_as(resized), atol=1e-6)


def test_a_training_step_runs_and_learns_on_a_thin_band():
    torch.manual_seed(0)
    spec = field_spec(18, 40, channels=1)
    model = create_model("unet", spec, width=4, residual="false")
    x = torch.randn(8, 1, 18, 40)
    y = torch.roll(x, 1, dims=-1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
