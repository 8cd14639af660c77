"""Where a specimen yields: plastic activity around a stress raiser and the band it emits
(issue 19: the notched strip, the plate with a hole).

A shear band that nucleates at a notch root runs away from it along a straight line; around
the root the accumulated slip per unit area, binned by direction, peaks at the band's angle.
The whole-specimen localization index (LOC, area-weighted) and the windows live with the
localization observables (femplast.analysis.localization); this module adds what needs the
geometry: the band of an unstructured field by a line scan (:func:`line_band`, a discrete
Radon transform: the box's row/column profiles at every orientation; periodic across the
seam of a specimen periodic along its walls), the angular profile around a point
(:func:`band_from_point`) and the weakest-link law of the first slip (:func:`first_slip_law`).

Why the very first slip is often *not* at the notch root: with Weibull thresholds
``P(tau_c > t) = exp(-(t / lambda)^k)`` (eq. 5) and an unstressed start, a system whose
resolved load per unit strain is ``r`` becomes active at ``gamma = tau_c / r``, which is
Weibull with scale ``lambda / r``; the first of all systems is therefore system ``n`` with
probability ``r_n^k / sum r^k`` exactly. Per cell (systems uniform in angle, ``N`` per cell)
``P(c) = |R_c|^k / sum |R|^k`` with ``|R_c|`` the deviatoric load response (``N_c`` systems
in cell c, ``slip.reference_area``: ``P(c) = N_c |R_c|^k / sum N |R|^k``, the ratio of the
angle averages, see tests/test_systems_per_area.py). The notch root
concentrates ``|R|`` (3-4x the median at a cell of half the bulk size) but holds few cells,
and with the paper's k = 2.18 the bulk's weakest systems win most of the time (the shipped
notched strip: 17 % within 3 notch radii, against 3.3 % of the area). A well-annealed glass
(narrow, high thresholds: k = 8, cases/geometry_notch_tension_stable.yaml) gives 96 %: it
has no weak spot to compete with the stress raiser, and nucleates its band there.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from femplast.analysis.localization import _profile_band
from femplast.fe.patch_fe import box_periods, image_shifts


def band_from_point(points, area, field, origin, r_min: float, r_max: float,
                    bins: int = 36, periods=None) -> dict:
    """Angular profile of a per-cell field (e.g. accumulated slip) around ``origin``.

    Cells with barycentre at distance ``r_min <= r < r_max`` from ``origin`` are binned by the
    direction ``phi = atan2(dy, dx)`` (degrees, in (-180, 180]); each bin's density is its
    field integral over its area.

    Args:
        points: cell barycentres (cells, 2).
        area: cell areas (cells,).
        field: the per-cell field (cells,), e.g. ``State.eacc`` (sum of d_gamma).
        origin: the stress raiser (notch root, hole equator), (2,).
        r_min, r_max: the annulus of the band (outside the raiser's own cells).
        bins: number of direction bins over 360 degrees.
        periods: a periodic specimen's periods ``(p_x, p_y)`` (0: not periodic,
            :func:`femplast.fe.patch_fe.box_periods`): each cell is seen at its image nearest
            ``origin``, so an annulus reaching across the seam is one annulus. None: bounded.

    Returns:
        ``angle`` (deg, centre of the densest bin), ``contrast`` (densest bin / mean density
        of the annulus), ``near`` (density within ``r_min`` / density of the whole
        specimen), ``profile`` (density per bin) and ``edges`` (deg).
    """
    p = np.asarray(points, float) - np.asarray(origin, float)
    if periods is not None and np.any(periods):
        p = p + image_shifts(p, periods)
    a, f = np.asarray(area, float), np.asarray(field, float)
    r = np.hypot(p[:, 0], p[:, 1])
    phi = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    edges = np.linspace(-180.0, 180.0, bins + 1)
    ring = (r >= r_min) & (r < r_max)
    fa = np.histogram(phi[ring], edges, weights=(a * f)[ring])[0]
    aa = np.histogram(phi[ring], edges, weights=a[ring])[0]
    dens = np.where(aa > 0, fa / np.where(aa > 0, aa, 1.0), 0.0)
    mean_ring = fa.sum() / max(aa.sum(), 1e-300)
    total = float(np.sum(a * f)) / max(float(a.sum()), 1e-300)
    inner = r < r_min
    near = (float(np.sum((a * f)[inner])) / max(float(a[inner].sum()), 1e-300)
            / max(total, 1e-300))
    k = int(np.argmax(dens))
    return dict(angle=float(0.5 * (edges[k] + edges[k + 1])),
                contrast=float(dens[k] / max(mean_ring, 1e-300)), near=near,
                profile=dens, edges=edges)


def _line_period(periods, t: float) -> float:
    """``P = |n . T|``: the spacing along the normal ``n = (-sin phi, cos phi)`` of the periodic
    images of a line at angle ``t`` (radians) on a specimen periodic by ``T`` (0: the images
    coincide, or the specimen is bounded)."""
    if periods is None:
        return 0.0
    T = np.asarray(periods, float)
    shift = abs(-math.sin(t) * T[0] + math.cos(t) * T[1])
    return shift if shift > 1e-9 * float(np.hypot(*T)) else 0.0


def _strips(s, a, f, spacing: float, min_strip: float, period: float):
    """One orientation's strip profile from the offsets ``s`` (:func:`line_band`): the profile,
    each cell's strip, the offset of strip 0's edge and the strip width."""
    if period == 0.0:  # bounded (or a line along the period): strips from the lowest offset
        s0 = float(s.min())
        idx = np.floor((s - s0) / spacing).astype(np.int64)
        aa = np.bincount(idx, a)
        fa = np.bincount(idx, a * f)
        keep = aa >= min_strip * np.median(aa[aa > 0])
        return np.where(keep, fa / np.where(keep, aa, 1.0), np.nan), idx, s0, spacing
    n = max(1, round(period / spacing))  # n equal strips of width P / n fill one period
    h = period / n
    idx = np.minimum(np.floor(np.mod(s, period) / h).astype(np.int64), n - 1)
    aa = np.bincount(idx, a, minlength=n)
    if not (aa > 0).all():  # a strip without cells: a mesh much coarser than ``spacing``
        return None, idx, 0.0, h
    return np.bincount(idx, a * f, minlength=n) / aa, idx, 0.0, h


def line_band(points, area, field, spacing: float, origin=None, step: float = 1.0,
              min_strip: float = 0.75, angle_tol: float = 10.0, periods=None) -> dict | None:
    """The shear band of a per-cell field on an unstructured mesh, by a line scan.

    For every orientation ``phi`` (deg from x, in (-90, 90], steps of ``step``) the cells are
    binned by their offset across the band direction, ``s = -sin(phi) x + cos(phi) y``, into
    strips of width ``spacing``; the profile is each strip's area-weighted mean of the field
    (strips with less than ``min_strip`` of the median strip area are left out: the short
    strips across a corner hold few cells, and a clamped grip's corner would otherwise win
    with the noise of its mean; at 0.25 the shipped notched strip's corner bands beat the
    root's in the last window). Each profile's band is the box's (femplast.analysis.
    localization: contrast
    ``(max - median) / mean|p|``, the run of strips at least half way up from the median),
    and the orientation of largest contrast wins.

    A specimen periodic by a translation ``T`` (``periods``: ``(W, 0)`` for ``periodic: x``,
    ``(0, H)`` for ``y``; :func:`femplast.fe.patch_fe.box_periods`) is the same body at
    ``x + k T`` for every integer k, so a line at ``phi`` and offset ``p`` is the union of
    its images, the lines at offsets ``p + k n.T`` (``n = (-sin phi, cos phi)``): on the
    walls strip ``n.T = -W sin(phi)``. Every ``phi`` whose images do not coincide
    (``P = |n.T| > 0``) is scanned *periodically*: the offset is taken modulo ``P``,
    ``u = s mod P``, and the period is cut into ``m = max(1, round(P / spacing))`` equal
    strips of width ``P / m``. A strip is then one wall-to-wall segment of the line, of
    length ``H / |sin(phi)|`` on the walls strip, wrapped across the seam as often as it
    needs (for each y, x over one period sweeps s over exactly one period ``P``): on a
    ``W x H`` strip every strip holds the area ``W H / m``, so ``min_strip`` is not applied. The
    profile is circular (the run around the maximum wraps from strip m - 1 to strip 0), and
    a band that leaves at x = W and re-enters at x = 0 is one strip, whatever its offset.
    Lines along the period (``n.T = 0``: the walls' direction) are scanned bounded as above.
    ``periods`` None or zero: every orientation bounded, as before the periodic scan.

    Args:
        points: cell barycentres (cells, 2).
        area: cell areas (cells,).
        field: per-cell field (cells,), e.g. one window's resolved plastic strain.
        spacing: strip width (the bulk cell size).
        origin: the stress raiser (notch root): adds ``root_distance`` (from the band's centre
            line, or its nearest periodic image) and ``from_root`` (the line passes within
            half the band width plus one strip of it).
        step: orientation step (deg).
        min_strip: the smallest strip kept, as a share of the median strip area.
        angle_tol: bands of two windows with orientations within it are the same band
            (persistence).
        periods: the specimen's periods ``(p_x, p_y)``, 0 along a direction that is not
            periodic (at most one periodic direction); None: a bounded specimen.

    Returns:
        ``orientation`` (deg), ``position`` (offset of the centre line, length; in
        ``[0, period)`` when periodic), ``width`` (length), ``contrast``, ``share`` (share of
        the area-weighted |field| in the band), ``cells`` (indices of the band's cells),
        ``angle_tol`` (and ``period``: the spacing ``P`` of the centre line's images, when
        the winning orientation was scanned periodically; ``root_distance``,
        ``from_root``); None when no profile has contrast.
    """
    p = np.asarray(points, float)
    a, f = np.asarray(area, float), np.asarray(field, float)
    if periods is not None and np.count_nonzero(periods) > 1:
        raise ValueError("line_band: at most one periodic direction (a specimen)")
    best = None
    for phi in np.arange(-90.0 + step, 90.0 + 0.5 * step, step):
        t = math.radians(phi)
        s = -math.sin(t) * p[:, 0] + math.cos(t) * p[:, 1]
        period = _line_period(periods, t)
        prof, idx, s0, h = _strips(s, a, f, spacing, min_strip, period)
        b = None if prof is None else _profile_band(prof, periodic=period > 0)
        if b is not None and (best is None or b["contrast"] > best["contrast"]):
            best = dict(b, orientation=float(phi), s0=s0, idx=idx, h=h, period=period)
    return None if best is None else _band_record(best, a, f, spacing, origin, angle_tol)


def _band_record(best: dict, a, f, spacing: float, origin, angle_tol: float) -> dict:
    """:func:`line_band`'s result from the winning orientation's profile band ``best``."""
    inside = np.isin(best.pop("idx"), best["cells"])
    s0, h, period = best.pop("s0"), best.pop("h"), best.pop("period")
    tot = float(np.sum(a * np.abs(f)))
    out = dict(orientation=best["orientation"], position=s0 + best["position"] * h,
               width=best["width"] * h, contrast=best["contrast"],
               share=float(np.sum((a * np.abs(f))[inside]) / tot) if tot > 0 else 0.0,
               cells=[int(c) for c in np.flatnonzero(inside)], angle_tol=angle_tol)
    if period > 0:
        out["period"] = period
    if origin is not None:
        t = math.radians(out["orientation"])
        so = -math.sin(t) * origin[0] + math.cos(t) * origin[1]
        d = so - out["position"]
        if period > 0:  # the nearest image of the centre line
            d -= period * round(d / period)
        out["root_distance"] = float(abs(d))
        out["from_root"] = bool(out["root_distance"] <= 0.5 * out["width"] + spacing)
    return out


def stress_raiser(spec) -> np.ndarray | None:
    """The notch root of a notched strip (its deepest point, on the mid-line), else None."""
    if spec.shape != "notched_strip":
        return None
    return np.array([spec.notch_depth, 0.5 * spec.height])


def window_cells(model, spec) -> dict:
    """What :func:`femplast.analysis.localization.realization` needs for a specimen's windows
    (collective): the cells' area ``weights``, ``n`` cells across (``sqrt(area) / size``, the
    bulk cell size: eq. 13's N of a square of the specimen's area) and the ``band`` detector
    (:func:`line_band` in strips of the bulk cell size, from the notch root if any; periodic
    across the seam of a specimen with ``geometry.periodic``, as is ``root_band``)."""
    el, box = model.el, model.box
    points = el.gather(box.midpoints()[el._dolfinx_cells])
    area = np.asarray(model.weights, float) * box.area
    size = spec.size if spec.shape != "file" else box.cell_size
    origin = stress_raiser(spec)
    periods = box_periods(box) if box.periodic != "none" else None
    out = dict(weights=area, n=math.sqrt(box.area) / size,
               band=functools.partial(line_band, points, area, spacing=size, origin=origin,
                                      periods=periods))
    if origin is not None:
        out["root_band"] = functools.partial(root_band, points, area, origin=origin,
                                             r_min=ROOT_RADII * spec.notch_radius,
                                             r_max=0.5 * (spec.width - spec.notch_depth),
                                             periods=periods)
    return out


def scalar_windows(model, spec, windows: dict) -> dict:
    """The scalar model's plastic-strain windows on a specimen
    (:class:`femplast.scalar.specimen.SpecimenScalarModel`, one rank) made ready for
    :func:`femplast.analysis.localization.of_windows`: the cells of :func:`window_cells`, and
    the slip amplitudes ``eps_p`` (eigenstrain ``eps_p 2 M(theta)`` per cell) resolved on the
    grips' drive as the tensorial model's are
    (:func:`femplast.analysis.localization.resolved_plastic`: ``2 d<.>/d gamma_ext`` is the
    share of the imposed strain carried plastically, in tension as between walls)."""
    from femplast.analysis.localization import resolved_plastic

    out = dict(windows)
    Gd = model.el.drive_gradient
    if Gd is not None:
        out["eps_pl"] = np.asarray(windows["eps_pl"], float) * float(
            resolved_plastic(np.asarray(model.unit, float)[None, :], 0.0, drive=Gd)[0])
    out.update(window_cells(model, spec))
    return out


def root_band(points, area, field, origin, r_min: float, r_max: float,
              periods=None) -> dict:
    """The band a stress raiser emits, from a run's whole plastic strain: the densest
    direction of :func:`band_from_point` in the annulus ``r_min <= r < r_max`` (deg from x,
    in (-180, 180]; a straight line scan may instead pick the longer leg of a band kinked by
    a grip), its ``contrast`` and the ``near`` enrichment within ``r_min`` of the raiser
    (``periods``: a periodic specimen's, :func:`band_from_point`)."""
    b = band_from_point(points, area, field, origin, r_min, r_max, periods=periods)
    return dict(angle=b["angle"], contrast=b["contrast"], near=b["near"])


def first_slip_law(load_response, k: float, near=None, systems=None) -> dict:
    """Weakest-link law of the first slip from an unstressed state (module doc).

    Args:
        load_response: per-cell stress per unit gamma_ext as ``(d, s, p)`` rows (cells, 3)
            or columns (3, cells).
        k: Weibull shape of the thresholds (``weibull_k``; pressure-independent thresholds).
        near: boolean mask of a region (e.g. within 3 notch radii of the root).
        systems: slip systems per cell ``N_c`` when they differ (``slip.reference_area``,
            :meth:`femplast.tensorial.model.TensorialModel.cell_systems`); None: the same N in
            every cell.

    Returns:
        ``p`` (probability per cell that the first slip is there: ``N_c |R_c|^k / sum N
        |R|^k``, uniform in angle) and, with ``near``, ``p_near`` (its sum over the region).
    """
    R = np.asarray(load_response, float)
    if R.shape[0] == 3 and R.shape[1] != 3:
        R = R.T
    w = np.hypot(R[:, 0], R[:, 1]) ** k
    if systems is not None:
        w = w * np.asarray(systems, float)
    p = w / w.sum()
    out = dict(p=p)
    if near is not None:
        out["p_near"] = float(p[np.asarray(near, bool)].sum())
    return out


def first_instability(model, state, alpha: float = 0.0) -> int:
    """The cell of the first slip under continuous loading from a stable ``state``: the
    system with the smallest ``a_n / r_n`` (distance to threshold over its decrease per unit
    gamma_ext, over the systems the load drives towards their threshold), as the AQS driver's
    exact next-instability search (femplast.tensorial.aqs.instability_estimate) finds it."""
    p = model.params
    R = np.asarray(model.load_response(alpha), float)  # (3, cells): d, s, p
    sig = np.asarray(state.sig, float)
    r = state.sin2 * R[0][:, None] + state.cos2 * R[1][:, None] + p.alpha_p * R[2][:, None]
    a = state.tauc - (state.sin2 * sig[0][:, None] + state.cos2 * sig[1][:, None])
    if p.alpha_p:  # pressure-shifted thresholds (model B)
        a = a + (p.alpha_p * (p.p_offset - sig[2]))[:, None]
    g = np.where(r > 0, a / np.where(r > 0, r, 1.0), np.inf)
    return int(np.argmin(g.min(axis=1)))


ROOT_RADII = 3.0  # the notch root's region: within 3 notch radii of the root


def first_slip_record(model, state, spec, alpha: float = 0.0) -> dict | None:
    """A notched strip's first slip from ``state`` (before loading; collective): its
    distance from the notch root, with the weakest-link probability of the root's region
    (within ``ROOT_RADII`` notch radii) and that region's area share; None for other
    shapes."""
    origin = stress_raiser(spec)
    if origin is None:
        return None
    el = model.el
    points = el.gather(model.box.midpoints()[el._dolfinx_cells])
    dist = np.hypot(*(points - origin).T)
    radius = ROOT_RADII * spec.notch_radius
    near = dist < radius
    per_area = getattr(model.params, "reference_area", None) is not None
    law = first_slip_law(model.load_response(alpha), model.params.weibull_k, near,
                         model.cell_systems() if per_area else None)
    model.refresh(state)
    return dict(distance=float(dist[first_instability(model, state, alpha)]), radius=radius,
                law=law["p_near"], area_share=float(np.sum(model.weights[near])))


def first_slip_summary(law_p: float, area_share: float, radius: float,
                       distances: list, per_area: bool = False) -> dict:
    """summary.json ``specimen.first_slip`` of a notched strip: the weakest-link probability
    that the first slip lies within ``radius`` of the notch root (:func:`first_slip_law`),
    the region's area share, and per realization the first slip's distance from the root.
    ``per_area``: the cells carry N_c systems (``slip.reference_area``)."""
    d = np.asarray(distances, float)
    law = ("N_c |R_c|^k / sum N |R|^k (N_c systems in cell c: slip.reference_area; " if per_area
           else "|R_c|^k / sum |R|^k (")
    return dict(definition="first slip of continuous loading from the initial state; law: "
                           f"P(cell) = {law}Weibull thresholds, weakest link)",
                radius=radius, area_share=area_share, law_probability_within=law_p,
                enrichment=law_p / area_share if area_share > 0 else None,
                distance_per_realization=[float(x) for x in d],
                within_count=int(np.sum(d < radius)), realizations=len(d))


__all__ = ["band_from_point", "line_band", "root_band", "scalar_windows", "first_slip_law",
           "stress_raiser", "window_cells", "first_instability", "first_slip_summary",
           "first_slip_record"]
