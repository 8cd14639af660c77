"""One-dimensional distributions sampled by inverse CDF (thresholds, renewal, any scalar draw).

A :class:`Distribution` is parametric (Weibull, Gaussian truncated at 0, gamma, uniform) or
tabulated (from samples or from a histogram, e.g. read from a CSV file). Every draw is one
uniform double ``u = rng.random()`` of the realization's numpy Generator turned into a value by
the distribution's inverse CDF :func:`ppf`, compiled with numba. Python code calls the same
compiled function on ``rng.random(n)``, so numba loops and vectorized numpy code consume the
random stream identically (femplast RNG convention, docs/architecture.md).

Inside compiled code a distribution travels as four arrays/values ``(kind, par, tu, tx)``
(:attr:`Distribution.args`): ``kind`` an integer code, ``par`` up to four parameters,
``(tu, tx)`` the nodes of a piecewise-linear inverse CDF (tabulated kinds only).

Tabulated inverse CDFs:
    samples: the sorted samples ``x_(0) <= ... <= x_(n-1)`` at ``u_j = j / (n - 1)`` with
        linear interpolation (numpy's default 'linear' quantile); draws stay in
        ``[min, max]``.
    histogram: bin edges at the cumulative weight fractions (uniform density inside a bin).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from numba import njit

from femplast.errors import FemplastInputError
from femplast.special import ndtr, ndtri

WEIBULL, GAUSS, GAMMA, UNIFORM, TABLE = 0, 1, 2, 3, 4
KINDS = ("weibull", "gauss", "gamma", "uniform", "samples", "histogram")

_SQRT2PI = math.sqrt(2.0 * math.pi)


# ----------------------------------------------------------------------------- special functions
# one implementation of the normal CDF and its inverse for the whole package
norm_cdf = ndtr


@njit(cache=True)
def gammainc(a: float, x: float) -> float:
    """Regularized lower incomplete gamma function P(a, x) (series / continued fraction)."""
    if x <= 0.0:
        return 0.0
    lg = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        ap = a
        s = 1.0 / a
        d = s
        for _ in range(10000):
            ap += 1.0
            d *= x / ap
            s += d
            if abs(d) < abs(s) * 1e-16:
                break
        return min(1.0, s * math.exp(lg))
    # Lentz continued fraction for Q(a, x)
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(lg) * h)


@njit(cache=True)
def gammaincinv(a: float, u: float) -> float:
    """x with P(a, x) = u: safeguarded Newton from the Wilson-Hilferty guess."""
    if u <= 0.0:
        return 0.0
    if u >= 1.0:
        return np.inf
    z = ndtri(u)
    t = 1.0 - 1.0 / (9.0 * a) + z / (3.0 * math.sqrt(a))
    x = a * t * t * t
    if x <= 0.0 or a < 1.0:
        x = math.exp((math.log(u) + math.lgamma(a + 1.0)) / a)  # small-x asymptote
    lo = 0.0
    hi = np.inf
    for _ in range(200):
        f = gammainc(a, x) - u
        if f < 0.0:
            lo = x
        else:
            hi = x
        pdf = math.exp((a - 1.0) * math.log(x) - x - math.lgamma(a))
        xn = x - f / pdf if pdf > 0.0 else x
        if not (xn > lo and xn < hi):
            xn = 0.5 * (lo + hi) if hi < np.inf else 2.0 * x + 1.0
        if abs(xn - x) <= 1e-15 * x:
            return xn
        x = xn
    return x


# ----------------------------------------------------------------------------- inverse CDF
@njit(cache=True)
def ppf(kind: int, par, tu, tx, u: float) -> float:
    """Inverse CDF of the distribution ``(kind, par, tu, tx)`` at ``u`` in [0, 1)."""
    if kind == WEIBULL:  # par: scale lambda, shape k
        return par[0] * (-math.log1p(-u)) ** (1.0 / par[1])
    if kind == GAUSS:  # par: mean, std, CDF at 0 of the untruncated law
        v = par[2] + u * (1.0 - par[2])
        x = par[0] + par[1] * ndtri(v)
        return x if x > 0.0 else 0.0
    if kind == GAMMA:  # par: shape, scale
        return par[1] * gammaincinv(par[0], u)
    if kind == UNIFORM:  # par: low, high
        return par[0] + u * (par[1] - par[0])
    # TABLE: piecewise-linear inverse CDF through (tu, tx)
    n = tu.shape[0]
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if tu[mid] <= u:
            lo = mid
        else:
            hi = mid
    du = tu[hi] - tu[lo]
    if du <= 0.0:
        return tx[lo]
    f = (u - tu[lo]) / du
    if f > 1.0:
        f = 1.0
    return tx[lo] + f * (tx[hi] - tx[lo])


@njit(cache=True)
def draw(rng, kind: int, par, tu, tx) -> float:
    """One draw: one uniform double of ``rng`` through :func:`ppf`."""
    return ppf(kind, par, tu, tx, rng.random())


@njit(cache=True)
def ppf_array(kind: int, par, tu, tx, u):
    out = np.empty(u.shape[0])
    for i in range(u.shape[0]):
        out[i] = ppf(kind, par, tu, tx, u[i])
    return out


# ----------------------------------------------------------------------------- the class
class Distribution:
    """A positive-or-real scalar distribution with a compiled inverse CDF.

    Build with the class methods; ``args`` is the tuple for compiled code.
    """

    def __init__(self, kind: int, par, tu=None, tx=None, name: str = ""):
        self.kind = int(kind)
        p = np.zeros(4)
        p[:len(par)] = par
        self.par = p
        self.tu = np.ascontiguousarray(tu if tu is not None else np.zeros(2), float)
        self.tx = np.ascontiguousarray(tx if tx is not None else np.zeros(2), float)
        self.name = name

    # -------------------------------------------------------------- constructors
    @classmethod
    def weibull(cls, scale: float, shape: float, key: str = "distribution"):
        _positive(f"{key}.scale", scale)
        _positive(f"{key}.shape", shape)
        return cls(WEIBULL, [scale, shape], name=f"weibull(scale={scale:g}, shape={shape:g})")

    @classmethod
    def gauss(cls, mean: float, std: float, key: str = "distribution"):
        """Gaussian of the given mean and std (before truncation) truncated to x >= 0."""
        _positive(f"{key}.std", std)
        if mean / std < -8.0:
            raise FemplastInputError(f"{key}.mean", mean, f"> -8 std ({-8 * std:g}): almost "
                                     "all the mass would be cut by the truncation at 0")
        return cls(GAUSS, [mean, std, norm_cdf(-mean / std)],
                   name=f"gauss(mean={mean:g}, std={std:g}, truncated at 0)")

    @classmethod
    def gamma(cls, shape: float, scale: float, key: str = "distribution"):
        _positive(f"{key}.shape", shape)
        _positive(f"{key}.scale", scale)
        return cls(GAMMA, [shape, scale], name=f"gamma(shape={shape:g}, scale={scale:g})")

    @classmethod
    def uniform(cls, low: float, high: float, key: str = "distribution"):
        if not high > low:
            raise FemplastInputError(f"{key}.high", high, f"> {key}.low = {low}")
        return cls(UNIFORM, [low, high], name=f"uniform({low:g}, {high:g})")

    @classmethod
    def from_samples(cls, samples, key: str = "distribution", name: str = "samples"):
        x = np.sort(np.asarray(samples, float).ravel())
        if x.size < 2 or not np.all(np.isfinite(x)):
            raise FemplastInputError(key, f"{x.size} samples", "at least 2 finite samples")
        return cls(TABLE, [], np.linspace(0.0, 1.0, x.size), x, name=f"{name} (n={x.size})")

    @classmethod
    def from_histogram(cls, edges, weights, key: str = "distribution", name: str = "histogram"):
        e = np.asarray(edges, float).ravel()
        w = np.asarray(weights, float).ravel()
        if e.size != w.size + 1 or w.size < 1:
            raise FemplastInputError(key, f"{e.size} edges, {w.size} weights",
                                     "one more bin edge than weights, at least one bin")
        if not (np.all(np.isfinite(e)) and np.all(np.diff(e) > 0)):
            raise FemplastInputError(key, name, "finite, strictly increasing bin edges")
        if np.any(w < 0) or not w.sum() > 0 or not np.all(np.isfinite(w)):
            raise FemplastInputError(key, name, "finite non-negative weights with a positive sum")
        cu = np.concatenate([[0.0], np.cumsum(w) / w.sum()])
        cu[-1] = 1.0
        return cls(TABLE, [], cu, e, name=f"{name} ({w.size} bins)")

    @classmethod
    def from_csv(cls, path, kind: str = "samples", column: int = 0,
                 key: str = "distribution"):
        """Samples (one value per row, ``column``) or a histogram: rows ``centre, weight``
        (edges midway between centres) or ``left, right, weight``. Non-numeric rows (headers)
        and lines starting with '#' are skipped."""
        path = Path(path)
        if not path.is_file():
            raise FemplastInputError(f"{key}.file", str(path), "an existing CSV file")
        rows = []
        with path.open(newline="") as fh:
            for r in csv.reader(fh):
                if not r or r[0].lstrip().startswith("#"):
                    continue
                try:
                    rows.append([float(v) for v in r if v.strip() != ""])
                except ValueError:
                    continue
        if not rows:
            raise FemplastInputError(f"{key}.file", str(path), "a CSV file with numeric rows")
        ncol = min(len(r) for r in rows)
        if kind == "samples":
            if column >= ncol:
                raise FemplastInputError(f"{key}.column", column,
                                         f"< {ncol} (columns of {path.name})")
            return cls.from_samples([r[column] for r in rows], f"{key}.file", path.name)
        a = np.array([r[:ncol] for r in rows])
        if ncol == 2:
            c, w = a[:, 0], a[:, 1]
            if c.size < 2 or np.any(np.diff(c) <= 0):
                raise FemplastInputError(f"{key}.file", str(path), "histogram rows 'centre, "
                                         "weight' with at least 2 increasing centres")
            mid = 0.5 * (c[1:] + c[:-1])
            edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
            return cls.from_histogram(edges, w, f"{key}.file", path.name)
        if ncol >= 3:
            left, right, w = a[:, 0], a[:, 1], a[:, 2]
            if np.any(np.abs(right[:-1] - left[1:]) > 1e-9 * np.abs(right).max()):
                raise FemplastInputError(f"{key}.file", str(path), "contiguous histogram bins "
                                         "(right edge of each row = left edge of the next)")
            return cls.from_histogram(np.concatenate([left, right[-1:]]), w, f"{key}.file",
                                      path.name)
        raise FemplastInputError(f"{key}.file", str(path), "histogram rows 'centre, weight' or "
                                 "'left, right, weight'")

    # -------------------------------------------------------------- use
    @property
    def args(self):
        return self.kind, self.par, self.tu, self.tx

    def ppf(self, u) -> np.ndarray:
        u = np.atleast_1d(np.asarray(u, float))
        return ppf_array(self.kind, self.par, self.tu, self.tx, np.ascontiguousarray(u))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws; the same numbers as ``size`` successive compiled :func:`draw` calls."""
        return self.ppf(rng.random(size))

    def moments(self) -> tuple[float, float]:
        """(E[X], E[X^2]), analytic or exact for the piecewise-linear tables."""
        p = self.par
        if self.kind == WEIBULL:
            lam, k = p[0], p[1]
            return lam * math.gamma(1 + 1 / k), lam**2 * math.gamma(1 + 2 / k)
        if self.kind == GAUSS:
            mu, s = p[0], p[1]
            a = -mu / s
            Z = 1.0 - norm_cdf(a)
            lam = math.exp(-0.5 * a * a) / _SQRT2PI / Z
            m = mu + s * lam
            var = s * s * (1.0 + a * lam - lam * lam)
            return m, var + m * m
        if self.kind == GAMMA:
            k, th = p[0], p[1]
            return k * th, k * (k + 1) * th * th
        if self.kind == UNIFORM:
            a, b = p[0], p[1]
            return 0.5 * (a + b), (a * a + a * b + b * b) / 3.0
        du = np.diff(self.tu)
        x0, x1 = self.tx[:-1], self.tx[1:]
        return float(np.sum(du * 0.5 * (x0 + x1))), float(np.sum(du * (x0**2 + x0 * x1 + x1**2)
                                                                  / 3.0))

    @property
    def mean(self) -> float:
        return self.moments()[0]

    @property
    def std(self) -> float:
        m, m2 = self.moments()
        return math.sqrt(max(m2 - m * m, 0.0))

    def describe(self) -> dict:
        m, m2 = self.moments()
        return dict(law=self.name, mean=m, std=math.sqrt(max(m2 - m * m, 0.0)),
                    second_moment=m2)


