"""Off-screen pyvista renders of the cell fields (``fields/*.xdmf``) and a GIF of plastic strain.

The XDMF time series written by :class:`femplast.io.output.FieldWriter` is read with meshio (the
same file ParaView opens); every field gets one PNG with a panel per snapshot and a shared colour
scale. The animation uses the event log (``events/`` of ``--event-log`` runs: plastic strain
rebuilt at many strains) when present, else the field snapshots. No display is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from femplast.postprocess.figures import Entry

os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")

VTK_TYPES = {"quad": 9, "triangle": 5}
SEQUENTIAL = {"sigma_vm", "dtau_c_min"}


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


def grid(points: np.ndarray, cell_type: str, cells: np.ndarray):
    import pyvista as pv

    return pv.UnstructuredGrid({VTK_TYPES[cell_type]: cells}, points)


def structured_grid(n: int, L: float):
    """The canonical structured quad mesh (cell ``iy * n + ix``) of an ``n x n`` box."""
    x = np.linspace(0.0, L, n + 1)
    X, Y = np.meshgrid(x, x)
    pts = np.column_stack([X.ravel(), Y.ravel(), np.zeros(X.size)])
    iy, ix = np.divmod(np.arange(n * n), n)
    p0 = iy * (n + 1) + ix
    cells = np.column_stack([p0, p0 + 1, p0 + n + 2, p0 + n + 1])
    return grid(pts, "quad", cells)


def color_range(values) -> tuple[tuple[float, float], str]:
    """(clim, colormap): symmetric diverging when the data straddle zero comparably,
    sequential otherwise."""
    v = np.concatenate([np.ravel(x) for x in values])
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (0.0, 1.0), "viridis"
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 < hi and min(-lo, hi) > 0.2 * max(-lo, hi):
        m = max(-lo, hi)
        return (-m, m), "RdBu_r"
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 1e-6
    return (lo, hi), "viridis"


def _plotter(shape, size, col_weights=None):
    import pyvista as pv

    pv.vtk_verbosity("off")  # no "bad X server connection" noise: rendering is off-screen
    pl = pv.Plotter(off_screen=True, shape=shape, window_size=size, border=False,
                    col_weights=col_weights)
    pl.set_background("white")
    return pl


def _frame(pl, mesh, name, clim, cmap, title, edges: bool, opacity=1.0):
    pl.add_mesh(mesh, scalars=name, cmap=cmap, clim=clim, show_edges=edges, lighting=False,
                edge_color="#444444", line_width=0.5, show_scalar_bar=False, opacity=opacity)
    if title:
        pl.add_text(title, position="upper_left", font_size=10, color="black", name="title")
    pl.view_xy()
    pl.camera.parallel_projection = True
    pl.reset_camera()
    pl.camera.zoom(1.08)


def _bar(pl, mesh, name, clim, cmap):
    """The colour bar alone in the current (narrow) subplot."""
    _frame(pl, mesh, name, clim, cmap, "", False, opacity=0.0)
    pl.add_scalar_bar(title=name, vertical=True, fmt="%.3g", color="black",
                      title_font_size=15, label_font_size=13, position_x=0.08,
                      position_y=0.08, width=0.38, height=0.74, n_labels=5)


def render_field(xdmf: Path, name: str, out: Path, times=None, panel=360) -> Entry:
    """One PNG: field ``name`` at each snapshot (or the given time indices), shared scale."""
    pts, ctype, cells, ts, data = read_series(xdmf)
    idx = list(range(len(ts))) if times is None else list(times)
    g = grid(pts, ctype, cells)
    vals = [data[i][name] for i in idx]
    clim, cmap = color_range(vals)
    n = len(idx)
    pl = _plotter((1, n + 1), (int(panel * (n + 0.45)), panel), [1.0] * n + [0.45])
    edges = len(cells) <= 1024
    for j, (i, v) in enumerate(zip(idx, vals, strict=True)):
        pl.subplot(0, j)
        m = g.copy()
        m.cell_data[name] = v
        _frame(pl, m, name, clim, cmap, f"gamma_ext = {ts[i]:.4g}", edges)
    pl.subplot(0, n)
    _bar(pl, m, name, clim, cmap)
    out.parent.mkdir(parents=True, exist_ok=True)
    pl.screenshot(str(out))
    pl.close()
    cap = (f"{name} of {xdmf.stem} at gamma_ext = " + ", ".join(f"{ts[i]:.4g}" for i in idx)
           + f" (colour range {clim[0]:.3g} .. {clim[1]:.3g}; ParaView file "
           f"fields/{xdmf.name}).")
    return Entry(out, cap, "render")


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


def animate(g, values: np.ndarray, gammas, out: Path, name="eps_pl_xy", size=(560, 420),
            source="") -> Entry:
    """GIF of one cell field over frames (``values[frame, cell]``), fixed colour scale."""
    clim, cmap = color_range([values[-1], values[0]])
    pl = _plotter((1, 2), size, [1.0, 0.35])
    m = g.copy()
    m.cell_data[name] = values[0]
    pl.subplot(0, 1)
    _bar(pl, m.copy(), name, clim, cmap)
    pl.subplot(0, 0)
    _frame(pl, m, name, clim, cmap, "", g.n_cells <= 1024)
    frames = []
    for v, gm in zip(values, gammas, strict=True):
        m.cell_data[name] = v
        pl.add_text(f"gamma_ext = {gm:.4f}", position="upper_left", font_size=10,
                    color="black", name="title")
        pl.render()
        frames.append(pl.screenshot(return_img=True))
    pl.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_gif(frames, out)
    cap = (f"Animation of {name} accumulating from gamma_ext = {gammas[0]:.3g} to "
           f"{gammas[-1]:.3g} ({len(frames)} frames, {source}).")
    return Entry(out, cap, "animation")


def animation_job(run, outdir: Path, real=None, num_frames: int = 48):
    """The plastic-strain GIF of one realization: from its event log if it has one (many
    frames), else from its field snapshots; None when neither exists."""
    reals = run.realizations
    real = real or next((r for r in reals if r.events and len(r.events.get("cell", []))), None)
    xd = {p.stem: p for p in run.xdmf}
    if real is not None and real.events:
        if real.name in xd:
            pts, ctype, cells, _, _ = read_series(xd[real.name])
            g = grid(pts, ctype, cells)
        else:
            try:
                mesh = run.summary["case"]["mesh"]
                if mesh["kind"] != "quad":
                    return None
                g = structured_grid(int(mesh["n"]), float(mesh["L"]))
            except (TypeError, KeyError):
                return None
        k_end = len(real.gamma) - 1
        steps = np.unique(np.linspace(0, k_end, num_frames).round().astype(int))
        vals = plastic_strain_frames(real.events, g.n_cells, steps, 0.0)
        return animate(g, vals, real.gamma[steps], outdir / f"{real.name}_eps_pl_xy.gif",
                       source=f"{real.name}, rebuilt from the event log")
    for p in run.xdmf:
        pts, ctype, cells, ts, data = read_series(p)
        if len(ts) >= 2 and all("eps_pl_xy" in d for d in data):
            vals = np.vstack([d["eps_pl_xy"] for d in data])
            return animate(grid(pts, ctype, cells), vals, ts, outdir / f"{p.stem}_eps_pl_xy.gif",
                           source=f"{p.stem}, field snapshots")
    return None
