"""Self-equilibrated pre-stresses: the FE stress of an eigenstrain field (appendix A.3).

A stand-in for the quenched pre-stress of KMC-prepared states, and the only disorder of
model H (appendix A.8).
"""

from __future__ import annotations

import math

import numpy as np

from femplast.redistribution.backends import (
    MODE_DENSE,
    MODE_PROPAGATOR,
    UNIT_C,
    UNIT_S,
    from_dsp,
)


def compatible_stress(model, gs: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """FE stress (d, s, p) of the pure-shear eigenstrain field ``gs M_s + gc M_c`` per cell
    (the unit eigenstrains of the redistribution backends), with the model's Eshelby backend."""

    base = getattr(model.redist, "base", model.redist)
    nc = model.num_cells
    if base.mode == MODE_PROPAGATOR:
        out = np.zeros((3, nc))
        base.apply(out, np.arange(nc), gs, gc)  # FFT convolution
        return out
    if base.mode == MODE_DENSE:
        return np.einsum("cjki,jc->ki", base.dense, np.stack([gs, gc]))
    eps = gs[:, None] * UNIT_S + gc[:, None] * UNIT_C
    return base.stress_from_plastic(eps)


def random_prestress(model, rng: np.random.Generator, std: float) -> np.ndarray:
    """A random self-equilibrated pre-stress ``[xx, yy, xy]`` per cell with std(Sigma_xy) = std.

    The FE stress of an uncorrelated Gaussian pure-shear eigenstrain field (both orientations;
    2 x cells uniform doubles from ``rng`` by inverse CDF, its area-weighted mean removed, so
    the box-average stress is zero for uniform moduli), rescaled. A stand-in for the quenched
    pre-stress of the paper's KMC-prepared states (appendix A.3).
    """


    from scipy.special import ndtri  # here: importing scipy.special costs every process 40 ms

    a = ndtri(rng.random((2, model.num_cells)))
    a -= (a @ model.weights)[:, None]
    sig = compatible_stress(model, a[0], a[1])
    w = model.weights
    sd = math.sqrt(float(w @ (sig[1] - w @ sig[1]) ** 2))
    return from_dsp(sig * (std / sd))
