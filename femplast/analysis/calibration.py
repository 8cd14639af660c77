"""Calibration against reference data (tensorial paper, sec. 4 and 5).

Reference data
==============
A reference set is a directory of CSV files (``#`` lines are comments; the first comment
lines are the set's header and must say where the data come from, e.g. ``SYNTHETIC``):

``macro.csv`` (required)
    Stationary-state probability densities of the external stress ``sigma_xy``, the stress
    drops of avalanches ``drop_xy`` (positive drops only) and the stress increments
    ``increment_xy``, the elastic rise between two avalanches (:func:`avalanche_samples`)
    (resolved on the loading direction; xy for alpha_ext = 0), either as histograms, columns
    ``quantity,left,right,density`` (bins of one quantity contiguous and ascending, density
    normalized over *all* samples: mass outside the bins is allowed), or as samples,
    columns ``quantity,value`` (binned by :func:`default_edges`).
``local.csv`` (optional; needed for the mesoscale errors)
    Patch statistics, one row per (state, R, alpha): columns ``state`` (``initial`` or
    ``stationary``), ``R``, ``alpha`` (degrees), ``count`` and ``<q>_mean, <q>_std`` for
    ``q`` in ``tau_i, tau_c, dtau_c, delta_tau_c`` (``von_mises`` optional).
``rms.csv`` (optional)
    The rms deviation r of the external stress (eq. 10): columns ``dgamma,r``.
``finite_size.csv`` (optional)
    Columns ``L,std_sigma_xy`` (``std_sigma_xy_err`` optional).

Error functions
===============
* ``L[P] = 1 - integral min(P_model, P_ref)`` (eq. 8) on the reference's bins;
* ``L[F] = |1 - F_model / F_ref|`` (eq. 9);
* ``L_macro`` = mean of L[P] over the three macroscale densities;
* ``L_meso_plus`` (``L_meso_minus``) = mean of the 8 L[F] (mean and std of tau_i, tau_c,
  dtau_c, delta_tau_c) in the stationary state at alpha = 0 (90) degrees at the largest patch
  size R of the model (the reference row with the nearest R);
* ``L_stat = (L_macro + (L_meso_plus + L_meso_minus) / 2) / 2``; without mesoscale errors
  ``L_stat = L_macro`` (documented fallback, so the calibration table is never empty).

Emergent analyses (sec. 5): :func:`rms_deviation` (eq. 10), :func:`finite_size_fit`
(std(Sigma_xy) ~ L^a with the error of a), :func:`drop_vs_yield` (<delta tau_c> versus
<tau_c> per state and direction). Optimum: :func:`best_per_k` and :func:`parabola_optimum`
(sec. 4.2).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from femplast.angles import wrap_orientation_deg

MACRO_QUANTITIES = ("sigma_xy", "drop_xy", "increment_xy")
LOCAL_QUANTITIES = ("tau_i", "tau_c", "dtau_c", "delta_tau_c")
LOCAL_COLUMNS = tuple(f"{q}_{s}" for q in LOCAL_QUANTITIES for s in ("mean", "std"))
ERROR_COLUMNS = ("L_sigma_xy", "L_drop_xy", "L_increment_xy", "L_macro", "L_meso_plus",
                 "L_meso_minus", "L_stat")


# ============================================================================ error functions
def avalanche_samples(before: np.ndarray, after: np.ndarray, gamma: np.ndarray,
                      gamma_from: float) -> dict[str, np.ndarray]:
    """Stationary samples of the avalanche records (tensorial paper, Fig. 2d, sec. 4 and 6).

    The stress increment Delta Sigma_xy is the elastic rise of the external stress on the
    loading branch between two avalanches, ``before[i] - after[i-1]`` (not the per-step
    difference of the stress, which is G dgamma on almost every step); the drop of avalanche i
    is ``before[i] - after[i]``. An avalanche counts in the stationary state when its
    ``gamma > gamma_from``; an increment when both avalanches that bound it do. Negative
    drops (the resolved stress rises through an avalanche, ~0.1 % of them) are kept and
    flagged: the densities exclude them, as the paper does, the means keep them (so that in
    the stationary state the mean rise equals the mean drop up to the boundary terms).

    Args:
        before, after: resolved external stress just before / after each avalanche, (n,).
        gamma: the external strain of each avalanche, (n,).
        gamma_from: start of the stationary state (``loading.stationary_from``).

    Returns:
        ``drops`` (all stationary drops), ``negative`` (their flag), ``increments``.
    """
    before, after = np.asarray(before, float), np.asarray(after, float)
    sel = np.asarray(gamma, float) > gamma_from
    drops = (before - after)[sel]
    inc = (before[1:] - after[:-1])[sel[:-1] & sel[1:]]
    return dict(drops=drops, negative=drops < 0.0, increments=inc)


def overlap_error(p: np.ndarray, q: np.ndarray, widths: np.ndarray) -> float:
    """L[P] = 1 - sum_b min(p_b, q_b) w_b (eq. 8) for two densities on the same bins."""
    p, q, w = (np.asarray(a, float) for a in (p, q, widths))
    return float(1.0 - np.sum(np.minimum(p, q) * w))


def density(values: np.ndarray, edges: np.ndarray, total: int | None = None) -> np.ndarray:
    """Density of ``values`` on ``edges`` normalized by ``total`` samples (default: all of
    them, so mass outside the bins lowers the integral)."""
    counts = np.histogram(np.asarray(values, float), edges)[0]
    return counts_density(counts, len(values) if total is None else total, edges)


def counts_density(counts: np.ndarray, total: int, edges: np.ndarray) -> np.ndarray:
    w = np.diff(np.asarray(edges, float))
    return np.asarray(counts, float) / (max(int(total), 1) * w)


def overlap_error_samples(a: np.ndarray, b: np.ndarray, edges: np.ndarray | None = None,
                          bins: int = 50) -> float:
    """L[P] between two samples, histogrammed on ``edges`` (default: ``bins`` equal bins over
    the union of both ranges, so L = 1 exactly for disjoint samples)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if edges is None:
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
    return overlap_error(density(a, edges), density(b, edges), np.diff(edges))


