"""The numbers the figures report: offset yield stress, peak and flow stress, power-law
exponents by maximum likelihood, the analytic field of a circular Eshelby inclusion.

Pure numpy (no solver layer, no dolfinx), so ``femplast plot`` stays light and the tests check
these numbers directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

YIELD_OFFSET = 2e-3  # plastic strain offset of the offset yield stress (the 0.2 % convention)


# ----------------------------------------------------------------------------- yield, flow
def offset_yield(gamma: np.ndarray, stress: np.ndarray, modulus: float,
                 offset: float = YIELD_OFFSET) -> tuple[float, float] | None:
    """Offset yield point of a loading branch: the first strain where the plastic strain
    ``gamma - Sigma / G`` (elastic response ``Sigma = G gamma`` to the pure shear ``gamma``,
    tensorial paper eq. 3) reaches ``offset``; linear interpolation between steps.

    Used for the reverse-yield stress of a Bauschinger test (tensorial paper sec. 5, Fig. 5d):
    the branch starts at zero external stress, so no initial strain is subtracted.

    Returns:
        ``(gamma_y, Sigma_y)`` or None when the branch never reaches the offset.
    """
    g = np.asarray(gamma, float) - float(gamma[0])
    s = np.asarray(stress, float)
    pl = g - s / modulus
    hit = np.flatnonzero(pl >= offset)
    if len(hit) == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(gamma[0]), float(s[0])
    t = (offset - pl[i - 1]) / (pl[i] - pl[i - 1])
    return (float(gamma[i - 1] + t * (gamma[i] - gamma[i - 1])),
            float(s[i - 1] + t * (s[i] - s[i - 1])))


@dataclass
class PeakFlow:
    """Stress overshoot and stationary flow stress of a mean stress-strain curve."""

    gamma_peak: float
    peak: float
    flow: float  # mean stress over gamma_ext > stationary_from
    flow_std: float  # its standard deviation over the same strains


def peak_and_flow(gamma: np.ndarray, stress: np.ndarray, stationary_from: float) -> PeakFlow:
    """Peak (maximum of the curve) and flow stress (mean over ``gamma > stationary_from``)."""
    gamma, stress = np.asarray(gamma, float), np.asarray(stress, float)
    i = int(np.argmax(stress))
    m = gamma > stationary_from
    if m.sum() < 1:
        m = np.ones_like(gamma, bool)
    return PeakFlow(float(gamma[i]), float(stress[i]), float(stress[m].mean()),
                    float(stress[m].std()))


# ----------------------------------------------------------------------------- power laws
ALPHA_GRID = np.linspace(1.01, 6.0, 4991)  # exponents searched (step 1e-3)


def hurwitz_zeta(s, q, n: int = 20) -> np.ndarray:
    """Hurwitz zeta ``sum_{k>=0} (q + k)^-s`` for s > 1, broadcast over ``s`` and ``q``
    (Euler-Maclaurin after ``n`` terms; relative error < 1e-12 for s <= 6, q >= 1)."""
    s, q = np.broadcast_arrays(np.asarray(s, float), np.asarray(q, float))
    k = q[..., None] + np.arange(n)
    head = (k ** -s[..., None]).sum(axis=-1)
    a = q + n
    return (head + a ** (1 - s) / (s - 1) + 0.5 * a ** -s + s / 12 * a ** (-s - 1)
            - s * (s + 1) * (s + 2) / 720 * a ** (-s - 3)
            + s * (s + 1) * (s + 2) * (s + 3) * (s + 4) / 30240 * a ** (-s - 5))


@dataclass
class PowerLawFit:
    """Maximum-likelihood fit of ``P(x) ~ x^-alpha`` for ``x >= x_min`` (Clauset, Shalizi and
    Newman, SIAM Rev. 51, 661 (2009))."""

    alpha: float
    alpha_lo: float  # bootstrap 2.5 % quantile
    alpha_hi: float  # bootstrap 97.5 % quantile
    alpha_err: float  # asymptotic standard error (alpha - 1) / sqrt(n_tail)
    x_min: float
    n_tail: int
    n: int
    ks: float  # Kolmogorov-Smirnov distance of the tail to the fit
    discrete: bool

    def density(self, x: np.ndarray) -> np.ndarray:
        """The fitted density (pdf or pmf) times the tail fraction, for an overlay on the
        density of all samples."""
        x = np.asarray(x, float)
        frac = self.n_tail / self.n
        if self.discrete:
            c = 1.0 / float(hurwitz_zeta(self.alpha, self.x_min))
        else:
            c = (self.alpha - 1) / self.x_min
            x = x / self.x_min
        return frac * c * x ** -self.alpha


def _alpha_discrete(sum_log: float, n: int, log_zeta: np.ndarray) -> float:
    ll = -n * log_zeta - ALPHA_GRID * sum_log
    i = int(np.clip(np.argmax(ll), 1, len(ll) - 2))
    a, b, c = ll[i - 1], ll[i], ll[i + 1]  # parabola through the maximum: sub-grid precision
    den = a - 2 * b + c
    shift = 0.5 * (a - c) / den if den < 0 else 0.0
    return float(ALPHA_GRID[i] + shift * (ALPHA_GRID[1] - ALPHA_GRID[0]))


def _fit_tail(x: np.ndarray, x_min: float, discrete: bool, log_zeta=None) -> tuple[float, float]:
    """(alpha, KS distance) of the tail ``x >= x_min``."""
    t = np.sort(x[x >= x_min])
    n = len(t)
    if discrete:
        alpha = _alpha_discrete(float(np.log(t).sum()), n, log_zeta)
        u = np.unique(t)
        # P(X <= v) = 1 - zeta(alpha, v + 1) / zeta(alpha, x_min) at each observed value v
        model = 1 - hurwitz_zeta(alpha, u + 1) / hurwitz_zeta(alpha, x_min)
        emp = np.searchsorted(t, u, side="right") / n
        ks = float(np.abs(emp - model).max())
        return alpha, ks
    alpha = 1.0 + n / float(np.log(t / x_min).sum())
    cdf = 1 - (t / x_min) ** (1 - alpha)
    i = np.arange(1, n + 1)
    ks = float(max(np.abs(i / n - cdf).max(), np.abs((i - 1) / n - cdf).max()))
    return alpha, ks


def fit_power_law(x, discrete: bool | None = None, x_min: float | None = None,
                  min_tail: int = 50, n_boot: int = 300, seed: int = 0) -> PowerLawFit | None:
    """Maximum-likelihood power-law exponent with x_min and a bootstrap interval.

    * exponent: the exact discrete likelihood ``-n ln zeta(alpha, x_min) - alpha sum ln x``
      maximized on a grid (step 1e-3, parabolic refinement) for integer data (avalanche sizes
      in slip events), the closed form ``1 + n / sum ln(x / x_min)`` for continuous data;
    * x_min (unless given): among the observed values leaving at least ``min_tail`` samples
      (at most 40 candidates, log-spaced), the one minimizing the Kolmogorov-Smirnov distance
      between the tail and its fit (Clauset et al. 2009, sec. 3.3);
    * interval: 2.5-97.5 % quantiles of the exponent over ``n_boot`` resamples of the tail
      (x_min fixed), seeded: the same data give the same interval.

    Returns:
        :class:`PowerLawFit`, or None with fewer than ``min_tail`` positive samples.
    """
    x = np.asarray(x, float)
    x = x[np.isfinite(x) & (x > 0)]
    if discrete is None:
        discrete = bool(np.all(x == np.round(x)))
    if len(x) < min_tail:
        return None
    if x_min is None:
        u = np.unique(x)
        cnt = len(x) - np.searchsorted(np.sort(x), u, side="left")
        cand = u[cnt >= min_tail]
        if len(cand) > 40:
            cand = np.unique(cand[np.round(np.geomspace(1, len(cand), 40)).astype(int) - 1])
        best = None
        for c in cand:
            lz = np.log(hurwitz_zeta(ALPHA_GRID, c)) if discrete else None
            a, ks = _fit_tail(x, c, discrete, lz)
            if best is None or ks < best[2]:
                best = (c, a, ks, lz)
        x_min, alpha, ks, lz = best
    else:
        lz = np.log(hurwitz_zeta(ALPHA_GRID, x_min)) if discrete else None
        alpha, ks = _fit_tail(x, x_min, discrete, lz)
    tail = x[x >= x_min]
    n = len(tail)
    rng = np.random.default_rng(seed)
    boots = []
    logs = np.log(tail) if discrete else np.log(tail / x_min)
    for _ in range(n_boot):
        s = float(logs[rng.integers(0, n, n)].sum())
        boots.append(_alpha_discrete(s, n, lz) if discrete else 1.0 + n / s)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return PowerLawFit(float(alpha), float(lo), float(hi), float((alpha - 1) / math.sqrt(n)),
                       float(x_min), n, len(x), float(ks), discrete)


# ----------------------------------------------------------------------------- Eshelby
def eshelby_circular_stress(x: np.ndarray, y: np.ndarray, radius: float, eps0: float,
                            G: float, B: float) -> np.ndarray:
    """Stress ``[xx, yy, xy]`` of a circular inclusion of radius ``a`` centred at the origin,
    eigenstrain ``eps_xy = eps0`` (tensor component), in an infinite isotropic 2D medium
    (``Sigma = B tr(eps) I + 2 G dev(eps)``, i.e. plane strain with
    ``nu = (B - G) / (2 B)``).

    Inside: the uniform Eshelby stress ``Sigma_xy = tau0 = -G eps0 / (1 + G / B)`` (Eshelby
    tensor of a cylinder, ``S_xyxy = (3 - 4 nu) / (8 (1 - nu))``). Outside: the decaying Airy
    function ``(C / r^2 ... )``: in polar coordinates about the principal axis of the
    eigenstrain (45 deg), with ``rho = a / r``,
    ``Sigma_rr = tau0 (4 rho^2 - 3 rho^4) cos 2t``, ``Sigma_tt = 3 tau0 rho^4 cos 2t``,
    ``Sigma_rt = tau0 (2 rho^2 - 3 rho^4) sin 2t``; tractions are continuous at r = a.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    tau0 = -G * eps0 / (1.0 + G / B)
    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    t = phi - math.pi / 4
    rho2 = (radius / np.maximum(r, 1e-300)) ** 2
    srr = tau0 * (4 * rho2 - 3 * rho2**2) * np.cos(2 * t)
    stt = 3 * tau0 * rho2**2 * np.cos(2 * t)
    srt = tau0 * (2 * rho2 - 3 * rho2**2) * np.sin(2 * t)
    c, s = np.cos(phi), np.sin(phi)
    out = np.empty(x.shape + (3,))
    out[..., 0] = srr * c * c + stt * s * s - 2 * srt * s * c
    out[..., 1] = srr * s * s + stt * c * c + 2 * srt * s * c
    out[..., 2] = (srr - stt) * s * c + srt * (c * c - s * s)
    inside = r < radius
    out[inside] = [0.0, 0.0, tau0]
    return out


