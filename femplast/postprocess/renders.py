"""Renders of the cell fields (``fields/*.xdmf``) and a GIF of plastic strain.

The XDMF time series is read with meshio (the same file ParaView opens); every field gets one
PNG with a panel per distinct snapshot and a shared colour scale. Cells are drawn as flat
matplotlib polygons, one colour each (no interpolation, no triangulation seams), labelled with
the papers' symbols and units. The animation uses the event log (``events/`` of
``--event-log`` runs: plastic strain rebuilt at many strains) when present, else the field
snapshots. No display is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from femplast.postprocess.figures import Entry


def read_series(xdmf: Path):
    """(points (n, 3), cell type, cells, times, [ {field: values} per time ]) of an XDMF series."""
    import meshio

    with meshio.xdmf.TimeSeriesReader(str(xdmf)) as rd:
        pts, blocks = rd.read_points_cells()
        times, data = [], []
        for i in range(rd.num_steps):
            t, _, cd = rd.read_data(i)
            times.append(float(t))
            data.append({k: np.asarray(v[0], float) for k, v in cd.items()})
    pts3 = np.zeros((len(pts), 3))
    pts3[:, : pts.shape[1]] = pts[:, :3]
    return pts3, blocks[0].type, np.asarray(blocks[0].data), times, data


def structured_mesh(n: int, L: float) -> tuple[np.ndarray, np.ndarray]:
    """(points (n+1)^2 x 3, quads) of the canonical structured mesh (cell ``iy * n + ix``)
    of an ``n x n`` box, counter-clockwise corners."""
    x = np.linspace(0.0, L, n + 1)
    X, Y = np.meshgrid(x, x)
    pts = np.column_stack([X.ravel(), Y.ravel(), np.zeros(X.size)])
    iy, ix = np.divmod(np.arange(n * n), n)
    p0 = iy * (n + 1) + ix
    return pts, np.column_stack([p0, p0 + 1, p0 + n + 2, p0 + n + 1])


OUTLIER_SHARE = 0.02  # at most this share of cells may be clipped ...
OUTLIER_RATIO = 3.0  # ... when the full range is this many times the range of the others


def color_range(values, robust: bool = False) -> tuple[tuple[float, float], str]:
    """(clim, colormap): symmetric diverging when the data straddle zero comparably,
    sequential otherwise. ``robust``: when a few cells (at most ``OUTLIER_SHARE``, e.g. an
    inclusion) span ``OUTLIER_RATIO`` times the range of all others, the range of the others,
    so the rest of the field is not washed out (the clipped cells show the end colours)."""
    v = np.concatenate([np.ravel(x) for x in values])
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (0.0, 1.0), "viridis"
    lo, hi = float(v.min()), float(v.max())
    if robust and len(v) >= 100:
        plo, phi = np.quantile(v, [OUTLIER_SHARE, 1 - OUTLIER_SHARE])
        # (not for a field that is constant but for the few cells: they are the field)
        if OUTLIER_RATIO * (phi - plo) < hi - lo < 1e3 * (phi - plo):
            lo, hi = float(plo), float(phi)
    if lo < 0 < hi and min(-lo, hi) > 0.2 * max(-lo, hi):
        m = max(-lo, hi)
        return (-m, m), "RdBu_r"
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 1e-6
    return (lo, hi), "viridis"


def distinct_times(times) -> list[int]:
    """Indices of the snapshots to draw: one per distinct time (the last written wins), so a
    series that repeats its final state shows it once."""
    keep: dict[float, int] = {}
    for i, t in enumerate(times):
        keep[round(float(t), 12)] = i
    return sorted(keep.values())


def draw_cells(ax, pts: np.ndarray, cells: np.ndarray, values: np.ndarray, norm, cmap,
               edges: bool = False):
    """Each cell as one flat polygon of its own colour (no interpolation, no triangulation:
    no seam inside a quad), equal aspect, no axes frame clutter."""
    from matplotlib.collections import PolyCollection

    pc = PolyCollection(pts[cells][..., :2], array=np.asarray(values, float), cmap=cmap,
                        norm=norm, edgecolors="0.3" if edges else "face",
                        linewidths=0.2 if edges else 0.05, antialiaseds=edges)
    ax.add_collection(pc)
    ax.set_xlim(pts[:, 0].min(), pts[:, 0].max())
    ax.set_ylim(pts[:, 1].min(), pts[:, 1].max())
    ax.set_aspect("equal")
    return pc


def specimen_band_field(series, label: str, saver, geometry: dict,
                        name: str = "localization_band_field"):
    """A specimen's plastic strain accumulated between successive field snapshots, drawn on
    its cells (deviatoric magnitude of the increment), with the band of each interval
    (:func:`femplast.analysis.specimen.line_band`: centre line and edges, and their periodic
    images on a specimen periodic along its walls; star: notch root)."""
    from femplast.analysis.specimen import line_band, stress_raiser
    from femplast.fe.geometry import ShapeSpec
    from femplast.postprocess import style as S

    plt = S.plt

    pts, _, cells, times, data = series
    if not data or "eps_pl_xy" not in data[0]:
        return []
    spec = ShapeSpec(**{k: v for k, v in geometry.items() if k in ShapeSpec.__dataclass_fields__})
    origin = stress_raiser(spec)
    poly = pts[cells][..., :2]
    x, y = poly[..., 0], poly[..., 1]
    area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y, axis=1))
    centre = poly.mean(axis=1)
    e = [np.column_stack([d["eps_pl_xx"], d["eps_pl_yy"], d["eps_pl_xy"]]) for d in data]
    panels = [(a, b, e[i] - (e[i - 1] if i else 0 * e[i])) for i, (a, b) in
              enumerate(zip([0.0] + list(times[:-1]), times, strict=True)) if b > a]
    if not panels:
        return []
    lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    # the periods of femplast.fe.patch_fe.box_periods from the nodes' bounding box (as the
    # mesh's width and height are): the line scan wraps across a periodic seam
    periods = np.where([spec.periodic == "x", spec.periodic == "y"], hi - lo, 0.0)
    periods = periods if periods.any() else None
    with S.style():
        fig, axs = plt.subplots(1, len(panels), figsize=(min(S.DOUBLE, 2.2 * len(panels)), 3.0),
                                squeeze=False)
        for ax, (a, b, d) in zip(axs[0], panels, strict=True):
            mag = np.hypot(0.5 * (d[:, 1] - d[:, 0]), d[:, 2])
            top = max(float(np.percentile(mag, 99)), 1e-300)
            draw_cells(ax, pts, cells, mag, plt.Normalize(0, top), "magma")
            band = line_band(centre, area, mag, spec.size, origin=origin, periods=periods)
            if band is not None:
                _draw_band(ax, band, lo, hi)
                ax.set_title(rf"$\gamma$ {a:g}-{b:g}: {band['orientation']:.0f}$^\circ$"
                             + (" (root)" if band.get("from_root") else ""), fontsize=8)
            if origin is not None:
                ax.plot(*origin, "*", color="w", ms=6)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        cap = (f"Plastic strain accumulated between field snapshots ({label}) on the "
               "specimen (deviatoric magnitude); cyan: centre line (solid) and edges (dashed) "
               "of the band found by the line scan (femplast.analysis.specimen.line_band; "
               "across a periodic seam, with its images), "
               "its angle from x in the title, '(root)' when it passes through the notch "
               "root (star).")
        return [saver.save(fig, name, cap)]


def _draw_band(ax, band: dict, lo, hi) -> None:
    """Centre line (solid) and edges (dashed) of a :func:`femplast.analysis.specimen.line_band`
    band, and of its periodic images (offsets ``position + k period``) that cross the view."""
    t = np.radians(band["orientation"])
    u, nrm = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    span = np.linspace(-1, 1, 2) * float(np.hypot(*(hi - lo)))
    P = band.get("period")
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]]) @ nrm
    ks = (range(int(np.floor((corners.min() - band["position"]) / P)) - 1,
                int(np.ceil((corners.max() - band["position"]) / P)) + 2) if P else [0])
    for k in ks:
        s = band["position"] + k * (P or 0.0)
        for off, ls in ((0.0, "-"), (-0.5, "--"), (0.5, "--")):
            c = nrm * (s + off * band["width"])
            ax.plot(c[0] + span * u[0], c[1] + span * u[1], "c", ls=ls, lw=0.8)


def render_field(xdmf: Path, name: str, out: Path, times=None, panel: float = 2.3) -> Entry:
    """One PNG: cell field ``name`` at each distinct snapshot (or the given time indices),
    one colour scale, the papers' symbol and unit on the colour bar."""
    from femplast.postprocess import style as S

    pts, _, cells, ts, data = read_series(xdmf)
    idx = distinct_times(ts) if times is None else list(times)
    vals = [data[i][name] for i in idx]
    clim, cmap = color_range(vals, robust=True)
    vmin = min(float(np.nanmin(v)) for v in vals)
    vmax = max(float(np.nanmax(v)) for v in vals)
    clipped = vmin < clim[0] or vmax > clim[1]
    norm = S.matplotlib.colors.Normalize(*clim)
    n = len(idx)
    edges = len(cells) <= 1024
    with S.style():
        fig, axs = S.plt.subplots(1, n, figsize=(panel * n + 0.9, panel + 0.3), squeeze=False)
        for ax, i, v in zip(axs[0], idx, vals, strict=True):
            pc = draw_cells(ax, pts, cells, v, norm, cmap, edges)
            ax.set_title(rf"$\gamma^{{\rm ext}}$ = {ts[i]:.4g}")
            ax.set_xlabel(f"$x$ [{S.U_LENGTH}]")
        axs[0, 0].set_ylabel(f"$y$ [{S.U_LENGTH}]")
        for ax in axs[0, 1:]:
            ax.tick_params(labelleft=False)
        fig.colorbar(pc, ax=list(axs[0]), label=S.field_label(name), shrink=0.9, pad=0.02,
                     extend="both" if clipped else "neither")
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        S.plt.close(fig)
    cap = (f"{S.field_label(name)} of {xdmf.stem} at gamma_ext = "
           + ", ".join(f"{ts[i]:.4g}" for i in idx)
           + f" (one colour per cell; colour range {clim[0]:.3g} .. {clim[1]:.3g}"
           + (f", clipped: values span {vmin:.3g} .. {vmax:.3g}" if clipped else "")
           + "; ParaView file "
           f"fields/{xdmf.name}).")
    return Entry(out, cap, "render")