def relative_error(model: float, ref: float) -> float:
    """L[F] = |1 - F_model / F_ref| (eq. 9); 0 if both vanish, inf if only F_ref does."""
    model, ref = float(model), float(ref)
    if ref == 0.0:
        return 0.0 if model == 0.0 else math.inf
    return abs(1.0 - model / ref)


def stat_error(L_macro: float, L_meso_plus: float | None, L_meso_minus: float | None) -> float:
    """L_stat = (L_macro + (L+ + L-) / 2) / 2 (sec. 4.2); L_macro without mesoscale errors."""
    if L_meso_plus is None or L_meso_minus is None or not (
            np.isfinite(L_meso_plus) and np.isfinite(L_meso_minus)):
        return float(L_macro)
    return 0.5 * (L_macro + 0.5 * (L_meso_plus + L_meso_minus))


# ============================================================================ reference data
@dataclass
class Histogram:
    edges: np.ndarray
    density: np.ndarray

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.edges)

    @property
    def mass(self) -> float:
        return float(np.sum(self.density * self.widths))


@dataclass
class Reference:
    """A reference set (see the module docstring for the files)."""

    path: Path | None
    header: list[str]
    macro: dict[str, Histogram]
    local: list[dict] | None = None
    rms: dict[str, np.ndarray] | None = None
    finite_size: dict[str, np.ndarray] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return any("SYNTHETIC" in h.upper() for h in self.header)

    def local_rows(self, state: str, alpha: float, R: float | None = None) -> dict | None:
        """The local row of (state, alpha) at the R nearest to ``R`` (largest R if None)."""
        rows = [r for r in (self.local or []) if r["state"] == state
                and _same_orientation(r["alpha"], alpha)]
        if not rows:
            return None
        if R is None:
            return max(rows, key=lambda r: r["R"])
        return min(rows, key=lambda r: (abs(r["R"] - R), -r["R"]))


def _same_orientation(a: float, b: float) -> bool:
    """Pure-shear orientations ``a``, ``b`` (degrees) equal modulo 180."""
    return abs(wrap_orientation_deg(a - b)) < 1e-6




def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    header, lines = [], []
    with open(path, newline="") as fh:
        for ln in fh:
            s = ln.strip()
            if not s:
                continue
            if s.startswith("#"):
                if not lines:
                    header.append(s.lstrip("#").strip())
                continue
            lines.append(ln)
    return header, list(csv.DictReader(lines))


class ReferenceError(ValueError):
    """A reference set that does not follow the documented format."""


