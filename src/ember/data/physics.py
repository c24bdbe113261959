"""Simulated physics, generated on this machine in seconds: the scientific-ML testbeds.

- `lorenz96`: the two-scale Lorenz '96 system (Lorenz 1996; the parameters of Arnold et al.
  2013), the climate-ML testbed for parameterization: learn the sub-grid tendency that the
  unresolved fast variables exert on each slow variable, from the slow state alone.
- `burgers`: 1-D viscous Burgers on the periodic unit interval from random smooth initial
  conditions, the Fourier Neural Operator paper's benchmark (Li et al. 2021): learn the map
  u(., 0) -> u(., 1).

Both integrate many independent trajectories at once, vectorized over the batch, in float64.
Burgers solutions are cached on disk (ember.data.cache): the run output says where.
"""

import math
from typing import Annotated

import torch

from ember.data import Splits, register_data
from ember.data.cache import cached_arrays
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.ranges import AT_LEAST_1, POSITIVE, SEED

# -- Lorenz '96 ------------------------------------------------------------------------------------
# Coupling h, time-scale ratio c and amplitude ratio b of Arnold et al. (2013).
L96_H, L96_C, L96_B = 1.0, 10.0, 10.0


def l96_tendencies(x: torch.Tensor, y: torch.Tensor, forcing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """d/dt of slow x (B, K) and fast y (B, K*J), and the sub-grid term U (B, K) acting on x."""
    k = x.shape[1]
    j = y.shape[1] // k
    # The fast variables' coupling summed per slow variable: the term a coarse model lacks.
    u = -(L96_H * L96_C / L96_B) * y.view(-1, k, j).sum(-1)
    dx = -x.roll(1, 1) * (x.roll(2, 1) - x.roll(-1, 1)) - x + forcing + u
    dy = (
        -L96_C * L96_B * y.roll(-1, 1) * (y.roll(-2, 1) - y.roll(1, 1))
        - L96_C * y
        + (L96_H * L96_C / L96_B) * x.repeat_interleave(j, 1)
    )
    return dx, dy, u


def _rk4(x, y, dt: float, forcing: float):
    k1 = l96_tendencies(x, y, forcing)
    k2 = l96_tendencies(x + dt / 2 * k1[0], y + dt / 2 * k1[1], forcing)
    k3 = l96_tendencies(x + dt / 2 * k2[0], y + dt / 2 * k2[1], forcing)
    k4 = l96_tendencies(x + dt * k3[0], y + dt * k3[1], forcing)
    return x + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]), y + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])