def inclusion_job(run, figdir: Path) -> Entry | None:
    """The inclusion case (``model: inclusion``) against the analytic Eshelby field: FE cell
    stress Sigma_xy, the periodic analytic field at the cell centres
    (:func:`measures.compare_eshelby`) and their difference, with the relative error."""
    from femplast.postprocess import measures as M
    from femplast.postprocess import style as S

    info = (run.summary or {}).get("inclusion")
    xd = [p for p in run.xdmf if p.stem == "inclusion"]
    if not info or not xd:
        return None
    case = run.summary["case"]
    pts, _, cells, _, data = read_series(xd[0])
    d = data[-1]
    fe = np.column_stack([d["sigma_xx"], d["sigma_yy"], d["sigma_xy"]])
    lo = pts[:, :2].min(axis=0)
    L = float(pts[:, 0].max() - lo[0])
    inc = dict(case["inclusion"], area=info.get("inclusion_area"))
    cmp = M.compare_eshelby(pts[cells][..., :2].mean(axis=1) - lo, fe, L,
                            L / float(case["mesh"]["n"]), inc, float(case["elasticity"]["G"]),
                            float(case["elasticity"]["B"]), info["mean_stress"])
    out_m = ~cmp.inside
    m = float(np.abs(cmp.analytic[out_m, 2]).max())  # exterior range: the inside is clipped
    norm = S.matplotlib.colors.Normalize(-m, m)
    diff = cmp.fe[:, 2] - cmp.analytic[:, 2]
    e = float(np.abs(diff).max()) or 1.0
    with S.style():
        fig, ax = S.plt.subplots(1, 3, figsize=(S.DOUBLE, 2.7), layout="constrained")
        sym = S.field_symbol("sigma_xy")
        pc = draw_cells(ax[0], pts - [*lo, 0], cells, cmp.fe[:, 2], norm, "RdBu_r")
        draw_cells(ax[1], pts - [*lo, 0], cells, cmp.analytic[:, 2], norm, "RdBu_r")
        fig.colorbar(pc, ax=ax[:2], label=f"{sym} [{S.U_STRESS}]", extend="both",
                     shrink=0.85, pad=0.02)
        pe = draw_cells(ax[2], pts - [*lo, 0], cells, diff, S.matplotlib.colors.Normalize(-e, e),
                        "PuOr_r")
        fig.colorbar(pe, ax=ax[2], label=f"FE $-$ analytic [{S.U_STRESS}]", extend="both",
                     shrink=0.85, pad=0.04)
        ax[0].set_title(f"(a) FE\ninside {cmp.inside_fe:.4f}", fontsize=8)
        ax[1].set_title(f"(b) analytic Eshelby\ninside {cmp.inside_analytic:.4f}", fontsize=8)
        ax[2].set_title(f"(c) FE $-$ analytic\nL2 error {100 * cmp.rel_error_outside:.1f} % "
                        "outside", fontsize=8)
        zoom = min(L / 2, 8 * float(inc["radius"]))  # the near field, where the field lives
        for a in ax:
            a.set_xlim(L / 2 - zoom, L / 2 + zoom)
            a.set_ylim(L / 2 - zoom, L / 2 + zoom)
            a.set_xlabel(f"$x$ [{S.U_LENGTH}]")
            a.tick_params(labelsize=6)
        ax[0].set_ylabel(f"$y$ [{S.U_LENGTH}]")
        out = Path(figdir) / "inclusion_eshelby.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        S.plt.close(fig)
    cap = (f"Sheared circular inclusion (radius {inc['radius']:g}, eps0 = {inc['eps0']:g}): "
           f"(a) FE cell stress Sigma_xy, (b) the analytic Eshelby field of the circle of the "
           f"same area, summed over periodic images, at the cell centres (same scale, clipped "
           f"inside the inclusion), (c) their difference (the largest errors sit on the "
           f"staircase interface of the cells). Near field shown: +-8 radii. "
           f"Inside: FE {cmp.inside_fe:.5g}, "
           f"analytic {cmp.inside_analytic:.5g} (relative difference "
           f"{cmp.inside_fe / cmp.inside_analytic - 1:+.2%}); outside, beyond one cell from "
           f"the interface: relative L2 error {cmp.rel_error_outside:.4f}.")
    return Entry(out, cap, "figure")