def eshelby_periodic_stress(x: np.ndarray, y: np.ndarray, L: float, radius: float, eps0: float,
                            G: float, B: float, mean_stress, images: int = 3) -> np.ndarray:
    """The circular-inclusion field (:func:`eshelby_circular_stress`) of a periodic ``L x L``
    box: summed over the ``(2 images + 1)^2`` nearest periodic copies, then shifted by a
    constant so that its mean over the points equals ``mean_stress`` (the image sum converges
    only up to a uniform stress, which the periodic problem fixes:
    ``<Sigma> = C : (<eps> - f eps*)``)."""
    out = np.zeros(np.shape(x) + (3,))
    for i in range(-images, images + 1):
        for j in range(-images, images + 1):
            out += eshelby_circular_stress(x + i * L, y + j * L, radius, eps0, G, B)
    return out + (np.asarray(mean_stress, float) - out.reshape(-1, 3).mean(axis=0))


@dataclass
class EshelbyComparison:
    """FE cell stresses of one sheared inclusion against the analytic field at the cell
    centres: ``analytic`` (cells, 3), ``rel_error_outside`` (relative L2 error of Sigma_xy
    over the cells farther than one cell size from the interface), ``inside_fe`` and
    ``inside_analytic`` (mean Sigma_xy of the cells inside)."""

    centres: np.ndarray
    fe: np.ndarray
    analytic: np.ndarray
    band: np.ndarray  # cells within one cell size of the interface (excluded from the error)
    inside: np.ndarray
    rel_error_outside: float
    inside_fe: float
    inside_analytic: float


def compare_eshelby(centres: np.ndarray, fe: np.ndarray, L: float, h: float, inc: dict,
                    G: float, B: float, mean_stress) -> EshelbyComparison:
    """Compare FE cell stresses (``fe`` (cells, 3), centres relative to the box corner) of
    the inclusion case with the periodic analytic field of the circle of the same area as
    the cells inside (``inclusion_area`` of summary.json, else pi radius^2). ``mean_stress``
    (summary.json) carries every uniform part, including ``G gamma_ext``."""
    x, y = centres[:, 0] - L / 2, centres[:, 1] - L / 2
    r = np.hypot(x, y)
    a = float(inc["radius"])
    inside = r <= a
    a_eff = math.sqrt(inc.get("area", math.pi * a * a) / math.pi)
    an = eshelby_periodic_stress(x, y, L, a_eff, float(inc["eps0"]), G, B, mean_stress)
    band = np.abs(r - a) <= h
    m = ~band & ~inside
    err = float(np.linalg.norm(fe[m, 2] - an[m, 2]) / np.linalg.norm(an[m, 2]))
    return EshelbyComparison(centres, fe, an, band, inside, err, float(fe[inside, 2].mean()),
                             float(an[inside, 2].mean()))