def default_edges(quantity: str, values: np.ndarray, bins: int = 40) -> np.ndarray:
    """Bins of a reference quantity built from its samples, covering all of them (the
    reference density then integrates to 1): log-spaced for drops (heavy tailed), linear
    otherwise; for sigma_xy widened by half the sample range on each side (same bin width),
    so shifted model densities still overlap partially."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if quantity == "drop_xy":
        v = v[v > 0]
        return np.geomspace(v.min() * 0.999, v.max() * 1.001, bins + 1)
    lo, hi = v.min(), v.max()
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if quantity == "increment_xy":
        pad = 0.02 * (hi - lo)
        return np.linspace(lo - pad, hi + pad, bins + 1)
    w = (hi - lo) / bins
    extra = int(math.ceil(0.5 * bins))
    return lo + w * np.arange(-extra, bins + extra + 1)


def read_reference(path: str | Path) -> Reference:
    """Read a reference directory (``macro.csv`` and the optional files); a malformed set
    raises :class:`ReferenceError`."""
    try:
        return _read_reference(Path(path))
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, ReferenceError):
            raise
        raise ReferenceError(f"{path}: malformed reference data ({exc!r})") from None


def _read_reference(path: Path) -> Reference:
    mfile = path / "macro.csv"
    if not mfile.is_file():
        raise ReferenceError(f"{path}: no macro.csv (a reference set is a directory with "
                             "macro.csv and optionally local.csv, rms.csv, finite_size.csv)")
    header, rows = _read_csv(mfile)
    if not rows:
        raise ReferenceError(f"{mfile}: no data rows")
    cols = set(rows[0])
    macro = {}
    for q in MACRO_QUANTITIES:
        qr = [r for r in rows if r["quantity"].strip() == q]
        if not qr:
            raise ReferenceError(f"{mfile}: no rows for quantity {q!r}")
        if {"left", "right", "density"} <= cols:
            left = np.array([float(r["left"]) for r in qr])
            right = np.array([float(r["right"]) for r in qr])
            if np.any(np.diff(left) <= 0) or not np.allclose(left[1:], right[:-1]):
                raise ReferenceError(f"{mfile}: bins of {q} are not contiguous and ascending")
            edges = np.append(left, right[-1])
            macro[q] = Histogram(edges, np.array([float(r["density"]) for r in qr]))
        elif "value" in cols:
            v = np.array([float(r["value"]) for r in qr])
            e = default_edges(q, v)
            macro[q] = Histogram(e, density(v, e))
        else:
            raise ReferenceError(f"{mfile}: columns quantity,left,right,density (histograms) "
                                 "or quantity,value (samples) expected")
    ref = Reference(path, header, macro)
    lf = path / "local.csv"
    if lf.is_file():
        _, lrows = _read_csv(lf)
        need = {"state", "R", "alpha", *LOCAL_COLUMNS}
        if lrows and not need <= set(lrows[0]):
            raise ReferenceError(f"{lf}: columns {sorted(need - set(lrows[0]))} missing")
        ref.local = []
        for r in lrows:
            row = {"state": r["state"].strip()}
            for k, v in r.items():
                if k != "state" and v not in (None, ""):
                    row[k] = float(v)
            ref.local.append(row)
    rf = path / "rms.csv"
    if rf.is_file():
        _, rr = _read_csv(rf)
        ref.rms = {"dgamma": np.array([float(r["dgamma"]) for r in rr]),
                   "r": np.array([float(r["r"]) for r in rr])}
    ff = path / "finite_size.csv"
    if ff.is_file():
        _, fr = _read_csv(ff)
        ref.finite_size = {k: np.array([float(r[k]) for r in fr]) for k in fr[0]}
    return ref


def write_reference(path: str | Path, header: list[str], macro: dict[str, Histogram],
                    local: list[dict] | None = None, rms: dict | None = None,
                    finite_size: dict | None = None) -> Path:
    """Write a reference set in the documented format; ``header`` lines go on top of every
    file (as ``#`` comments)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    top = "".join(f"# {h}\n" for h in header)

    def write(name, cols, rows):
        with open(path / name, "w", newline="") as fh:
            fh.write(top)
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(cols)
            for r in rows:
                w.writerow([_fmt(v) for v in r])

    rows = []
    for q in MACRO_QUANTITIES:
        h = macro[q]
        rows += [(q, a, b, d) for a, b, d in zip(h.edges[:-1], h.edges[1:], h.density,
                                                 strict=True)]
    write("macro.csv", ("quantity", "left", "right", "density"), rows)
    if local:
        extra = [c for c in ("von_mises_mean", "von_mises_std") if c in local[0]]
        cols = ("state", "R", "alpha", "count", *LOCAL_COLUMNS, *extra)
        write("local.csv", cols, [[r.get(c, "") for c in cols] for r in local])
    if rms is not None:
        write("rms.csv", ("dgamma", "r"), zip(rms["dgamma"], rms["r"], strict=True))
    if finite_size is not None:
        cols = [c for c in ("L", "std_sigma_xy", "std_sigma_xy_err") if c in finite_size]
        write("finite_size.csv", cols, zip(*(finite_size[c] for c in cols), strict=True))
    return path


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


# ============================================================================ model vs reference
def macro_errors(counts: dict[str, np.ndarray], totals: dict[str, int],
                 ref: Reference) -> dict[str, float]:
    """L[P] per macroscale density from model histogram counts on the reference bins (and the
    total number of model samples of each quantity), and their mean L_macro."""
    out = {}
    for q in MACRO_QUANTITIES:
        h = ref.macro[q]
        if totals.get(q, 0) <= 0:
            out[f"L_{q}"] = 1.0
            continue
        p = counts_density(counts[q], totals[q], h.edges)
        out[f"L_{q}"] = overlap_error(p, h.density, h.widths)
    out["L_macro"] = float(np.mean([out[f"L_{q}"] for q in MACRO_QUANTITIES]))
    return out


def local_entry(entries: list[dict], state: str, alpha: float, R: float | None = None
                ) -> dict | None:
    """From femplast.analysis.patches summary entries (``{state, R, alpha, tau_c: {mean, std}, ..}``
    or flat ``tau_c_mean``), the flat row of (state, alpha) at the largest R (or nearest R)."""
    rows = [_flat(e) for e in entries if e.get("state") == state
            and _same_orientation(float(e.get("alpha", e.get("alpha_deg", 0.0))), alpha)]
    rows = [r for r in rows if np.isfinite(r.get("tau_c_mean", np.nan))]
    if not rows:
        return None
    if R is None:
        return max(rows, key=lambda r: r["R"])
    return min(rows, key=lambda r: abs(r["R"] - R))


def _flat(e: dict) -> dict:
    row = {"state": e.get("state"), "R": float(e["R"]),
           "alpha": float(e.get("alpha", e.get("alpha_deg", 0.0))),
           "count": float(e.get("count", np.nan))}
    for q in (*LOCAL_QUANTITIES, "von_mises"):
        v = e.get(q)
        if isinstance(v, dict):
            row[f"{q}_mean"], row[f"{q}_std"] = float(v["mean"]), float(v["std"])
        for s in ("mean", "std"):
            if f"{q}_{s}" in e:
                row[f"{q}_{s}"] = float(e[f"{q}_{s}"])
    return row


def meso_errors(entries: list[dict], ref: Reference, state: str = "stationary",
                prefix: str = "meso") -> dict[str, float]:
    """L[F] of the 8 local magnitudes in ``state`` at alpha = 0 (L_<prefix>_plus) and 90
    degrees (L_<prefix>_minus), at the model's largest patch size and the reference's nearest
    R; NaN when either side lacks the row. ``state = "initial", prefix = "quench"``: the
    quenched glass of the KMC preparation against the reference's initial rows (the
    temperature calibration of appendix A.3; also ``L_quench``, the mean of the two)."""
    out = {}
    tag = "" if prefix == "meso" else f"_{prefix}"
    for name, alpha in (("plus", 0.0), ("minus", 90.0)):
        m = local_entry(entries, state, alpha)
        r = None if m is None else ref.local_rows(state, alpha, m["R"])
        if m is None or r is None:
            out[f"L_{prefix}_{name}"] = math.nan
            continue
        errs = []
        for c in LOCAL_COLUMNS:
            e = relative_error(m[c], r[c])
            out[f"L_{c}{tag}_{name}"] = e
            errs.append(e)
        out[f"L_{prefix}_{name}"] = float(np.mean(errs))
        out[f"R_model{tag}_{name}"], out[f"R_reference{tag}_{name}"] = m["R"], r["R"]
    if prefix != "meso":
        out[f"L_{prefix}"] = 0.5 * (out[f"L_{prefix}_plus"] + out[f"L_{prefix}_minus"])
    return out


# ============================================================================ optimum (sec. 4.2)
def best_per_k(table: dict[str, np.ndarray], by: str = "L_stat") -> dict[str, np.ndarray]:
    """For each k the row with the lowest ``by`` (rows where it is NaN are ignored)."""
    k = np.asarray(table["k"], float)
    idx = []
    for kv in np.unique(k):
        m = np.flatnonzero((k == kv) & np.isfinite(table[by]))
        if len(m):
            idx.append(m[np.argmin(np.asarray(table[by])[m])])
    idx = np.asarray(idx, int)
    return {c: np.asarray(v)[idx] for c, v in table.items()}


def parabola_optimum(k: np.ndarray, L: np.ndarray, others: dict[str, np.ndarray] | None = None,
                     half_width: int | None = None) -> dict:
    """Fit L = a + b k + c k^2 to the per-k best errors around their minimum (``half_width``
    points on each side, default max(2, n // 4)); the vertex gives k_hat and L_hat, and the
    per-k best values of ``others`` (e.g. lambda, chi) are linearly interpolated at k_hat.

    Without a minimum (c <= 0, fewer than 3 values of k) k_hat is the grid minimum
    (``fit: "grid"``); a vertex outside the fitted k range is clipped to it (``clipped``).
    """
    k, L = np.asarray(k, float), np.asarray(L, float)
    ok = np.isfinite(L)
    k, L = k[ok], L[ok]
    o = np.argsort(k)
    k, L = k[o], L[o]
    others = {n: np.asarray(v, float)[ok][o] for n, v in (others or {}).items()}
    if len(k) == 0:
        return dict(fit="none")
    i = int(np.argmin(L))
    out = dict(fit="grid", k_hat=float(k[i]), L_hat=float(L[i]), k_grid_best=float(k[i]),
               L_grid_best=float(L[i]), clipped=False)
    if len(k) >= 3:
        hw = half_width or max(2, len(k) // 4)
        lo, hi = max(0, i - hw), min(len(k), i + hw + 1)
        if hi - lo < 3:
            lo, hi = (0, 3) if lo == 0 else (len(k) - 3, len(k))
        coef = np.polyfit(k[lo:hi], L[lo:hi], 2)
        if coef[0] > 0:
            kh = -coef[1] / (2 * coef[0])
            clipped = not (k[lo] <= kh <= k[hi - 1])
            kh = float(np.clip(kh, k[lo], k[hi - 1]))
            out.update(fit="parabola", k_hat=kh, L_hat=float(np.polyval(coef, kh)),
                       coefficients=dict(a=float(coef[2]), b=float(coef[1]), c=float(coef[0])),
                       k_fit_range=[float(k[lo]), float(k[hi - 1])], clipped=clipped)
    for n, v in others.items():
        out[f"{n}_hat"] = float(np.interp(out["k_hat"], k, v))
    return out


# ============================================================================ emergent (sec. 5)
class RmsAccumulator:
    """r(dgamma) of eq. 10 accumulated over realizations: for windows of ``w`` consecutive
    loading steps (dgamma = (w - 1) d(gamma_ext)), the std of Sigma over every window position
    in the stationary regime, averaged over positions and realizations."""

    def __init__(self, widths):
        self.widths = np.asarray(widths, int)
        self.sum = np.zeros(len(self.widths))
        self.count = np.zeros(len(self.widths))
        self.s1 = self.s2 = 0.0
        self.n = 0

    def add(self, s: np.ndarray):
        s = np.asarray(s, float)
        c1 = np.concatenate([[0.0], np.cumsum(s)])
        c2 = np.concatenate([[0.0], np.cumsum(s * s)])
        for i, w in enumerate(self.widths):
            if w > len(s) or w < 2:
                continue
            m1 = (c1[w:] - c1[:-w]) / w
            m2 = (c2[w:] - c2[:-w]) / w
            sd = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
            self.sum[i] += sd.sum()
            self.count[i] += len(sd)
        self.s1 += float(s.sum())
        self.s2 += float((s * s).sum())
        self.n += len(s)

    def result(self, dgamma: float) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)
        mean = self.s1 / max(self.n, 1)
        return dict(dgamma=((self.widths - 1) * dgamma).tolist(), r=r.tolist(),
                    std=math.sqrt(max(self.s2 / max(self.n, 1) - mean * mean, 0.0)))


def rms_widths(n_steps: int, dgamma: float, ref_dgamma=None, num: int = 16) -> np.ndarray:
    """Window widths in steps: the reference's dgamma values if given, else ``num``
    log-spaced widths from 2 to n_steps / 2."""
    if ref_dgamma is not None and len(ref_dgamma):
        return np.maximum(np.rint(np.asarray(ref_dgamma) / dgamma).astype(int) + 1, 2)
    return np.unique(np.geomspace(2, max(n_steps // 2, 3), num).astype(int))


def rms_deviation(series: list[np.ndarray], dgamma: float, widths=None) -> dict:
    """r(dgamma) (eq. 10) of per-step stress series of the stationary regime."""
    n = min(len(s) for s in series)
    acc = RmsAccumulator(rms_widths(n, dgamma) if widths is None else widths)
    for s in series:
        acc.add(s)
    return acc.result(dgamma)


def pooled_std(series: list[np.ndarray]) -> tuple[float, float]:
    """Std of the pooled samples and its jackknife error over the series (realizations)."""
    s1 = np.array([np.sum(s) for s in series], float)
    s2 = np.array([np.sum(np.square(s)) for s in series], float)
    n = np.array([len(s) for s in series], float)
    return std_with_jackknife(s1, s2, n)


def std_with_jackknife(s1, s2, n) -> tuple[float, float]:
    """Pooled std from per-realization sums (sum, sum of squares, count) and its
    leave-one-realization-out jackknife error (NaN with fewer than 2 realizations)."""
    s1, s2, n = (np.asarray(a, float) for a in (s1, s2, n))

    def std(a, b, c):
        m = a / c
        return np.sqrt(np.maximum(b / c - m * m, 0.0))

    full = float(std(s1.sum(), s2.sum(), n.sum()))
    R = len(n)
    if R < 2:
        return full, math.nan
    loo = std(s1.sum() - s1, s2.sum() - s2, n.sum() - n)
    err = math.sqrt((R - 1) / R * np.sum((loo - loo.mean()) ** 2))
    return full, float(err)


def finite_size_fit(L, std, err=None) -> dict:
    """Least-squares fit of log std = log A + a log L (weighted by the relative errors when
    given). ``exponent_err`` is the standard error of a, scaled up by sqrt(chi2/dof) when
    the scatter exceeds the errors (or from the residuals alone without errors)."""
    L, std = np.asarray(L, float), np.asarray(std, float)
    x, y = np.log(L), np.log(std)
    n = len(x)
    if n < 2:
        return dict(exponent=math.nan, exponent_err=math.nan, amplitude=math.nan)
    if err is not None and np.all(np.isfinite(err)) and np.all(np.asarray(err) > 0):
        sig = np.asarray(err, float) / std
        weighted = True
    else:
        sig = np.ones(n)
        weighted = False
    w = 1.0 / sig**2
    S, Sx, Sy = w.sum(), (w * x).sum(), (w * y).sum()
    Sxx, Sxy = (w * x * x).sum(), (w * x * y).sum()
    D = S * Sxx - Sx * Sx
    a = (S * Sxy - Sx * Sy) / D
    b = (Sxx * Sy - Sx * Sxy) / D
    res = y - (a * x + b)
    chi2 = float((w * res**2).sum())
    dof = n - 2
    var_a = S / D
    if not weighted:
        var_a *= chi2 / dof if dof > 0 else math.nan
    elif dof > 0 and chi2 / dof > 1:
        var_a *= chi2 / dof
    return dict(exponent=float(a), exponent_err=float(math.sqrt(var_a)),
                amplitude=float(math.exp(b)), chi2=chi2, dof=dof, weighted=weighted)


def drop_vs_yield(entries: list[dict], R: float | None = None,
                  alphas=(0.0, 90.0)) -> list[dict]:
    """<delta tau_c> versus <tau_c> (paper Fig. 5c) per state (initial = quench,
    stationary) and direction alpha, at the largest R (or the nearest to ``R``); accepts
    femplast.analysis.patches summary entries or reference local rows."""
    out = []
    states = []
    for e in entries:
        if e.get("state") in ("initial", "stationary") and e["state"] not in states:
            states.append(e["state"])
    for s in states:
        for a in alphas:
            r = local_entry(entries, s, a, R)
            if r is not None:
                out.append(dict(state=s, alpha=a, R=r["R"], tau_c_mean=r["tau_c_mean"],
                                delta_tau_c_mean=r["delta_tau_c_mean"]))
    return out
