"""`linear`: ridge regression of the targets on the inputs, in closed form from one pass.

The train split's sums X'X and X'Y (X: the standardized inputs flattened, plus a column of ones
for the intercept, which is not penalized; Y: the targets in physical units) give the weights
for any penalty: W = (X'X + lambda D)^-1 X'Y. The penalty is chosen on the validation split
(the one of 0 and 1e-4 ... 1e2 times the train sample count with the least standardized MSE), 0
without one; at 0 the solution is numpy's lstsq (min-norm where X'X is singular). Where the
inputs are the target's own past values (a window table), this is the AR(p) model fitted by
least squares, exogenous inputs included.

Missing targets (NaN, contract C1) leave the sums of their column only: a column with gaps gets
its own X'X, less the rows where it is missing.
"""

import numpy as np

ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
MAX_FEATURES = 4096  # X'X of 4096 inputs is 128 MiB in float64
MAX_GAP_COLUMNS_BYTES = 2**28  # per-column X'X corrections kept for columns with gaps


class RidgeFit:
    """Sums of one pass over the train split, then weights per penalty."""

    def __init__(self, features: int, targets: int):
        self.f, self.t = features + 1, targets
        self.gram = np.zeros((self.f, self.f))
        self.xy = np.zeros((self.f, targets))
        self.gaps: dict[int, np.ndarray] = {}  # column -> X'X of the rows where it is missing
        self.n = 0
        self.too_many_gaps = False

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """One batch: standardized inputs (n, F), physical targets (n, T), NaN where missing."""
        x = x.reshape(len(x), -1)
        rows = np.isfinite(x).all(1)
        if not rows.all():  # an input that is NaN or infinite is no equation (a user's own Dataset)
            x, y = x[rows], y[rows]
        x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        finite = np.isfinite(y)
        self.gram += x1.T @ x1
        self.xy += x1.T @ np.where(finite, y, 0.0)
        self.n += len(x)
        for col in np.flatnonzero(~finite.all(0)):
            rows = x1[~finite[:, col]]
            if col not in self.gaps and (len(self.gaps) + 1) * self.f * self.f * 8 > MAX_GAP_COLUMNS_BYTES:
                self.too_many_gaps = True
                return
            self.gaps[col] = self.gaps.get(col, 0.0) + rows.T @ rows

    def weights(self, alpha: float) -> np.ndarray:
        """(F + 1, T) weights at penalty alpha x the sample count; 0 for a column never seen."""
        penalty = np.eye(self.f) * alpha * self.n
        penalty[-1, -1] = 0.0  # the intercept
        w = _solve(self.gram + penalty, self.xy)
        for col, missing in self.gaps.items():
            gram = self.gram - missing
            w[:, col] = _solve(gram + penalty, self.xy[:, col : col + 1])[:, 0] if gram[-1, -1] > 0.5 else 0.0
        return w


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # lstsq, not solve: X'X of constant or collinear inputs is singular, and the min-norm
    # solution is then lstsq's on X itself.
    return np.linalg.lstsq(a, b, rcond=None)[0]


def predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(n, T) predictions of standardized inputs (n, ...)."""
    x = x.reshape(len(x), -1)
    return x @ w[:-1] + w[-1]


class PenaltyChoice:
    """Validation error of every penalty's weights, summed in one pass over the validation split;
    errors per target column in units of its train spread, so kelvin do not outweigh mm/day."""

    def __init__(self, fit: RidgeFit, scale: np.ndarray):
        self.candidates = [fit.weights(a) for a in ALPHAS]
        self.scale = scale
        self.sse = np.zeros(len(ALPHAS))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        finite = np.isfinite(y)
        for i, w in enumerate(self.candidates):
            err = np.where(finite, (predict(x, w) - np.where(finite, y, 0.0)) / self.scale, 0.0)
            self.sse[i] += float((err * err).sum())

    def best(self) -> tuple[float, np.ndarray]:
        i = int(np.argmin(self.sse))
        return ALPHAS[i], self.candidates[i]
