"""Localization observables of the plastic-strain field: windowed LOC (scalar paper, eq. 13),
its post-yield maximum, and shear bands (orientation, position, width, persistence), for the
scalar and the tensorial model alike.

Definitions (one place; summary.json ``localization``, docs/case-reference.md section
``localization``):

* **Field.** The *plastic* strain only, cell by cell on the N x N lattice (``[iy, ix]``, cell
  ``iy * N + ix``): the scalar model's tensorial ``eps_p``; the tensorial model's plastic
  strain resolved on the loading orientation, ``sin(2 alpha) (eps_yy - eps_xx) / 2 +
  cos(2 alpha) eps_xy`` (``eps_xy`` for simple shear); triangles: the mean of the two
  triangles of a square. Neither the frozen-in stress nor the elastic strain enters, so LOC is
  undefined (``null``) until the first slip instead of being dominated by the frozen stress.
* **Windows.** Snapshots of the field at ``gamma_ext = k w`` (``w = localization.window``,
  the stable state after every avalanche that starts at or below that strain); window ``k``
  is the plastic strain accumulated between snapshots ``k`` and ``k + 1`` (``window =
  gamma_max``: one window, the cumulative field from ``gamma_ext = 0``). With
  ``localization.stride`` the snapshots are every stride and window k spans snapshots k to
  k + window / stride (sliding windows: a finer strain of the maximum, same noise).
  Windowed LOC has a shot-noise floor: M slips of exponential amplitude (mean eps0) in
  distinct cells give ``6 N / M``, and a window of steady flow holds ``M ~ N^2 window /
  (2 eps0)`` slips, so the floor is ``~ 12 eps0 / (N window)`` (0.13 for the shipped scalar
  cases at N = 16, window 0.2); a band one cell wide gives 1, b cells wide ``1 / b``.
* **LOC** (eq. 13): ``LOC(e) = N sum e^4 / (sum e^2)^2`` over the N^2 cells
  (:func:`femplast.scalar.model.loc_index`): 1 for one band one cell wide of uniform strain,
  ``1/N`` for a uniform field, ``N / M`` for M equal, isolated slips (so a window with few
  slips is large whatever the glass: hence the yield criterion below).
* **Yield.** The plastic rate of window k, ``r_k = 2 d<eps_p> / d(gamma_ext)`` (the share of
  the imposed shear carried plastically: 0 elastic, 1 steady flow, > 1 softening). Windows
  from the first one with ``r_k >= localization.yield_rate`` on are *post-yield*; LOC's
  maximum and its strain (the window's centre) are taken over them only. Earlier windows are
  kept in the per-realization curves but not summarised. The stress peak of each realization
  (maximum of its stress-strain curve) is reported next to it, so whether the maximum comes
  after the peak is a result, not a definition.
* **Band** (:func:`detect_band`). The row profile (mean over x of each row: a band along the
  shear direction x, orientation 0 deg) and the column profile (90 deg). For each, the
  contrast ``(max - median) / mean|p|``; the band lies along the profile of larger contrast.
  Its cells: the periodic run of cells around the profile's maximum where it is at least half
  way from the median to the maximum (so a band crossing the periodic seam is one band);
  width = their number (cells), position = their excess-weighted periodic centre (cells, cell
  i spans [i, i + 1)). Bands must be narrower than N / 2 (the median is the background). A
  profile without contrast (uniform field) has no band.
* **Persistence.** Overlap of the bands of successive post-yield windows: ``|A & B| / |A | B|``
  of their cell sets when the orientations agree, else 0; the realization's persistence is the
  mean overlap (a band that stays: 1; a band that wanders: ~ width / N).

* **Specimens** (``mesh.kind: geometry``, issue 19). The same windows, yield criterion and
  persistence on the specimen's unstructured cells: the field is the plastic strain along
  the imposed strain of the grips (:func:`resolved_plastic` with the drive gradient; shear
  between walls: ``eps_xy`` as on the box), LOC is area-weighted (``<e^4> / (<e^2>^2 n)``
  with ``n = sqrt(area) / geometry.size``: eq. 13 on equal cells), the plastic rate is the
  area-weighted mean, and the band comes from a line scan over orientations and offsets
  (:func:`femplast.analysis.specimen.line_band`; periodic across the seam of a specimen
  with ``geometry.periodic``, so a band crossing it at an angle is one band):
  ``orientation`` in degrees from x in
  (-90, 90], ``position`` and ``width`` in lengths, and for a notched strip
  ``root_distance`` and ``from_root`` (the band's centre line passes through the notch
  root). Persistence: bands within 10 deg are the same orientation. The ensemble adds
  ``from_root_fraction`` and the |angle| of the root's bands, and ``root_band``: per
  realization the direction in which the whole run's plastic strain leaves the notch root
  (:func:`femplast.analysis.specimen.root_band`; a band kinked by a grip still counts).

Ensemble: the mean LOC curve with a 95 % confidence band (mean +- t(0.975, R-1) s / sqrt(R)
over the R realizations with a finite value), the mean of the per-realization post-yield
maxima with its standard error, the mean persistence with its standard error.
"""

