"""Figures of the localization observables (summary.json ``localization``,
femplast.analysis.localization): windowed LOC versus strain for one or several runs with their
95 % confidence bands, and the band profile of a realization over strain as an image."""

from __future__ import annotations

import numpy as np

from femplast.postprocess import style as S

plt = S.plt


def _arr(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], float)


def loc_overlay(runs: list[tuple[str, dict]], saver, name: str = "localization_loc"):
    """LOC(gamma_ext) of several runs ``(label, summary)`` overlaid: the mean of the windowed
    plastic-only LOC with its 95 % confidence band, the post-yield maximum marked, the strain
    of the mean stress peak as a dotted line."""
    runs = [(lab, s["localization"]) for lab, s in runs if s.get("localization")]
    if not runs:
        return []
    with S.style():
        fig, ax = plt.subplots(figsize=S.SINGLE)
        for i, (lab, lo) in enumerate(runs):
            c = S.COLORS[i % len(S.COLORS)]
            g = _arr(lo["gamma_windows"])
            m, lo95, hi95 = (_arr(lo["loc"][k]) for k in ("mean", "ci95_low", "ci95_high"))
            ax.fill_between(g, lo95, hi95, color=c, alpha=0.25, lw=0)
            ax.plot(g, m, color=c, label=lab)
            py = lo["post_yield"]
            if py.get("gamma_mean_curve_max") is not None:
                ax.plot([py["gamma_mean_curve_max"]], [py["mean_curve_max"]], "v", color=c,
                        ms=4)
            if py.get("gamma_peak_mean_stress") is not None:
                ax.axvline(py["gamma_peak_mean_stress"], color=c, ls=":", lw=0.8)
        ax.set_xlabel(S.GAMMA + " (window centre)")
        ax.set_ylabel(r"LOC of $\Delta\varepsilon^{\rm p}$ (eq. 13)")
        ax.legend(loc="best")
        fig.tight_layout()
        w = runs[0][1]["window"]
        cap = (f"Localization index LOC (scalar paper eq. 13) of the plastic strain accumulated "
               f"over windows of {w:g} in strain (frozen stress excluded): mean over "
               "realizations with its 95 % confidence band; triangles: post-yield maximum of "
               "the mean; dotted: strain of the mean stress peak. LOC = 1 for one band one "
               "cell wide, 1/N for a uniform field.")
        return [saver.save(fig, name, cap)]


def band_profile(summary: dict, saver, realization: int = 0,
                 name: str = "localization_band_profile"):
    """The windowed plastic strain profile across the band of one realization over strain
    (image: window x position), along the orientation most of its post-yield bands have, with
    the detected band centre and edges."""
    lo = summary.get("localization")
    if not lo:
        return []
    tab = lo["band"]["per_realization"][realization]
    k0 = 0
    ys = lo["post_yield"]["gamma_yield_per_realization"][realization]
    edges = _arr(lo["gamma_snapshots"])
    if ys is not None:
        k0 = int(np.searchsorted(edges, ys))
    ors = [o for o in tab["orientation"][k0:] if o is not None]
    orient = 90 if ors and ors.count(90) > ors.count(0) else 0
    prof = _arr2(tab["profile_rows" if orient == 0 else "profile_columns"])
    g = _arr(lo["gamma_windows"])
    n = prof.shape[1]
    with S.style():
        fig, ax = plt.subplots(figsize=S.SINGLE)
        dg = g[1] - g[0] if len(g) > 1 else 1.0
        im = ax.imshow(prof.T, origin="lower", aspect="auto", cmap="magma",
                       extent=(g[0] - dg / 2, g[-1] + dg / 2, 0, n))
        for k, (o, pos, wid) in enumerate(zip(tab["orientation"], tab["position"],
                                              tab["width"], strict=True)):
            if o == orient and pos is not None:
                ax.plot([g[k]], [pos], ".", color="c", ms=3)
                for e in (pos - wid / 2, pos + wid / 2):
                    ax.plot([g[k]], [e % n], "_", color="w", ms=4)
        fig.colorbar(im, ax=ax, label=r"$\Delta\varepsilon^{\rm p}$ (row/column mean)")
        ax.set_xlabel(S.GAMMA + " (window centre)")
        ax.set_ylabel(("y" if orient == 0 else "x") + " (cells)")
        fig.tight_layout()
        cap = (f"Band profile of realization {realization} over strain: windowed plastic strain "
               f"averaged along the band direction ({orient} deg), dots: detected band centre, "
               "white ticks: band edges (half maximum above the median).")
        return [saver.save(fig, name, cap)]


