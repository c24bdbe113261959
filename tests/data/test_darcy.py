"""Darcy flow: the permeability field, the finite-difference solver, and bad input."""

import math
import sys

import numpy as np
import pytest
import torch

from ember import load_data
from ember.data.darcy import darcy_matrix, permeability, solve_darcy
from ember.errors import ConfigError, DataError


def poisson_series(x: np.ndarray, y: np.ndarray, terms: int = 199) -> np.ndarray:
    """-Laplacian u = 1 on the unit square, u = 0 on its boundary, by its Fourier sine series."""
    u = np.zeros(np.broadcast(x, y).shape)
    for m in range(1, terms + 1, 2):
        for n in range(1, terms + 1, 2):
            u += 16 / (math.pi**4 * m * n * (m * m + n * n)) * np.sin(m * math.pi * x) * np.sin(n * math.pi * y)
    return u


def test_constant_permeability_gives_the_poisson_solution_to_second_order():
    errors = []
    for s in (17, 33):
        x = np.linspace(0, 1, s)
        exact = poisson_series(x[:, None], x[None, :])
        # a = 4 everywhere: the Poisson solution divided by 4.
        u = solve_darcy(np.full((s, s), 4.0))
        errors.append(np.abs(u - exact / 4).max())
    assert errors[1] < 2e-5
    # Halving the spacing divides the error by about 4: a second-order scheme.
    assert 3 < errors[0] / errors[1] < 5, errors


def test_the_solution_satisfies_the_flux_form_difference_equations():
    """The residual of -div(a grad u) = 1 written out point by point, apart from the sparse matrix."""
    s = 12
    a = permeability(1, s, torch.Generator().manual_seed(3))[0].numpy()
    u = solve_darcy(a)
    h = 1 / (s - 1)
    assert np.all(u[0] == 0) and np.all(u[-1] == 0) and np.all(u[:, 0] == 0) and np.all(u[:, -1] == 0)
    for i in range(1, s - 1):
        for j in range(1, s - 1):
            flux = 0.0
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                face = (a[i, j] + a[i + di, j + dj]) / 2
                flux += face * (u[i + di, j + dj] - u[i, j])
            assert -flux / h**2 == pytest.approx(1.0, rel=1e-9)
    assert darcy_matrix(a).shape == ((s - 2) ** 2, (s - 2) ** 2)


def test_permeability_is_the_papers_two_valued_field_and_the_data_is_a_field_map():
    a = permeability(50, 32, torch.Generator().manual_seed(0))
    assert set(a.unique().tolist()) == {3.0, 12.0}
    assert 0.3 < (a == 12).float().mean() < 0.7
    # Smooth (a few blobs), not pixel noise: neighbours agree far more often than not.
    assert (a[:, 1:] == a[:, :-1]).float().mean() > 0.8
    splits = load_data("darcy", num_samples=10, resolution=20, cache=False)
    assert splits.spec.input_shape == (1, 20, 20) and splits.spec.target_shape == (1, 20, 20)
    assert "data=darcy generated in" in splits.notes[0]


def test_bad_darcy_input_is_a_one_line_error(monkeypatch):
    with pytest.raises(ConfigError, match=r"data.resolution=8 is too coarse for data=darcy; use at least 16"):
        load_data("darcy", resolution=8)
    monkeypatch.setitem(sys.modules, "scipy.sparse.linalg", None)  # scipy not installed
    with pytest.raises(DataError, match=r"data=darcy needs scipy: pip install 'ember\[physics\]'"):
        load_data("darcy", num_samples=4, resolution=16, cache=False)
