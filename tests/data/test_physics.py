"""Simulated physics: two-scale Lorenz '96 and viscous Burgers, checked against their equations."""

import math

import pytest
import torch
from data_support import fit

from ember import load_data
from ember.data.physics import burgers_solution, l96_tendencies, random_field, solve_burgers, spectral_resample
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


def cole_hopf(u0: torch.Tensor, viscosity: float, t: float) -> torch.Tensor:
    """The exact solution of periodic viscous Burgers, an independent check of the solver.

    Mean c and zero-mean part w0: u(x, t) = c + w(x - c t, t) (Galilean invariance), and by the
    Cole-Hopf transform w = -2 nu phi_x / phi, where phi solves the heat equation from
    phi(x, 0) = exp(-(1 / (2 nu)) * integral of w0), exactly, in Fourier space.
    """
    n = u0.shape[-1]
    k = 2 * math.pi * torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)
    c = u0.mean(-1, keepdim=True)
    w0 = torch.fft.rfft(u0 - c)
    integral = torch.fft.irfft(torch.where(k > 0, w0 / (1j * k.clamp_min(1e-300)), 0), n=n)
    heat = torch.fft.rfft(torch.exp(-integral / (2 * viscosity))) * torch.exp(-viscosity * k**2 * t)
    w = -2 * viscosity * torch.fft.irfft(1j * k * heat, n=n) / torch.fft.irfft(heat, n=n)
    return c + torch.fft.irfft(torch.fft.rfft(w) * torch.exp(-1j * k * c * t), n=n)


def test_burgers_matches_the_exact_cole_hopf_solution_at_the_benchmarks_resolution():
    u0 = random_field(8, 1024, torch.Generator().manual_seed(1))
    exact = cole_hopf(u0, 0.1, 1.0)
    fast = burgers_solution(u0, 0.1, 1.0)
    relative = (fast - exact).norm(dim=-1) / exact.norm(dim=-1)
    # Below float32's resolution (6e-8), the precision the data is stored in (measured: 9e-9).
    assert relative.max() < 2e-8, relative
    # The full-grid solver too, on a grid small enough to run it quickly (Cole-Hopf's own
    # aliasing error at 256 points is about 1e-8).
    small = random_field(4, 256, torch.Generator().manual_seed(2))
    exact = cole_hopf(small, 0.1, 0.5)
    for solution in (solve_burgers(small, 0.1, 0.5), burgers_solution(small, 0.1, 0.5)):
        assert ((solution - exact).norm(dim=-1) / exact.norm(dim=-1)).max() < 5e-8


def test_spectral_resampling_is_exact_for_band_limited_fields():
    x = torch.arange(64, dtype=torch.float64) / 64
    u = 1 + torch.sin(2 * math.pi * 3 * x) + 0.5 * torch.cos(2 * math.pi * 7 * x)
    fine = torch.arange(256, dtype=torch.float64) / 256
    expected = 1 + torch.sin(2 * math.pi * 3 * fine) + 0.5 * torch.cos(2 * math.pi * 7 * fine)
    assert torch.allclose(spectral_resample(u, 256), expected, atol=1e-12)
    assert torch.allclose(spectral_resample(expected, 64), u, atol=1e-12)


def test_burgers_is_cached_where_the_run_output_says(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_data("burgers", num_samples=20, resolution=32)
    assert f"cached in {tmp_path / 'ember'}" in first.notes[0]
    (cached,) = (tmp_path / "ember").glob("burgers-*.pt")
    second = load_data("burgers", num_samples=20, resolution=32)
    assert second.notes == [f"data=burgers read from the cache {cached} (delete it to regenerate)"]
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.train.y, second.train.y)
    assert "generated in" in load_data("burgers", num_samples=20, resolution=32, cache=False).notes[0]
    assert len(list((tmp_path / "ember").glob("burgers-*.pt"))) == 1


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


def test_a_truncated_burgers_cache_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_data("burgers", num_samples=20, resolution=32)
    (cached,) = (tmp_path / "ember").glob("burgers-*.pt")
    cached.write_bytes(cached.read_bytes()[:300])  # a write cut short by a full disk
    second = load_data("burgers", num_samples=20, resolution=32)
    assert second.notes[0].startswith(f"warning: the cached data=burgers file {cached} was damaged (")
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.train.y, second.train.y)