from __future__ import annotations

import math

import numpy as np

from femplast.scalar.model import loc_index, window_edges

ORIENTATIONS = (0, 90)  # deg: band along x (rows profile), band along y (columns profile)


# ============================================================================ fields
def to_grid(values, n: int, kind: str = "quad") -> np.ndarray:
    """Per-cell values in canonical order as an (n, n) grid ``[iy, ix]``; triangles
    (``2 (iy n + ix) + {0, 1}``): the mean of the two triangles of each square."""
    v = np.asarray(values, float)
    if kind == "tri":
        v = v.reshape(n * n, 2).mean(axis=1)
    return v.reshape(n, n)


def resolved_plastic(eps_pl: np.ndarray, alpha: float, drive=None) -> np.ndarray:
    """Plastic strain ``[xx, yy, xy]`` per cell (cells, 3) resolved on the loading
    orientation ``alpha`` (radians): ``sin(2 alpha) (yy - xx) / 2 + cos(2 alpha) xy``.

    A specimen driven by affine grips passes the drive gradient ``drive`` (2x2, ``Gd`` of
    femplast.fe.boundary; alpha is then unused): the plastic strain along the imposed strain
    ``D = sym(Gd)``, normalized like the box's ``eps_xy``: ``eps_pl : D / (2 D : D)`` (shear
    between walls: ``eps_xy``; tension along y: ``eps_yy / 2``), so that ``2 d<.>/d gamma_ext``
    is again the share of the imposed strain carried plastically."""
    e = np.asarray(eps_pl, float)
    if drive is not None:
        D = 0.5 * (np.asarray(drive, float) + np.asarray(drive, float).T)
        dd = float(np.sum(D * D))
        return (D[0, 0] * e[:, 0] + D[1, 1] * e[:, 1] + 2 * D[0, 1] * e[:, 2]) / (2 * dd)
    return math.sin(2 * alpha) * 0.5 * (e[:, 1] - e[:, 0]) + math.cos(2 * alpha) * e[:, 2]


# ============================================================================ bands
def _profile_band(p: np.ndarray, periodic: bool = True) -> dict | None:
    """The band of one profile (module doc) or None when the profile has no contrast.
    ``periodic=False`` (a specimen's strips): the run stops at the profile's ends and at NaN
    (strips left out), positions are not wrapped."""
    n = len(p)
    if periodic:
        base, top, scale = float(np.median(p)), float(p.max()), float(np.abs(p).mean())
        i0 = int(np.argmax(p))
    else:
        if not np.isfinite(p).any():
            return None
        base, top = float(np.nanmedian(p)), float(np.nanmax(p))
        scale, i0 = float(np.nanmean(np.abs(p))), int(np.nanargmax(p))
    if scale <= 0 or top - base <= 1e-12 * scale:
        return None
    thr = base + 0.5 * (top - base)

    def inside(i):
        return (periodic or 0 <= i < n) and p[i % n] >= thr

    lo = hi = 0  # the run is i0 - lo .. i0 + hi (periodic)
    while lo + hi + 1 < n and inside(i0 - lo - 1):
        lo += 1
    while lo + hi + 1 < n and inside(i0 + hi + 1):
        hi += 1
    rel = np.arange(-lo, hi + 1)
    w = np.clip(p[(i0 + rel) % n] - base, 0.0, None)
    centre = i0 + 0.5 + float(np.sum(rel * w) / np.sum(w))
    cells = sorted(int(c) for c in (i0 + rel) % n)
    return dict(contrast=(top - base) / scale, position=centre % n if periodic else centre,
                width=len(cells), cells=cells)


