"""Darcy flow (`data=darcy`), the Fourier Neural Operator paper's 2-D benchmark (Li et al. 2021):
learn the map from a permeability a(x) to the pressure u(x) of -div(a grad u) = 1 on the unit
square with u = 0 on its boundary.

As in the paper, a is a Gaussian random field N(0, (-Laplacian + 9 I)^-2) (Neumann boundary
conditions, so a cosine series) thresholded to 12 where it is positive and 3 elsewhere, and the
equation is solved by second-order finite differences on the grid of `resolution` points per axis
that includes the boundary, as one sparse linear system per sample (SciPy, `pip install
'ember[physics]'`). Solutions are cached on disk (ember.data.cache): the run output says where.
"""

import math
from typing import Annotated

import numpy as np
import torch

from ember.data import Splits, register_data
from ember.data.cache import cached_arrays
from ember.data.checks import require
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.ranges import AT_LEAST_1, SEED

HIGH, LOW = 12.0, 3.0  # the paper's permeabilities


def permeability(n: int, resolution: int, g: torch.Generator) -> torch.Tensor:
    """n thresholded Gaussian random fields on the (resolution x resolution) grid of [0, 1]^2."""
    # Eigenfunctions cos(pi k1 x) cos(pi k2 y) of the Neumann Laplacian, eigenvalues pi^2 |k|^2;
    # a mode's standard deviation under (-Laplacian + 9)^-2 is 1 / (pi^2 |k|^2 + 9). Only the
    # sign is kept, so the field's overall scale does not matter. The constant mode is left out
    # (as in the paper's generator): it would only shift the threshold.
    k = torch.arange(resolution, dtype=torch.float64)
    std = 1.0 / (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + 9.0)
    std[0, 0] = 0.0
    x = torch.linspace(0, 1, resolution, dtype=torch.float64)
    basis = torch.cos(math.pi * k[:, None] * x[None, :])  # (modes, points)
    xi = torch.randn(n, resolution, resolution, generator=g, dtype=torch.float64) * std
    field = basis.T @ xi @ basis
    return torch.where(field >= 0, HIGH, LOW).float()  # both values are exact in float32


def darcy_matrix(a: np.ndarray):
    """The finite-difference matrix of -div(a grad u) on the interior points of a's grid
    (u = 0 on the boundary), with a at the midpoints between nodes the mean of its two ends."""
    sparse = require("scipy.sparse", "physics", "darcy")
    a = np.asarray(a, dtype=np.float64)  # a float32 matrix would make SciPy solve in float32 (1e-7 residuals)
    s = a.shape[0]
    m, h2 = s - 2, (1.0 / (s - 1)) ** 2
    center = a[1:-1, 1:-1]
    north, south = (center + a[:-2, 1:-1]) / 2, (center + a[2:, 1:-1]) / 2
    west, east = (center + a[1:-1, :-2]) / 2, (center + a[1:-1, 2:]) / 2
    idx = np.arange(m * m).reshape(m, m)
    # The diagonal, then each neighbour that is not on the boundary (boundary values are 0).
    rows = [idx, idx[1:, :], idx[:-1, :], idx[:, 1:], idx[:, :-1]]
    cols = [idx, idx[:-1, :], idx[1:, :], idx[:, :-1], idx[:, 1:]]
    vals = [north + south + west + east, -north[1:, :], -south[:-1, :], -west[:, 1:], -east[:, :-1]]
    flat = [np.concatenate([v.ravel() for v in part]) for part in (rows, cols, vals)]
    return sparse.csr_matrix((flat[2] / h2, (flat[0], flat[1])), shape=(m * m, m * m))


def solve_darcy(a: np.ndarray, forcing: float = 1.0) -> np.ndarray:
    """u on a's (s x s) grid: -div(a grad u) = forcing inside, u = 0 on the boundary."""
    linalg = require("scipy.sparse.linalg", "physics", "darcy")
    s = a.shape[0]
    u = np.zeros((s, s))
    # A minimum-degree ordering of A + A^T suits the symmetric matrix (~10% faster than the default).
    rhs = np.full((s - 2) ** 2, forcing)
    u[1:-1, 1:-1] = linalg.spsolve(darcy_matrix(a).tocsc(), rhs, permc_spec="MMD_AT_PLUS_A").reshape(s - 2, s - 2)
    return u


@register_data("darcy")
def darcy(
    cfg,
    *,
    num_samples: Annotated[int, AT_LEAST_1] = 1000,
    resolution: Annotated[int, AT_LEAST_1] = 85,
    seed: Annotated[int, SEED] = 0,
    cache: bool = True,
) -> Splits:
    """2-D Darcy flow (FNO benchmark): map a two-valued permeability a(x) to the pressure u(x)."""
    if resolution < 16:
        raise ConfigError(
            f"data.resolution={resolution} is too coarse for data=darcy; "
            "use at least 16 (the paper's grids are 85, 141, 211, 421)"
        )
    require("scipy.sparse.linalg", "physics", "darcy")

    def make():
        a = permeability(num_samples, resolution, torch.Generator().manual_seed(seed))
        u = np.stack([solve_darcy(sample) for sample in a.numpy()])
        return {"a": a, "u": torch.from_numpy(u).float()}

    args = {"solver": 1, "num_samples": num_samples, "resolution": resolution, "seed": seed}
    d, note = cached_arrays("darcy", args, make, enabled=cache, keys=("a", "u"))
    spec = DataSpec(
        input_shape=(1, resolution, resolution),
        task="regression",
        target_shape=(1, resolution, resolution),
        input_names=["a"],
        target_names=["u"],
    )
    return Splits(train=TensorData(d["a"].unsqueeze(1), d["u"].unsqueeze(1)), spec=spec, notes=[note])
