"""Batch augmentations: shapes, randomness per sample, and targets that move with their inputs."""

import pytest
import torch

from ember import load_data
from ember.data.augment import build_augment, crop, flip, noise, roll
from ember.errors import ConfigError


def test_flip_flips_about_half_and_fields_with_their_input():
    torch.manual_seed(0)
    x = torch.arange(1000 * 5, dtype=torch.float32).view(1000, 1, 5)
    out, y = flip(x, x.clone())
    flipped = (out == x.flip(-1)).all(-1).squeeze(1)
    assert 400 < flipped.sum() < 600 and ((out == x).all(-1).squeeze(1) | flipped).all()
    assert torch.equal(out, y)  # a target field on the same grid flips with it
    labels = torch.arange(1000)
    assert torch.equal(flip(x, labels)[1], labels)  # class labels are left alone


@pytest.mark.parametrize("shape", [(64, 2, 12), (64, 3, 6, 7)])
def test_crop_cuts_a_window_of_the_padded_input(shape):
    torch.manual_seed(0)
    x = torch.randn(shape) + 10  # no zeros but the padding's
    out, y = crop(x, x.clone(), padding=2)
    assert out.shape == x.shape and torch.equal(out, y)
    spatial = len(shape) - 2
    padded = torch.nn.functional.pad(x, (2,) * (2 * spatial))
    for n in range(8):
        windows = [
            padded[n, :, i : i + shape[2]] if spatial == 1 else padded[n, :, i : i + shape[2], j : j + shape[3]]
            for i in range(5)
            for j in range(5 if spatial == 2 else 1)
        ]
        assert any(torch.equal(out[n], w) for w in windows)
    assert (out == 0).any()  # some samples were shifted into the padding
    with pytest.raises(ConfigError, match="data.augment=crop needs"):
        crop(torch.randn(4, 3), torch.zeros(4))


def test_roll_and_noise():
    torch.manual_seed(0)
    x = torch.arange(40, dtype=torch.float32).repeat(32, 1, 1)
    out, y = roll(x, x.clone(), max_shift=3)
    for n in range(32):
        assert any(torch.equal(out[n], x[n].roll(s, -1)) for s in range(-3, 4))
    assert torch.equal(out, y)
    z = torch.zeros(10000, 4)
    assert abs(noise(z, None, std=0.2)[0].std().item() - 0.2) < 0.01


def test_augmentations_are_configured_by_data_keys(tmp_path):
    splits = load_data("spirals", num_samples=60, augment=["noise"], noise_std=0.5)
    x = torch.zeros(4, 2)
    assert splits.augment.names == ("noise",) and splits.augment(x, torch.zeros(4))[0].abs().sum() > 0
    assert load_data("spirals", num_samples=60).augment is None
    with pytest.raises(
        ConfigError, match="data.augment has 'blur', which is not an augmentation; choose from: flip, crop, noise, roll"
    ):
        build_augment(["blur"])