def detect_band(field2d) -> dict | None:
    """The shear band of a plastic-strain field (n, n) ``[iy, ix]``: ``orientation`` (deg, 0:
    along x, 90: along y), ``position`` (cells, across the band: y for 0, x for 90),
    ``width`` (cells), ``contrast``, ``share`` (fraction of the plastic strain inside the
    band) and ``cells`` (rows or columns); None for a field without contrast."""
    f = np.asarray(field2d, float)
    best = None
    for orient, axis in zip(ORIENTATIONS, (1, 0), strict=True):
        p = f.mean(axis=axis)
        b = _profile_band(p)
        if b is not None and (best is None or b["contrast"] > best["contrast"]):
            tot = float(np.abs(p).sum())
            b.update(orientation=orient, share=float(np.abs(p[b["cells"]]).sum() / tot))
            best = b
    return best


def band_overlap(a: dict | None, b: dict | None) -> float:
    """|A & B| / |A | B| of two bands' cells when their orientations agree (within the bands'
    ``angle_tol``, deg, mod 180: a specimen's line scan; equal on the box), else 0."""
    if a is None or b is None:
        return 0.0
    diff = abs(a["orientation"] - b["orientation"]) % 180.0
    if min(diff, 180.0 - diff) > a.get("angle_tol", 0.0):
        return 0.0
    sa, sb = set(a["cells"]), set(b["cells"])
    return len(sa & sb) / len(sa | sb)


# ============================================================================ one realization
def realization(edges, fields, n: int, yield_rate: float, curve=None,
                kind: str = "quad", span: int = 1, weights=None, band=None,
                root_band=None) -> dict:
    """Localization observables of one realization from its plastic-strain snapshots
    ``fields`` (len(edges), cells) at the strains ``edges`` (module doc), cells of a
    structured ``kind`` mesh of side n; window k spans snapshots k to k + ``span`` (sliding
    windows when span > 1). ``curve``: its stress-strain curve ``(gamma, stress)`` for the
    stress peak.

    A specimen (unstructured cells) passes its cells' areas as ``weights``: LOC is then
    area-weighted with ``n`` cells across (:func:`femplast.scalar.model.loc_index`), the
    plastic rate is the area-weighted mean, and ``band`` (field -> band dict, e.g.
    :func:`femplast.analysis.specimen.line_band`) finds the bands; no row/column profiles.
    ``root_band`` (field -> dict, :func:`femplast.analysis.specimen.root_band`): the band a
    notch root emits, from the plastic strain of the whole run (last snapshot - first).
    """
    edges = np.asarray(edges, float)
    if weights is None:
        F = np.array([to_grid(f, n, kind) for f in fields])
        d = F[span:] - F[:-span]
        mean = d.mean(axis=(1, 2))
        loc = np.array([loc_index(x) for x in d])
        cumulative = np.array([loc_index(x) for x in F[span:]])
        bands = [detect_band(x) for x in d]
        profiles = dict(profile_rows=d.mean(axis=2), profile_columns=d.mean(axis=1))
    else:
        w = np.asarray(weights, float) / np.sum(weights)
        F = np.asarray(fields, float)
        d = F[span:] - F[:-span]
        mean = d @ w
        loc = np.array([loc_index(x, w, n) for x in d])
        cumulative = np.array([loc_index(x, w, n) for x in F[span:]])
        bands = [band(x) if band is not None else None for x in d]
        profiles = {}
    rate = 2.0 * mean / (edges[span:] - edges[:-span])
    post = np.flatnonzero(rate >= yield_rate)
    k0 = int(post[0]) if len(post) else len(d)
    centre = 0.5 * (edges[span:] + edges[:-span])
    out = dict(loc=loc, plastic_rate=rate, bands=bands, yield_window=k0,
               gamma_yield=float(edges[k0]) if k0 < len(d) else None,
               loc_cumulative=cumulative, **profiles)
    if root_band is not None:
        out["root_band"] = root_band(F[-1] - F[0])
    fin = [k for k in range(k0, len(d)) if np.isfinite(loc[k])]
    out["loc_max"] = float(loc[max(fin, key=lambda k: loc[k])]) if fin else None
    out["gamma_loc_max"] = float(centre[max(fin, key=lambda k: loc[k])]) if fin else None
    # successive disjoint windows: k and k + span
    ov = [band_overlap(bands[k], bands[k + span]) for k in range(k0, len(d) - span)]
    out["overlap"] = ov
    out["persistence"] = float(np.mean(ov)) if ov else None
    if curve is not None:
        g, s = (np.asarray(c, float) for c in curve)
        out["gamma_peak"] = float(g[int(np.argmax(s))])
        out["stress_peak"] = float(s.max())
    return out


