"""Fit of the scalar slip law ``eps0(sigma_c) = c0 + c1 sigma_c^2`` (scalar paper, eq. 12)
against whole curves: the ensemble-mean stress-strain curve and mean-threshold curve.

Why whole curves: the flow and peak stresses depend almost only on the mean slip <eps0>, so
(c0, c1) is often not identifiable from those two numbers; the transient of the stress and of
the mean threshold carries the rest (a slip that grows with sigma_c^2 relaxes hard cells
more). The curves are reduced to window means (``windows`` per observable); the fit is a
weighted least-squares (Levenberg-Marquardt) fit of the model's window means to the
target's, with

* common random numbers: every evaluation runs the same realizations (seeds) of the model;
  avalanches still make the curves rough in (c0, c1) on small scales, so the Jacobian is a
  central difference of half each parameter's scale (:data:`H`);
* a diagonal weight ``W = diag(C_model + C_target)^-1`` (C: covariance of the window means,
  the model's from its realizations at the start; :data:`SHRINK`);
* the parameters' covariance by the sandwich ``A^-1 J^T W C W J A^-1`` (``A = J^T W J``),
  valid whatever the weight: the target's and the model ensemble's noise both enter;
* a stop at the noise: when an accepted step is below 0.1 standard error of every parameter;
* 95 % intervals from each parameter's chi2 profile (the other re-optimized), with a robust
  factor for the weight (:func:`_profile`): linearized errors under-covered the truth when
  the curves fix mainly one combination (about the mean slip) of c0 and c1;
* identifiability: a parameter whose profile interval stays open (the scan ends inside the
  chi2 valley) or is wider than its scale (c0: its value; c1: c0 / <sigma_c^2>, the c1 that
  doubles the mean slip) is reported not identifiable, with the correlation of the two.

Measured on synthetic targets (tests/test_scalar.py, 8 x 8 cells, 16 realizations each, truth
c0 = 0.03, c1 = 0.01, 20 fits): the intervals cover c0 20 times, c1 18 times; c1 is reported
not identifiable in most fits (its interval reaches 0).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from femplast.errors import FemplastInputError

FIT_OBSERVABLES = ("stress", "tau_c_mean")
H = 0.5
SHRINK = 1.0
"""Shrinkage of the weight's covariance towards its diagonal (1: weighted least squares).
The inverse of a covariance estimated from about as many realizations as window means
overweights its noisiest directions, and the chi2 differences of the intervals with it; the
sandwich and the robust factor of :func:`_profile` carry the correlations instead."""
"""Finite-difference step, relative to each parameter's scale: avalanches make the curves
rough in (c0, c1) on small scales even with common random numbers (a step of 0.1 scale gave
Jacobians dominated by that roughness)."""
"""Curves a target may give (columns of a curves file, names of ensemble curves)."""


@dataclass
class CurveTarget:
    """Target curves on ``grid`` (gamma_ext): per observable either per-realization curves
    ``(R, len(grid))`` (``curves``; their spread gives the covariance) or the mean curve and
    its 1-sigma standard error per point (``means``, ``errors``)."""

    grid: np.ndarray
    curves: dict | None = None
    means: dict | None = None
    errors: dict | None = None

    @property
    def names(self) -> list[str]:
        src = self.curves if self.curves is not None else self.means
        return [q for q in FIT_OBSERVABLES if q in src]


def read_curves(path: str | Path) -> CurveTarget:
    """A target curves file: CSV (``#`` comment lines), columns ``gamma_ext``, ``stress`` and
    optionally ``stress_err``, ``tau_c_mean``, ``tau_c_mean_err`` (errors: 1-sigma standard
    errors of the mean curve; missing: 0)."""
    path = Path(path)
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    except OSError as exc:
        raise FemplastInputError("scalar.fit.curves", str(path),
                                 f"a readable file ({exc})") from None
    rows = list(csv.DictReader(lines))
    if not rows or "gamma_ext" not in rows[0] or "stress" not in rows[0]:
        raise FemplastInputError("scalar.fit.curves", str(path),
                                 "a CSV file with columns gamma_ext, stress[, stress_err, "
                                 "tau_c_mean, tau_c_mean_err]")
    try:
        col = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    except ValueError as exc:
        raise FemplastInputError("scalar.fit.curves", str(path), f"numbers only ({exc})") from None
    grid = col["gamma_ext"]
    if np.any(np.diff(grid) <= 0) or grid[0] < 0:
        raise FemplastInputError("scalar.fit.curves", str(path),
                                 "gamma_ext ascending from >= 0")
    means = {q: col[q] for q in FIT_OBSERVABLES if q in col}
    errors = {q: col.get(f"{q}_err", np.zeros(len(grid))) for q in means}
    return CurveTarget(grid, means=means, errors=errors)


def window_edges(n: int, windows: int) -> np.ndarray:
    """Index edges of ``windows`` contiguous windows over grid points 1 .. n-1 (the point at
    gamma_ext = 0 is the initial state, the same for every parameter)."""
    w = max(1, min(windows, n - 1))
    return np.unique(np.linspace(1, n, w + 1).round().astype(int))


def features(curves: dict, names, edges: np.ndarray) -> np.ndarray:
    """Window means of each observable, per realization: (R, len(names) (len(edges) - 1))."""
    width = np.diff(edges)
    return np.hstack([np.add.reduceat(np.asarray(curves[q], float)[:, :edges[-1]], edges[:-1],
                                      axis=1) / width for q in names])


def _mean_cov(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the rows and the covariance of that mean."""
    R = F.shape[0]
    C = np.cov(F, rowvar=False) / R if R > 1 else np.zeros((F.shape[1], F.shape[1]))
    return F.mean(axis=0), np.atleast_2d(C)


def _target_features(target: CurveTarget, edges: np.ndarray):
    if target.curves is not None:
        return _mean_cov(features(target.curves, target.names, edges))
    mean = features({q: target.means[q][None, :] for q in target.names}, target.names,
                    edges)[0]
    # without the target's realizations its covariance is unknown: the errors of a window
    # mean are taken as the window's mean error, fully correlated along each curve (a
    # realization's curve is high or low as a whole: conservative for the common shift that
    # c0 makes); different curves uncorrelated
    err = features({q: target.errors[q][None, :] for q in target.names}, target.names,
                   edges)[0]
    nw = len(edges) - 1
    C = np.zeros((len(err), len(err)))
    for b in range(len(target.names)):
        e = err[b * nw:(b + 1) * nw]
        C[b * nw:(b + 1) * nw, b * nw:(b + 1) * nw] = np.outer(e, e)
    return mean, C


class _Model:
    """The model's window means at (c0, c1): the same realizations at every call (common
    random numbers); evaluations counted and logged."""

    def __init__(self, model, runs, names, edges, log=None):
        self.model, self.runs, self.names, self.edges, self.log = model, runs, names, edges, log
        self.evals: list[dict] = []

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from femplast.scalar.model import ensemble

        r = self.runs
        curves = ensemble(self.model.with_slip(float(x[0]), float(x[1])), r.seed,
                          range(r.realizations), r.gamma_max, r.grid, r.comm)
        m, C = _mean_cov(features(curves, self.names, self.edges))
        self.evals.append(dict(c0=float(x[0]), c1=float(x[1])))
        if self.log:
            self.log(f"fit (curves): c0 = {x[0]:.5g}, c1 = {x[1]:.5g}")
        return m, C


def _jacobian(ev: _Model, x, free, h, lo) -> np.ndarray:
    """Central differences (one-sided at a bound) of the window means in the free parameters."""
    cols = []
    for j in free:
        xp, xm = x.copy(), x.copy()
        xp[j] += h[j]
        xm[j] = max(x[j] - h[j], lo[j])
        cols.append((ev(xp)[0] - ev(xm)[0]) / (xp[j] - xm[j]))
    return np.column_stack(cols)


def _sandwich(J, W, C):
    A = J.T @ W @ J
    Ai = np.linalg.pinv(A)
    return Ai @ J.T @ W @ C @ W @ J @ Ai


def fit_curves(model, runs, target: CurveTarget, parameters=("c0", "c1"),
               max_evaluations: int = 60, windows: int = 8, log=None) -> dict:
    """Fit ``parameters`` (c0, c1 or both) of the slip law to the target curves (module doc).

    Args:
        model: the :class:`femplast.scalar.model.ScalarModel` (its c0, c1: the start).
        runs: :class:`femplast.scalar.model.FitRuns` on ``target.grid`` (seed, realizations,
            gamma_max, comm).
        target: the :class:`CurveTarget`.
        parameters: the fitted parameters; the others stay at the model's values.
        max_evaluations: budget of ensemble evaluations.
        windows: window means per observable.

    Returns:
        c0, c1, their 1-sigma errors and 95 % half-widths, covariance, correlation,
        ``identifiable`` per parameter, chi2 and its degrees of freedom, the evaluations.
    """
    bad = [p for p in parameters if p not in ("c0", "c1")]
    if bad or not parameters:
        raise FemplastInputError("scalar.fit.parameters", list(parameters),
                                 "a non-empty subset of [c0, c1]")
    free = [("c0", "c1").index(p) for p in parameters]
    m2 = float(model.p_i.moments()[1])
    edges = window_edges(len(target.grid), windows)
    t, Ct = _target_features(target, edges)
    ev = _Model(model, runs, target.names, edges, log)
    x = np.array([model.c0 if model.c0 > 0 else 0.03, model.c1])
    lo = np.array([1e-6, 0.0])

    def scale(x):
        return np.array([max(x[0], 1e-3), max(x[0], 1e-3) / m2])

    m, Cm = ev(x)
    C0 = Cm + Ct
    Cw = SHRINK * np.diag(np.diag(C0)) + (1 - SHRINK) * C0  # invertible with few realizations
    W = np.linalg.inv(Cw + 1e-12 * np.trace(Cw) * np.eye(len(t)) / len(t))
    chi = float((m - t) @ W @ (m - t))
    lam, J, converged = 1e-2, None, False
    per_iter = 1 + 2 * len(free)
    while len(ev.evals) + per_iter <= max_evaluations:
        J = _jacobian(ev, x, free, H * scale(x), lo)
        A = J.T @ W @ J
        g = J.T @ W @ (m - t)
        sig = np.sqrt(np.maximum(np.diag(_sandwich(J, W, Cm + Ct)), 0.0))
        dx = -np.linalg.solve(A + lam * np.diag(np.diag(A)) + 1e-30 * np.eye(len(free)), g)
        dx = np.clip(dx, -2 * scale(x)[free], 2 * scale(x)[free])
        xn = x.copy()
        xn[free] = np.maximum(x[free] + dx, lo[free])
        mn, Cn = ev(xn)
        chin = float((mn - t) @ W @ (mn - t))
        small = bool(np.all(np.abs(xn[free] - x[free]) <= 0.1 * sig))
        if chin <= chi:
            x, m, Cm, chi, lam = xn, mn, Cn, chin, max(lam / 3, 1e-6)
            if small:  # below the noise: further steps mean nothing
                converged = True
                break
        else:
            lam *= 4
            if small and lam > 1e3:  # no descent left above the noise
                converged = True
                break
    if J is None:
        raise FemplastInputError("scalar.fit.max_evaluations", max_evaluations,
                                 f">= {1 + per_iter} for {len(free)} parameter(s)")
    if not converged:  # the Jacobian at the final point
        J = _jacobian(ev, x, free, H * scale(x), lo)
    cov = _sandwich(J, W, Cm + Ct)
    chi2 = _Chi2(ev, t, W)
    chi2.best = chi
    limits = {j: _profile(chi2, x, free, j, J, W, cov, scale(x), lo, len(t))
              for j in free}
    return _report(x, free, cov, scale(x), chi2.best, len(t), ev, runs, converged, limits)


class _Chi2:
    """chi2 of the model's window means against the target's, with the fit's weight; a run
    without a stable state (runaway avalanche) counts as infinitely bad."""

    def __init__(self, ev, t, W):
        self.ev, self.t, self.W, self.best = ev, t, W, math.inf

    def __call__(self, x) -> float:
        return self.residual(x)[0]

    def residual(self, x) -> tuple[float, np.ndarray | None]:
        try:
            r = self.ev(x)[0] - self.t
        except RuntimeError:
            return math.inf, None
        c = float(r @ self.W @ r)
        self.best = min(self.best, c)
        return c, r

    def profile_point(self, x, others, Jk, lo, newton: int = 2) -> float:
        """chi2 minimized over the ``others`` parameters (Gauss-Newton steps with their
        Jacobian columns ``Jk``), the profiled parameter fixed."""
        c, r = self.residual(x)
        if not others or r is None:
            return c
        A = Jk.T @ self.W @ Jk
        for _ in range(newton):
            xn = x.copy()
            xn[others] = np.maximum(x[others] - np.linalg.solve(A, Jk.T @ self.W @ r),
                                    lo[others])
            cn, rn = self.residual(xn)
            if not cn < c:
                break
            x, c, r = xn, cn, rn
        return c


def _profile(chi2, x, free, j, J, W, cov, scale, lo, nfeat, steps: int = 6) -> tuple:
    """95 % interval of parameter ``j`` from its chi2 profile (the other parameter
    re-optimized at each value, from the valley of the linearized fit): the values where chi2
    exceeds its minimum by 3.84 times max(1, chi2_min / dof) times the robust factor
    ``kappa``. Where the curves do not constrain the parameter (a flat valley), the interval
    reaches the scan's end (``steps`` steps of max(sigma, scale / 4)) or the bound: it is
    then reported as not identifiable. Returns (low, high, open_low, open_high).
    """
    i = free.index(j)
    A = J.T @ W @ J
    others = [k for k in free if k != j]
    Jk = J[:, [free.index(k) for k in others]]
    v = np.zeros(2)
    v[j] = 1.0
    for kk, k in enumerate(free):
        if k != j and A[kk, kk] > 0:
            v[k] = -A[kk, i] / A[kk, kk]
    d = max(math.sqrt(max(cov[i, i], 0.0)), 0.25 * scale[j])
    dof = max(nfeat - len(free), 1)
    # the weight is not the inverse covariance (shrunk): chi2 differences are rescaled by the
    # ratio of the sandwich variance to the variance the weight implies (robust LR test)
    naive = np.linalg.pinv(A)[i, i]
    kappa = max(cov[i, i] / naive, 1.0) if naive > 0 else 1.0
    out = []
    for sgn in (-1.0, 1.0):
        prev_t, prev_c, end, opened = 0.0, chi2.best, 0.0, True
        for n in range(1, steps + 1):
            tt = sgn * n * d
            if x[j] + tt < lo[j]:  # the bound: the interval reaches it
                end, opened = lo[j] - x[j], True
                break
            xp = np.maximum(x + tt * v, lo)
            c = chi2.profile_point(xp, others, Jk, lo)
            level = chi2.best + 3.84 * kappa * max(1.0, chi2.best / dof)
            if c > level:
                f = 1.0 if not math.isfinite(c) else (level - prev_c) / (c - prev_c)
                end, opened = prev_t + min(max(f, 0.0), 1.0) * (tt - prev_t), False
                break
            prev_t, prev_c, end = tt, c, tt
        out.append((x[j] + end, opened))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def _report(x, free, cov, scale, chi, nfeat, ev, runs, converged, limits) -> dict:
    names = ["c0", "c1"]
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    d = np.outer(err, err)
    corr = np.divide(cov, d, out=np.zeros_like(cov), where=d > 0)
    out = dict(method="curves", parameters=[names[j] for j in free], c0=float(x[0]),
               c1=float(x[1]), covariance=cov.tolist(), correlation=corr.tolist(),
               chi2=chi, dof=int(nfeat - len(free)), converged=bool(converged),
               realizations=runs.realizations, seed=runs.seed, evaluations=ev.evals,
               identifiable={})
    for i, j in enumerate(free):
        lo95, hi95, open_lo, open_hi = limits[j]
        out[f"{names[j]}_err"] = float(err[i])  # linearized (sandwich)
        out[f"{names[j]}_interval95"] = [float(lo95), float(hi95)]  # profile
        out[f"{names[j]}_err95"] = float(0.5 * (hi95 - lo95))
        # open at the scan's end (the bound 0 of c1 is a legitimate end)
        unbounded = open_hi or (open_lo and lo95 > 1e-5)
        out["identifiable"][names[j]] = bool(not unbounded and hi95 - lo95 < scale[j])
    if len(free) == 2 and abs(corr[0, 1]) > 0.95:
        out["degenerate"] = (f"c0 and c1 correlated {corr[0, 1]:+.3f}: the curves fix "
                             "one combination (about the mean slip) only")
    if not all(out["identifiable"].values()):
        out["warning"] = ("not identifiable from these curves: "
                          + ", ".join(k for k, v in out["identifiable"].items() if not v)
                          + " (its 95 % interval is open or wider than its scale)")
    if not math.isfinite(chi):
        out["warning"] = "the fit diverged (chi2 not finite)"
    return out


def check(case) -> None:
    """scalar.fit.curves: one fit kind, a readable curves file inside the loaded strain
    range, the fitted parameters named."""
    from femplast.config.case import resolve_path

    if case.model != "scalar" or case.scalar.fit.curves is None:
        return
    f = case.scalar.fit
    if f.flow_stress is not None:
        raise FemplastInputError("scalar.fit.flow_stress", f.flow_stress,
                                 "null with scalar.fit.curves (one fit: curves or stresses)")
    if not f.parameters or any(p not in ("c0", "c1") for p in f.parameters) \
            or len(set(f.parameters)) != len(f.parameters):
        raise FemplastInputError("scalar.fit.parameters", f.parameters,
                                 "a non-empty subset of [c0, c1]")
    target = read_curves(resolve_path(case, f.curves))
    if target.grid[-1] > case.loading.gamma_max + 1e-12 or len(target.grid) < 3:
        raise FemplastInputError("scalar.fit.curves", f.curves,
                                 f">= 3 points with gamma_ext <= loading.gamma_max = "
                                 f"{case.loading.gamma_max:g}")
