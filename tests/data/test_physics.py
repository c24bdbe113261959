"""Simulated physics: two-scale Lorenz '96 and viscous Burgers, checked against their equations."""

import math

import pytest
import torch
from data_support import fit

from ember import load_data
from ember.data.physics import l96_tendencies, random_field, solve_burgers
from ember.errors import ConfigError


def test_lorenz96_targets_are_the_subgrid_coupling_of_the_fast_variables():
    x = torch.randn(3, 8, dtype=torch.float64)
    y = torch.randn(3, 8 * 4, dtype=torch.float64)
    dx, _, u = l96_tendencies(x, y, forcing=10.0)
    assert torch.allclose(u, -(1.0 * 10 / 10) * y.view(3, 8, 4).sum(-1))
    # Slow equation by hand for k = 0 (periodic neighbours k-1 = 7, k-2 = 6, k+1 = 1).
    expected = -x[:, 7] * (x[:, 6] - x[:, 1]) - x[:, 0] + 10.0 + u[:, 0]
    assert torch.allclose(dx[:, 0], expected)
    splits = load_data("lorenz96", num_samples=200, normalize=False)
    assert splits.spec.input_shape == (1, 8) and splits.spec.target_shape == (8,) and len(splits.test) == 50
    # On the attractor, the slow variables swing over a wide range and the coupling pulls against them.
    xs, us = splits.train.x[:, 0].flatten(), splits.train.y.flatten()
    assert xs.std() > 3 and torch.corrcoef(torch.stack([xs, us]))[0, 1] < -0.5
    with pytest.raises(ConfigError, match="data.slow >= 4"):
        load_data("lorenz96", slow=2)


def test_burgers_conserves_the_mean_and_decays_like_the_heat_equation_when_small():
    g = torch.Generator().manual_seed(0)
    u0 = random_field(8, 64, g)
    u1 = solve_burgers(u0, viscosity=0.1, final_time=1.0)
    assert torch.allclose(u1.mean(-1), u0.mean(-1), atol=1e-10)  # periodic Burgers conserves the mean
    assert (u1 - u1.mean(-1, keepdim=True)).abs().max() < (u0 - u0.mean(-1, keepdim=True)).abs().max()
    # A tiny sine wave barely feels the nonlinearity: its first mode decays as exp(-nu (2 pi)^2 t).
    x = torch.arange(64, dtype=torch.float64) / 64
    small = 1e-6 * torch.sin(2 * math.pi * x).unsqueeze(0)
    out = solve_burgers(small, viscosity=0.1, final_time=0.5)
    assert torch.allclose(out, small * math.exp(-0.1 * (2 * math.pi) ** 2 * 0.5), rtol=1e-6, atol=1e-14)
    splits = load_data("burgers", num_samples=50, resolution=32)
    assert splits.spec.input_shape == (1, 32) and splits.spec.target_shape == (1, 32)


@pytest.mark.parametrize(
    "name, extra, threshold",
    [
        ("lorenz96", ["data.num_samples=1000", "trainer.max_epochs=10"], 0.6),
        ("burgers", ["data.num_samples=300", "data.resolution=32", "trainer.max_epochs=20"], 0.9),
    ],
)
def test_training_learns(tmp_path, name, extra, threshold):
    result = fit(tmp_path, f"data={name}", "model=mlp", "model.width=64", "optim.lr=0.003", "sched=none", *extra)
    assert result.metrics["test/r2"] > threshold, result.metrics