def _positive(key, v):
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise FemplastInputError(key, v, "a number > 0")


def from_options(kind: str, key: str, *, scale=None, shape=None, mean=None, std=None, low=None,
                 high=None, file=None, column: int = 0, base: Path | None = None) -> Distribution:
    """Build a distribution from case-file style options; missing parameters are errors naming
    ``key.<parameter>``."""

    def need(name, v):
        if v is None:
            raise FemplastInputError(f"{key}.{name}", None, f"a number (required by {key}.kind: "
                                     f"{kind})")
        return v

    if kind == "weibull":
        return Distribution.weibull(need("scale", scale), need("shape", shape), key)
    if kind == "gauss":
        return Distribution.gauss(need("mean", mean), need("std", std), key)
    if kind == "gamma":
        return Distribution.gamma(need("shape", shape), need("scale", scale), key)
    if kind == "uniform":
        return Distribution.uniform(need("low", low), need("high", high), key)
    if kind in ("samples", "histogram"):
        if file is None:
            raise FemplastInputError(f"{key}.file", None, f"a CSV file (required by {key}.kind: "
                                     f"{kind})")
        p = Path(file)
        if not p.is_absolute() and base is not None:
            p = base / p
        return Distribution.from_csv(p, kind, column, key)
    raise FemplastInputError(f"{key}.kind", kind, "one of " + ", ".join(KINDS))


__all__ = ["Distribution", "from_options", "ppf", "draw", "ndtri", "gammainc", "gammaincinv",
           "KINDS"]