def plastic_strain_frames(events: dict, num_cells: int, steps: np.ndarray, dgamma: float,
                          component: str = "xy") -> np.ndarray:
    """Plastic strain component per cell after each of ``steps`` (loading-step indices),
    rebuilt from the event log: a slip dg on a system at angle theta adds
    ``dg/2 * (-sin 2theta, sin 2theta, cos 2theta)`` to ``eps_pl [xx, yy, xy]``."""
    th = np.asarray(events["theta"])
    dg = np.asarray(events["d_gamma"])
    inc = {"xx": -0.5 * np.sin(2 * th) * dg, "yy": 0.5 * np.sin(2 * th) * dg,
           "xy": 0.5 * np.cos(2 * th) * dg}[component]
    f = np.searchsorted(steps, np.asarray(events["step"]), side="left")
    ok = f < len(steps)
    acc = np.zeros((len(steps), num_cells))
    np.add.at(acc, (f[ok], np.asarray(events["cell"])[ok]), inc[ok])
    return np.cumsum(acc, axis=0)


def write_gif(frames: list[np.ndarray], out: Path, ms: int = 150, hold: int = 6):
    from PIL import Image

    rgb = [Image.fromarray(f).convert("RGB") for f in frames]
    # one palette for every frame (from the last, which spans the colour bar): no flicker
    pal = rgb[-1].quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    ims = [im.quantize(palette=pal, dither=Image.Dither.NONE) for im in rgb]
    ims += [ims[-1]] * hold  # linger on the final state
    ims[0].save(out, save_all=True, append_images=ims[1:], duration=ms, loop=0, optimize=True)