def field_grids(series) -> tuple[list[float], list[np.ndarray]]:
    """(strains, plastic strain ``eps_pl_xy`` as (n, n) grids ``[iy, ix]``) of a field
    series of a structured box (``femplast.postprocess.renders.read_series``), cells binned
    by their centres (quads, or the two triangles of a square averaged)."""
    pts, _, cells, times, data = series
    if not data or "eps_pl_xy" not in data[0]:
        return [], []
    c = pts[cells].mean(axis=1)[:, :2]
    lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    per = 1 if cells.shape[1] == 4 else 2
    n = int(round(np.sqrt(len(cells) / per)))
    ij = np.clip(((c - lo) / (hi - lo) * n).astype(int), 0, n - 1)
    flat = ij[:, 1] * n + ij[:, 0]
    count = np.bincount(flat, minlength=n * n)
    grids = [(np.bincount(flat, d["eps_pl_xy"], n * n) / count).reshape(n, n) for d in data]
    return times, grids


def band_field(series, label: str, saver, name: str = "localization_band_field"):
    """The plastic strain accumulated between successive field snapshots of one realization
    (``series`` as read by ``renders.read_series``; a panel per snapshot interval) with the
    detected band outlined."""
    from femplast.analysis.localization import detect_band

    times, grids = field_grids(series)
    if not grids:
        return []
    prev = [np.zeros_like(grids[0])] + grids[:-1]
    incs = [g - p for g, p in zip(grids, prev, strict=True)]
    t0 = [0.0] + list(times[:-1])
    keep = [i for i in range(len(incs)) if times[i] > t0[i]]  # a repeated snapshot: no panel
    incs, t0, times = [incs[i] for i in keep], [t0[i] for i in keep], [times[i] for i in keep]
    if not incs:
        return []
    k = len(incs)
    n = incs[0].shape[0]
    with S.style():
        fig, axs = plt.subplots(1, k, figsize=(min(S.DOUBLE, 2.2 * k), 2.4), squeeze=False)
        for ax, d, a, b in zip(axs[0], incs, t0, times, strict=True):
            ax.imshow(d, origin="lower", cmap="magma", extent=(0, n, 0, n))
            band = detect_band(d)
            if band is not None:
                line = ax.axhline if band["orientation"] == 0 else ax.axvline
                for e in (band["position"] - band["width"] / 2,
                          band["position"] + band["width"] / 2):
                    line(e % n, color="c", lw=1.0, ls="--")
            ax.set_title(rf"$\gamma$ {a:g} - {b:g}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        cap = (f"Plastic strain accumulated between field snapshots ({label}), x along "
               "the shear direction; dashed: edges of the detected band "
               "(femplast.analysis.localization.detect_band).")
        return [saver.save(fig, name, cap)]


def _arr2(rows) -> np.ndarray:
    return np.array([_arr(r) for r in rows])


def figures(run, saver) -> list:
    """The localization figures of one run (no-op without the summary section)."""
    s = run.summary or {}
    if not s.get("localization"):
        return []
    tab = s["localization"]["band"]["per_realization"][0]
    if "profile_rows" not in tab:  # a specimen: its bands are drawn on the geometry
        return loc_overlay([(run.name, s)], saver)
    return loc_overlay([(run.name, s)], saver) + band_profile(s, saver)


__all__ = ["loc_overlay", "band_profile", "band_field", "field_grids", "figures"]