# ============================================================================ ensemble
def _jsonable(x):
    """Lists with None for NaN (plain JSON)."""
    a = np.asarray(x, float)
    return [None if not math.isfinite(v) else float(v) for v in a.ravel()] if a.ndim <= 1 \
        else [_jsonable(r) for r in a]


def _mean_err(values) -> tuple:
    v = np.array([x for x in values if x is not None], float)
    if len(v) == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None)


def mean_band(curves: np.ndarray, level: float = 0.95) -> dict:
    """Mean over realizations (rows) of ``curves`` ignoring NaN, with the ``level``
    confidence band mean +- t s / sqrt(m) (m finite values per column); no warnings for
    columns without a finite value (their entries are NaN)."""
    from scipy.stats import t as student_t

    c = np.asarray(curves, float)
    ok = np.isfinite(c)
    m = ok.sum(axis=0)
    cz = np.where(ok, c, 0.0)
    mean = np.full(c.shape[1], np.nan)
    half = np.full(c.shape[1], np.nan)
    has = m > 0
    mean[has] = cz[:, has].sum(axis=0) / m[has]
    two = m > 1
    if two.any():
        dev = np.where(ok, c - mean, 0.0)[:, two]
        s = np.sqrt((dev * dev).sum(axis=0) / (m[two] - 1))
        half[two] = student_t.ppf(0.5 + level / 2, m[two] - 1) * s / np.sqrt(m[two])
    return dict(mean=mean, low=mean - half, high=mean + half, count=m)


def summary(edges, per: list[dict], window: float, yield_rate: float, span: int = 1,
            gamma_peak: float | None = None) -> dict:
    """The ``localization`` section of summary.json from the realizations' results of
    :func:`realization` (in realization order); ``gamma_peak``: the strain of the maximum of
    the ensemble-mean stress-strain curve."""
    edges = np.asarray(edges, float)
    L = np.array([r["loc"] for r in per])
    band = mean_band(L)
    rate = np.mean([r["plastic_rate"] for r in per], axis=0)
    centres = 0.5 * (edges[span:] + edges[:-span])
    post = [k for k in range(int(np.argmax(rate >= yield_rate)) if (rate >= yield_rate).any()
                             else len(rate), len(rate)) if np.isfinite(band["mean"][k])]
    kmax = max(post, key=lambda k: band["mean"][k]) if post else None
    loc_max, loc_max_err = _mean_err([r["loc_max"] for r in per])
    pers, pers_err = _mean_err([r["persistence"] for r in per])
    post_bands = [b for r in per for b in r["bands"][r["yield_window"]:] if b is not None]
    widths = [b["width"] for b in post_bands]
    out = dict(
        definition="LOC (scalar paper eq. 13) of the plastic strain accumulated over each "
                   "strain window (frozen stress and elastic strain excluded); post-yield: "
                   "windows from the first with plastic rate >= yield_rate",
        window=window, yield_rate=yield_rate, gamma_snapshots=edges,
        gamma_windows=centres, snapshots_per_window=span,
        loc=dict(mean=band["mean"], ci95_low=band["low"], ci95_high=band["high"],
                 realizations=band["count"], per_realization=L,
                 cumulative_per_realization=np.array([r["loc_cumulative"] for r in per])),
        plastic_rate=dict(mean=rate),
        post_yield=dict(
            mean_curve_max=None if kmax is None else float(band["mean"][kmax]),
            gamma_mean_curve_max=None if kmax is None else float(centres[kmax]),
            gamma_peak_mean_stress=gamma_peak,
            loc_max=loc_max, loc_max_err=loc_max_err,
            loc_max_per_realization=[r["loc_max"] for r in per],
            gamma_loc_max_per_realization=[r["gamma_loc_max"] for r in per],
            gamma_yield_per_realization=[r["gamma_yield"] for r in per],
            gamma_peak_per_realization=[r.get("gamma_peak") for r in per],
            loc_max_after_peak=int(sum(1 for r in per if r["gamma_loc_max"] is not None
                                       and r.get("gamma_peak") is not None
                                       and r["gamma_loc_max"] > r["gamma_peak"]))),
        band=dict(
            persistence=pers, persistence_err=pers_err,
            persistence_per_realization=[r["persistence"] for r in per],
            fraction_orientation_0=(sum(1 for b in post_bands if b["orientation"] == 0)
                                    / len(post_bands)) if post_bands else None,
            width_mean=float(np.mean(widths)) if widths else None,
            per_realization=[_bands_table(r) for r in per]))
    if any("root_distance" in b for b in post_bands):  # a notched specimen's line scan
        out["band"].update(_specimen_bands(post_bands))
    if all("root_band" in r for r in per):
        out["band"]["root_band"] = _root_bands([r["root_band"] for r in per])
    return _clean(out)