def animate(pts: np.ndarray, cells: np.ndarray, values: np.ndarray, gammas, out: Path,
            name: str = "eps_pl_xy", source: str = "") -> Entry:
    """GIF of one cell field over frames (``values[frame, cell]``), fixed colour scale, cells
    as flat polygons (:func:`draw_cells`)."""
    from femplast.postprocess import style as S

    clim, cmap = color_range([values[-1], values[0]])
    frames = []
    with S.style():
        fig, ax = S.plt.subplots(figsize=(4.2, 3.4), dpi=110)
        pc = draw_cells(ax, pts, cells, values[0], S.matplotlib.colors.Normalize(*clim), cmap,
                        len(cells) <= 1024)
        fig.colorbar(pc, ax=ax, label=S.field_label(name))
        ax.set_xlabel(f"$x$ [{S.U_LENGTH}]")
        ax.set_ylabel(f"$y$ [{S.U_LENGTH}]")
        title = ax.set_title(rf"$\gamma^{{\rm ext}}$ = {gammas[0]:.4f}")  # room for it
        fig.tight_layout()
        for v, gm in zip(values, gammas, strict=True):
            pc.set_array(np.asarray(v, float))
            title.set_text(rf"$\gamma^{{\rm ext}}$ = {gm:.4f}")
            fig.canvas.draw()
            frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        S.plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_gif(frames, out)
    cap = (f"Animation of {S.field_label(name)} accumulating from gamma_ext = {gammas[0]:.3g} "
           f"to {gammas[-1]:.3g} ({len(frames)} frames, {source}).")
    return Entry(out, cap, "animation")


