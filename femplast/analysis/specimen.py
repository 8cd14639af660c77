"""Where a specimen yields: plastic activity around a stress raiser and the band it emits
(issue 19: the notched strip, the plate with a hole).

A shear band that nucleates at a notch root runs away from it along a straight line; around
the root the accumulated slip per unit area, binned by direction, peaks at the band's angle.
The whole-specimen localization index (LOC) and band detection of the periodic box live with
the localization observables; this module only adds what needs a point of the geometry.
"""

from __future__ import annotations

import numpy as np


def band_from_point(points, area, field, origin, r_min: float, r_max: float,
                    bins: int = 36) -> dict:
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

    Returns:
        ``angle`` (deg, centre of the densest bin), ``contrast`` (densest bin / mean density
        of the annulus), ``near`` (density within ``r_min`` / density of the whole
        specimen), ``profile`` (density per bin) and ``edges`` (deg).
    """
    p = np.asarray(points, float) - np.asarray(origin, float)
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


__all__ = ["band_from_point"]