def _root_bands(rb: list[dict]) -> dict:
    """Ensemble of the bands a notch root emits over the whole run (one per realization)."""
    return dict(definition="densest direction (deg from x) of the whole run's plastic strain "
                           "around the notch root (femplast.analysis.specimen.root_band), its "
                           "contrast over the annulus mean and the root's enrichment (near)",
                angle_per_realization=[b["angle"] for b in rb],
                contrast_per_realization=[b["contrast"] for b in rb],
                near_per_realization=[b["near"] for b in rb],
                angle_abs_mean=float(np.mean(np.abs([b["angle"] for b in rb]))))


def _specimen_bands(post_bands: list[dict]) -> dict:
    """Ensemble of a notched specimen's post-yield bands: the share through the notch root
    and the angle (deg from x) of those, as |angle| (a symmetric notch emits +phi and -phi
    alike)."""
    root = [b for b in post_bands if b["from_root"]]
    ang = np.abs([b["orientation"] for b in root])
    return dict(fraction_orientation_0=None,
                from_root_fraction=len(root) / len(post_bands),
                root_angle_abs_mean=float(ang.mean()) if len(ang) else None,
                root_angle_abs_std=float(ang.std(ddof=1)) if len(ang) > 1 else None)


def of_windows(w: dict, section) -> dict:
    """:func:`realization` of one realization's ``windows`` (``edges``, ``eps_pl`` snapshots,
    ``n``, ``kind``, its stress-strain curve ``gamma``, ``stress``), keeping edges and curve
    for the ensemble. Tensorial runs call it when the load ends, so only these derived
    observables (profiles, not fields) travel to rank 0 and into checkpoints."""
    n = float(w["n"]) if w.get("weights") is not None else int(w["n"])
    out = realization(w["edges"], w["eps_pl"], n, section.yield_rate,
                      (w["gamma"], w["stress"]), w["kind"], window_span(section),
                      w.get("weights"), w.get("band"), w.get("root_band"))
    out.update(edges=np.asarray(w["edges"], float), curve_gamma=np.asarray(w["gamma"], float),
               curve_stress=np.asarray(w["stress"], float))
    return out


def from_results(results: list[dict], section) -> dict | None:
    """The ``localization`` section of summary.json from the realization loop's results,
    each with ``localization`` (:func:`of_windows`) or raw ``windows``; None when a
    realization has neither. ``section``: the case's ``localization`` section."""
    per = [r["localization"] if "localization" in r else
           of_windows(r["windows"], section) if "windows" in r else None for r in results]
    if not per or any(x is None for x in per):
        return None
    n = min(len(x["curve_stress"]) for x in per)
    mean_stress = np.mean([x["curve_stress"][:n] for x in per], axis=0)
    gamma_peak = float(per[0]["curve_gamma"][int(np.argmax(mean_stress))])
    return summary(per[0]["edges"], per, section.window, section.yield_rate,
                   window_span(section), gamma_peak)


def window_span(section) -> int:
    """Snapshots per window: window / stride (``localization.stride``, null: the window)."""
    if section.stride is None:
        return 1
    return max(1, int(round(section.window / section.stride)))


def _bands_table(r: dict) -> dict:
    bs = r["bands"]
    keys = ["orientation", "position", "width", "contrast", "share"]
    if any(b is not None and "root_distance" in b for b in bs):  # a specimen's line scan
        keys += ["root_distance", "from_root"]
    out = {k: [None if b is None else b[k] for b in bs] for k in keys}
    out["overlap"] = r["overlap"]
    if "profile_rows" in r:
        out.update(profile_rows=r["profile_rows"], profile_columns=r["profile_columns"])
    return out


def _clean(d):
    """numpy arrays and NaN -> JSON lists with null."""
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items()}
    if isinstance(d, np.ndarray):
        return _jsonable(d) if d.dtype.kind == "f" else d.tolist()
    if isinstance(d, list):
        return [_clean(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return None
    return d


__all__ = ["to_grid", "resolved_plastic", "window_edges", "detect_band", "band_overlap",
           "realization", "mean_band", "summary", "from_results", "of_windows"]
