"""Slip systems of the tensorial model (tensorial paper, sec. 3.1-3.3, eq. 3, 5, 7).

Each cell holds ``N`` slip systems in groups of four angles ``theta, theta + pi/4, theta + pi/2,
theta + 3 pi/4`` (theta uniform in (-pi/2, pi/2]), one slip sense each, with Weibull thresholds
``tau_c`` (eq. 5). Only ``sin 2 theta`` and ``cos 2 theta`` enter the dynamics:
``tau = M(theta) : Sigma = sin(2 theta) (Sigma_yy - Sigma_xx)/2 + cos(2 theta) Sigma_xy``.

All random numbers are uniform doubles from the realization's numpy Generator, turned into the
distributions by explicit inverse CDFs, so compiled (numba) and pure-numpy code consume the
same stream in the same order and give identical trajectories.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

THRESHOLD_WEIBULL = 0
THRESHOLD_FIXED = 1


def systems_per_cell(l: float, rho_s: float = 0.8) -> int:
    """N = rho_s l^2 rounded to the nearest multiple of 4, at least 4 (appendix A.2)."""
    return max(4, 4 * int(round(rho_s * l * l / 4.0)))


@njit(cache=True)
def draw_threshold(rng, kind: int, p0: float, p1: float) -> float:
    """One slip threshold: Weibull(lambda=p0, k=p1) (eq. 5) or the fixed value p0."""
    if kind == THRESHOLD_FIXED:
        return p0
    u = rng.random()
    return p0 * (-math.log1p(-u)) ** (1.0 / p1)


@njit(cache=True)
def draw_amplitude(rng, gmax: float, chi: float) -> float:
    """Slip amplitude from the bounded power law of eq. 7: P = chi/gmax (1 - x/gmax)^(chi-1)."""
    u = rng.random()
    return gmax * (1.0 - (1.0 - u) ** (1.0 / chi))


@njit(cache=True)
def renew_cell(rng, c, theta, sin2, cos2, tauc, kind, p0, p1):
    """Renew the N systems of cell ``c``: N/4 random base angles, then N thresholds."""
    N = theta.shape[1]
    for g in range(N // 4):
        t0 = 0.5 * math.pi - math.pi * rng.random()  # uniform in (-pi/2, pi/2]
        for j in range(4):
            t = t0 + 0.25 * math.pi * j
            if t > 0.5 * math.pi:
                t -= math.pi
            theta[c, 4 * g + j] = t
            sin2[c, 4 * g + j] = math.sin(2.0 * t)
            cos2[c, 4 * g + j] = math.cos(2.0 * t)
    for n in range(N):
        tauc[c, n] = draw_threshold(rng, kind, p0, p1)


@njit(cache=True)
def renew_all(rng, theta, sin2, cos2, tauc, kind, p0, p1):
    for c in range(theta.shape[0]):
        renew_cell(rng, c, theta, sin2, cos2, tauc, kind, p0, p1)


class SlipSystems:
    """Angles and thresholds of all cells: arrays of shape (num_cells, N)."""

    def __init__(self, num_cells: int, N: int, threshold_kind: int = THRESHOLD_WEIBULL,
                 p0: float = 2.05, p1: float = 2.18):
        if N < 4 or N % 4:
            from femplast import FemplastInputError

            raise FemplastInputError("slip.N", N, "a multiple of 4, at least 4")
        self.theta = np.zeros((num_cells, N))
        self.sin2 = np.zeros((num_cells, N))
        self.cos2 = np.ones((num_cells, N))
        self.tauc = np.zeros((num_cells, N))
        self.kind, self.p0, self.p1 = threshold_kind, float(p0), float(p1)

    @property
    def N(self) -> int:
        return self.theta.shape[1]

    def draw(self, rng: np.random.Generator) -> None:
        renew_all(rng, self.theta, self.sin2, self.cos2, self.tauc, self.kind, self.p0, self.p1)

    def arrays(self):
        return self.theta, self.sin2, self.cos2, self.tauc