def animation_job(run, outdir: Path, real=None, num_frames: int = 48):
    """The plastic-strain GIF of one realization: from its event log if it has one (many
    frames), else from its field snapshots; None when neither exists."""
    reals = run.realizations
    real = real or next((r for r in reals if r.events and len(r.events.get("cell", []))), None)
    xd = {p.stem: p for p in run.xdmf}
    if real is not None and real.events:
        if real.name in xd:
            pts, _, cells, _, _ = read_series(xd[real.name])
        else:
            try:
                mesh = run.summary["case"]["mesh"]
                if mesh["kind"] != "quad":
                    return None
                pts, cells = structured_mesh(int(mesh["n"]), float(mesh["L"]))
            except (TypeError, KeyError):
                return None
        k_end = len(real.gamma) - 1
        steps = np.unique(np.linspace(0, k_end, num_frames).round().astype(int))
        vals = plastic_strain_frames(real.events, len(cells), steps, 0.0)
        return animate(pts, cells, vals, real.gamma[steps],
                       outdir / f"{real.name}_eps_pl_xy.gif",
                       source=f"{real.name}, rebuilt from the event log")
    for p in run.xdmf:
        pts, _, cells, ts, data = read_series(p)
        if len(ts) >= 2 and all("eps_pl_xy" in d for d in data):
            vals = np.vstack([d["eps_pl_xy"] for d in data])
            return animate(pts, cells, vals, ts, outdir / f"{p.stem}_eps_pl_xy.gif",
                           source=f"{p.stem}, field snapshots")
    return None