def simulate_l96(
    samples: int,
    slow: int,
    fast: int,
    forcing: float,
    seed: int,
    dt: float = 0.005,
    every: float = 0.1,
    spinup: float = 2.0,
    trajectories: int = 32,
):
    """(X, U): slow states and their sub-grid tendencies, sampled every `every` time units."""
    g = torch.Generator().manual_seed(seed)
    b = min(trajectories, samples)
    x = forcing * (0.5 + 0.1 * torch.randn(b, slow, generator=g, dtype=torch.float64))
    y = 0.1 * torch.randn(b, slow * fast, generator=g, dtype=torch.float64)
    for _ in range(round(spinup / dt)):  # onto the attractor
        x, y = _rk4(x, y, dt, forcing)
    per = -(-samples // b)
    xs, us = [], []
    for _ in range(per):
        for _ in range(round(every / dt)):
            x, y = _rk4(x, y, dt, forcing)
        xs.append(x.clone())
        us.append(l96_tendencies(x, y, forcing)[2])
    if not torch.isfinite(x).all():
        raise ConfigError(f"data=lorenz96 blew up with data.forcing={forcing}; use a forcing between 5 and 30")
    # Sample-major order: trajectory t's states come together.
    return torch.stack(xs, 1).reshape(-1, slow)[:samples], torch.stack(us, 1).reshape(-1, slow)[:samples]


@register_data("lorenz96")
def lorenz96(
    cfg,
    *,
    num_samples: Annotated[int, AT_LEAST_1] = 2000,
    slow: Annotated[int, AT_LEAST_1] = 8,
    fast: Annotated[int, AT_LEAST_1] = 32,
    forcing: float = 20.0,
    seed: Annotated[int, SEED] = 0,
) -> Splits:
    """Two-scale Lorenz '96: predict the sub-grid tendency of each slow variable from the slow state."""
    if slow < 4 or fast < 3:
        raise ConfigError(f"data=lorenz96 needs data.slow >= 4 and data.fast >= 3, got {slow} and {fast}")

    def make(n, s):
        x, u = simulate_l96(n, slow, fast, forcing, s)
        return TensorData(x.float().unsqueeze(1), u.float())

    # The test set comes from other trajectories: samples of one trajectory are correlated.
    spec = DataSpec(input_shape=(1, slow), task="regression", target_shape=(slow,))
    return Splits(train=make(num_samples, seed), test=make(max(1, num_samples // 4), seed + 1_000_003), spec=spec)


# -- Burgers -----------------------------------------------------------------------------------
def random_field(n: int, resolution: int, g: torch.Generator) -> torch.Tensor:
    """Samples of the Gaussian random field N(0, 625 (-Laplacian + 25 I)^-2) on the periodic unit
    interval (the FNO paper's initial conditions), built from their Fourier coefficients."""
    k = torch.arange(resolution // 2 + 1, dtype=torch.float64)
    lam = 625.0 * (4 * math.pi**2 * k**2 + 25.0) ** -2  # covariance eigenvalues
    re = torch.randn(n, len(k), generator=g, dtype=torch.float64)
    im = torch.randn(n, len(k), generator=g, dtype=torch.float64)
    # u = sqrt(l0) xi_0 + sum_k sqrt(2 l_k) (a cos 2 pi k x + b sin 2 pi k x), as rfft coefficients.
    coef = resolution * torch.sqrt(lam / 2) * torch.complex(re, -im)
    coef[:, 0] = resolution * math.sqrt(lam[0]) * re[:, 0]
    coef[:, -1] = 0  # Nyquist
    return torch.fft.irfft(coef, n=resolution)


def solve_burgers(u0: torch.Tensor, viscosity: float, final_time: float) -> torch.Tensor:
    """u_t + u u_x = nu u_xx, periodic on [0, 1): pseudo-spectral, 2/3 de-aliasing, and RK4 with an
    integrating factor, so the stiff viscous term is exact and the step only follows advection."""
    n = u0.shape[-1]
    k = 2 * math.pi * torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)
    dealias = (torch.arange(len(k)) < n / 3).to(torch.float64)
    umax = max(float(u0.abs().max()), 1e-3)  # no maximum grows under Burgers (maximum principle)
    # RK4 is stable for advection while k_max * umax * dt < 2.8; 2.0 keeps a margin.
    steps = max(1, math.ceil(final_time * k[-1] * 2 / 3 * umax / 2.0))
    dt = final_time / steps
    e = torch.exp(-viscosity * k**2 * dt / 2)
    e2 = e * e
    g = -0.5j * k * dealias

    def nonlinear(v):
        return g * torch.fft.rfft(torch.fft.irfft(v, n=n) ** 2)

    v = torch.fft.rfft(u0)
    for _ in range(steps):
        a = nonlinear(v)
        b = nonlinear(e * (v + dt / 2 * a))
        c = nonlinear(e * v + dt / 2 * b)
        d = nonlinear(e2 * v + dt * e * c)
        v = e2 * v + dt / 6 * (e2 * a + 2 * e * (b + c) + d)
    return torch.fft.irfft(v, n=n)


def spectral_resample(u: torch.Tensor, m: int) -> torch.Tensor:
    """u (..., n) on the periodic grid of n points, resampled to m points through its Fourier
    series: exact for fields with no modes at or above min(n, m) / 2 (their Nyquist is dropped)."""
    n = u.shape[-1]
    c = torch.fft.rfft(u)
    out = torch.zeros(*u.shape[:-1], m // 2 + 1, dtype=c.dtype)
    keep = (min(n, m) + 1) // 2
    out[..., :keep] = c[..., :keep]
    return torch.fft.irfft(out * (m / n), n=m)


def burgers_solution(
    u0: torch.Tensor, viscosity: float, final_time: float, tol: float = 1e-7, probe: int = 16
) -> torch.Tensor:
    """solve_burgers(u0) on u0's grid, computed on the coarsest grid that resolves it.

    Viscosity damps mode k like exp(-nu (2 pi k)^2 t), so at nu = 0.1 the solution at t = 1 (and
    all but the first instants of the path to it) lives on a few dozen modes: solving 1024-point
    fields on 128 points and interpolating spectrally gave the same fields to 4e-9 relative (below
    float32's 6e-8) in 1/80 of the time, as the RK4 step also follows the coarse grid's highest
    mode. The grid is chosen per call, not assumed: the `probe` samples of largest amplitude
    (the hardest) are solved on 32, 64, ... points until two successive grids agree to `tol`.
    """
    n = u0.shape[-1]
    hardest = u0[u0.abs().amax(-1).argsort(descending=True)[:probe]]
    m, previous = 32, None
    while m < n:
        current = spectral_resample(solve_burgers(spectral_resample(hardest, m), viscosity, final_time), n)
        if (
            previous is not None
            and ((current - previous).norm(dim=-1) / current.norm(dim=-1).clamp_min(1e-300)).max() < tol
        ):
            break
        previous, m = current, 2 * m
    if m >= n:
        return solve_burgers(u0, viscosity, final_time)
    return spectral_resample(solve_burgers(spectral_resample(u0, m), viscosity, final_time), n)


# Batch 20, the FNO paper's: with 420 training samples, batch 64 gave the FNO 7 steps an epoch and
# a test relative L2 of 0.0157 after 30 epochs at s=256, batch 20 gave 0.0122 (one run of each).
@register_data("burgers", batch_size=20)
def burgers(
    cfg,
    *,
    num_samples: Annotated[int, AT_LEAST_1] = 1000,
    resolution: Annotated[int, AT_LEAST_1] = 128,
    viscosity: Annotated[float, POSITIVE] = 0.1,
    final_time: Annotated[float, POSITIVE] = 1.0,
    seed: Annotated[int, SEED] = 0,
    cache: bool = True,
) -> Splits:
    """1-D viscous Burgers (FNO benchmark): map a random smooth u(x, 0) to u(x, t=1) on a periodic grid."""
    if resolution < 16 or viscosity <= 0 or final_time <= 0:
        raise ConfigError(
            f"data=burgers needs data.resolution >= 16, data.viscosity > 0 and data.final_time > 0, got {resolution}, "
            f"{viscosity}, {final_time}"
        )

    def make():
        u0 = random_field(num_samples, resolution, torch.Generator().manual_seed(seed))
        return {"u0": u0.float(), "u1": burgers_solution(u0, viscosity, final_time).float()}

    # The solver's version is part of the key: a changed solver must not read old solutions.
    args = {
        "solver": 2,
        "num_samples": num_samples,
        "resolution": resolution,
        "viscosity": viscosity,
        "final_time": final_time,
        "seed": seed,
    }
    d, note = cached_arrays("burgers", args, make, enabled=cache, keys=("u0", "u1"))
    # The target is a field of one channel, like the input: standardized as one quantity, and
    # the same statistics hold at any resolution (zero-shot super-resolution).
    spec = DataSpec(
        input_shape=(1, resolution),
        task="regression",
        target_shape=(1, resolution),
        input_names=["u0"],
        target_names=["u"],
    )
    return Splits(train=TensorData(d["u0"].unsqueeze(1), d["u1"].unsqueeze(1)), spec=spec, notes=[note])
