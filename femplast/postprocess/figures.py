"""Matplotlib figures, one function per observable family, each a no-op when its data is absent.

Every function takes the :class:`~femplast.postprocess.data.RunData` and a :class:`Saver`
and returns the written :class:`Entry` list; :func:`jobs` lists the functions that apply to a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from femplast.analysis.calibration import avalanche_samples
from femplast.postprocess import measures as M
from femplast.postprocess import style as S
from femplast.postprocess.data import (
    PATCH_QUANTITIES,
    SCALAR_OBSERVABLES,
    Realization,
    RunData,
    ensemble,
)

plt = S.plt


@dataclass
class Entry:
    path: Path  # the PNG (or GIF)
    caption: str
    kind: str = "figure"  # figure | render | animation
    extra: tuple[Path, ...] = ()  # the same figure in other formats


class Saver:
    def __init__(self, figdir: Path, formats=("png",)):
        self.figdir = Path(figdir)
        self.formats = tuple(formats)
        self.figdir.mkdir(parents=True, exist_ok=True)

    def save(self, fig, name: str, caption: str) -> Entry:
        paths = []
        for ext in self.formats:
            p = self.figdir / f"{name}.{ext}"
            fig.savefig(p)
            paths.append(p)
        plt.close(fig)
        return Entry(paths[0], caption, "figure", tuple(paths[1:]))


def _stationary(run: RunData, gamma: np.ndarray) -> tuple[np.ndarray, float]:
    g0 = run.stationary_from
    if g0 is None:  # no summary: the last half of the run
        g0 = 0.5 * float(gamma[-1])
    m = gamma > g0
    if m.sum() < 2:
        return np.ones_like(gamma, bool), float(gamma[0])
    return m, g0


def _density(ax, x, bins=40, log=False, **kw):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if log:
        x = x[x > 0]
    if len(x) == 0:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
        return
    if x.max() - x.min() <= 1e-12 * max(1.0, abs(x).max()):  # a delta: mark its position
        kw.pop("ls", None)
        ax.axvline(x[0], lw=1.5, **kw)
        return
    if log:
        edges = np.logspace(np.log10(x.min()), np.log10(x.max()) + 1e-9, bins)
    else:
        edges = np.linspace(x.min(), x.max(), bins)
    h, e = np.histogram(x, edges, density=True)
    c = np.sqrt(e[1:] * e[:-1]) if log else 0.5 * (e[1:] + e[:-1])
    ok = h > 0
    kw.setdefault("ls", "-")
    ax.plot(c[ok], h[ok], marker="o", ms=3, **kw)


def _band(ax, g, vals, color, label, n_thin=8):
    mean, std = vals.mean(axis=0), vals.std(axis=0)
    if len(vals) <= n_thin:
        for v in vals:
            ax.plot(g, v, color=color, lw=0.4, alpha=0.35)
    ax.fill_between(g, mean - std, mean + std, color=color, alpha=0.25, lw=0,
                    label=r"$\pm 1$ std")
    ax.plot(g, mean, color=color, label=label)


def _stat_line(ax, g0):
    if g0 is not None and g0 > 0:
        ax.axvline(g0, color="0.5", lw=0.7, ls=":")


# ----------------------------------------------------------------------------- macroscale
def stress_strain(run: RunData, saver: Saver) -> list[Entry]:
    reals = [r for r in run.realizations if r.stress is not None]
    if not reals:
        return []
    a = reals[0].alpha_deg
    g, vals = ensemble(reals)
    _, g0 = _stationary(run, g)
    with S.style():
        fig, ax = plt.subplots(1, 2, figsize=(S.DOUBLE, 2.7), sharey=True)
        r = reals[0]
        ax[0].plot(*r.curve(), color=S.COLORS[0], lw=0.8)
        ax[0].set_title(f"single realization ({r.name})")
        _band(ax[1], g, vals, S.COLORS[1], f"mean of {len(vals)} realizations")
        pf = M.peak_and_flow(g, vals.mean(axis=0), g0)
        ax[1].plot([pf.gamma_peak], [pf.peak], "v", ms=6, color=S.COLORS[0], zorder=5,
                   label=rf"peak $\Sigma_{{\rm peak}}$ = {pf.peak:.3f}")
        ax[1].hlines(pf.flow, max(g0, float(g[0])), float(g[-1]), color="k", ls="--", lw=1.0,
                     zorder=4, label=rf"flow $\Sigma_{{\rm flow}}$ = {pf.flow:.3f} $\pm$ "
                                     f"{pf.flow_std:.3f}")
        ax[1].set_title("ensemble")
        ax[1].legend(loc="lower right")
        for x in ax:
            x.set_xlabel(S.strain_label(r.stress_measure))
            _stat_line(x, g0)
        ax[0].set_ylabel(S.stress_label(a, measure=r.stress_measure))
        S.panel_letters(ax)
        fig.tight_layout()
        cap = (f"Stress-strain curve: (a) realization {r.name}, (b) mean over {len(vals)} "
               f"realizations with a band of one standard deviation; peak stress {pf.peak:.4g} "
               f"at gamma_ext = {pf.gamma_peak:.4g} (triangle), flow stress {pf.flow:.4g} +- "
               f"{pf.flow_std:.2g} (dashed: mean and std of the mean curve for gamma_ext > "
               f"{g0:g}, dotted line: start of the stationary regime).")
        return [saver.save(fig, "stress_strain", cap)]


def stationary_samples(run: RunData) -> dict | None:
    """Samples of the stationary regime pooled over realizations: external stress ``sig``,
    positive avalanche stress drops ``drop``, stress increments ``inc`` (the elastic rise
    between two avalanches, femplast.analysis.calibration.avalanche_samples), avalanche sizes
    ``size`` (when recorded), the start ``g0``, the loading angle ``alpha`` and ``n``."""
    reals = [r for r in run.realizations if r.stress is not None]
    if not reals:
        return None
    _, g0 = _stationary(run, reals[0].gamma)
    sig, inc, drops, sizes = [], [], [], []
    for r in reals:
        m, _ = _stationary(run, r.gamma)
        s = r.resolved()
        sig.append(s[m])
        av = r.avalanche_stress()
        if av is not None:  # the paper's definitions (femplast.analysis.calibration)
            smp = avalanche_samples(av[1], av[2], av[0], g0)
            inc.append(smp["increments"])
            drops.append(smp["drops"][~smp["negative"]])  # densities exclude negative drops
        else:
            dg = r.drop_gamma()
            drops.append(r.drops()[dg > g0] if len(dg) else r.drops())
        sz = r.sizes()
        if sz is not None:
            sizes.append(sz[1][sz[0] > g0])
    return dict(sig=np.concatenate(sig), drop=np.concatenate(drops),
                inc=np.concatenate(inc) if inc else None,
                size=np.concatenate(sizes) if sizes else None, g0=g0,
                alpha=reals[0].alpha_deg, n=len(reals), measure=reals[0].stress_measure)


def _step_density(ax, hist, **kw):
    """A reference histogram (:class:`femplast.analysis.calibration.Histogram`) as steps."""
    d = np.append(hist.density, hist.density[-1])
    ax.step(hist.edges, d, where="post", lw=1.0, **kw)


REF_MACRO = {"sig": "sigma_xy", "drop": "drop_xy", "inc": "increment_xy"}


def macro_densities(run: RunData, saver: Saver) -> list[Entry]:
    """Stationary densities of the external stress, the stress drops and the stress
    increments between avalanches (paper Fig. 2), with the reference's histograms as steps
    when given."""
    d = stationary_samples(run)
    if d is None:
        return []
    a, g0 = d["alpha"], d["g0"]
    panels = [p for p in ("sig", "drop", "inc") if d[p] is not None]
    ref = run.reference
    with S.style():
        fig, axs = plt.subplots(1, len(panels), figsize=(S.DOUBLE, 2.5))
        ax = dict(zip(panels, np.atleast_1d(axs), strict=True))
        what = {"sig": "", "drop": "drop", "inc": "inc"}
        for p in panels:
            log = p == "drop"
            _density(ax[p], d[p], log=log, color=S.COLORS[0], label="femplast")
            if ref is not None and REF_MACRO[p] in ref.macro:
                _step_density(ax[p], ref.macro[REF_MACRO[p]], color=S.COLORS[1],
                              label=_ref_label(run))
            if log:
                ax[p].set_xscale("log")
            if p != "sig":
                ax[p].set_yscale("log")
            ax[p].set_xlabel(S.stress_label(a, what[p], d["measure"]))
            ax[p].set_ylabel(rf"$P(${S.stress_symbol(a, what[p], d['measure'])}$)$")
        if ref is not None:
            ax[panels[0]].legend(loc="upper left")
        S.panel_letters(list(ax.values()), x=-0.25)
        fig.tight_layout()
        parts = {"sig": f"{S.STRESS_NAMES[d['measure']]} ({len(d['sig'])} values)",
                 "drop": f"stress drops of avalanches ({len(d['drop'])})",
                 "inc": "stress increments between avalanches"}
        cap = (f"Probability densities in the stationary regime (gamma_ext > {g0:g}), "
               f"{d['n']} realizations: "
               + ", ".join(f"({chr(97 + i)}) {parts[p]}" for i, p in enumerate(panels))
               + (f"; steps: reference {run.reference_path.name}" if ref is not None else "")
               + ".")
        return [saver.save(fig, "densities", cap)]


def avalanche_sizes(run: RunData, saver: Saver) -> list[Entry]:
    """Density of the avalanche sizes S (slip events per avalanche) in the stationary regime
    with the maximum-likelihood power law P(S) ~ S^-tau above S_min
    (:func:`measures.fit_power_law`: x_min by KS distance, bootstrap 95 % interval)."""
    d = stationary_samples(run)
    if d is None or d["size"] is None or not (d["size"] > 0).any():
        return []
    sizes = d["size"][d["size"] > 0]
    fit = M.fit_power_law(sizes)
    with S.style():
        fig, ax = plt.subplots(figsize=(S.SINGLE[0] * 1.2, S.SINGLE[1] * 1.2))
        edges = np.unique(np.round(np.geomspace(1, sizes.max() + 1, 25))) - 0.5
        h, e = np.histogram(sizes, edges)
        dens = h / (len(sizes) * np.diff(e))  # per unit size: a pmf for integer sizes
        c = np.sqrt((e[:-1] + 0.5) * (e[1:] - 0.5))  # geometric centre of the sizes in a bin
        ok = h > 0
        ax.plot(c[ok], dens[ok], "o", color=S.COLORS[0], label=f"{len(sizes)} avalanches")
        cap = (f"Avalanche-size density in the stationary regime (gamma_ext > {d['g0']:g}, "
               f"{d['n']} realizations, logarithmic bins)")
        if fit is not None:
            xx = np.geomspace(fit.x_min, sizes.max(), 50)
            ax.plot(xx, fit.density(xx), "-", color="k", lw=1.0,
                    label=rf"MLE $\tau$ = {fit.alpha:.2f} [{fit.alpha_lo:.2f}, "
                          rf"{fit.alpha_hi:.2f}], $S \geq$ {fit.x_min:g}")
            ax.axvline(fit.x_min, color="0.6", ls=":", lw=0.8)
            cap += (f"; maximum-likelihood exponent tau = {fit.alpha:.4g} (95 % bootstrap "
                    f"interval {fit.alpha_lo:.4g} .. {fit.alpha_hi:.4g}) over the "
                    f"{fit.n_tail} avalanches with S >= {fit.x_min:g} (KS distance "
                    f"{fit.ks:.3f}; {'discrete' if fit.discrete else 'continuous'} MLE, "
                    "Clauset et al. 2009)")
        else:
            cap += "; too few avalanches for a power-law fit"
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"avalanche size $S$ [slip events]")
        ax.set_ylabel(r"$P(S)$")
        ax.legend(loc="lower left")
        fig.tight_layout()
        return [saver.save(fig, "avalanche_sizes", cap + ".")]


def rms_deviation(reals: list[Realization], g0: float, widths=None):
    """r(dgamma) = < std(Sigma | gamma, gamma + dgamma) >_gamma over the stationary regime
    (all windows of ``w`` steps, every realization); returns (dgamma, r, std of Sigma)."""
    dgam = float(np.median(np.diff(reals[0].gamma)))
    series = [r.resolved()[r.gamma > g0] for r in reals]
    n = min(len(s) for s in series)
    if n < 4:
        return None
    if widths is None:
        widths = np.unique(np.geomspace(2, max(n // 2, 3), 24).astype(int))
    rs = []
    for w in widths:
        acc = []
        for s in series:
            c1 = np.concatenate([[0.0], np.cumsum(s)])
            c2 = np.concatenate([[0.0], np.cumsum(s * s)])
            m1 = (c1[w:] - c1[:-w]) / w
            m2 = (c2[w:] - c2[:-w]) / w
            acc.append(np.sqrt(np.maximum(m2 - m1 * m1, 0.0)))
        rs.append(np.concatenate(acc).mean())
    std = float(np.concatenate(series).std())
    return (np.asarray(widths) - 1) * dgam, np.asarray(rs), std


def rms(run: RunData, saver: Saver) -> list[Entry]:
    reals = [r for r in run.realizations if r.stress is not None and r.uniform_steps]
    if not reals:
        return []
    _, g0 = _stationary(run, reals[0].gamma)
    res = rms_deviation(reals, g0)
    if res is None:
        return []
    x, r, std = res
    if not (r > 0).any():  # a constant stress: nothing to draw on log axes
        return []
    a = reals[0].alpha_deg
    with S.style():
        fig, ax = plt.subplots(figsize=S.SINGLE)
        ax.loglog(x, r, "o-", ms=3, color=S.COLORS[0], label=r"$r(\Delta\gamma^{\rm ext})$")
        ax.axhline(std, color="0.4", ls="--", lw=0.8, label=rf"std({S.stress_symbol(a)})")
        ref = run.reference.rms if run.reference is not None else None
        if ref is not None:
            ax.loglog(ref["dgamma"], ref["r"], "s", mfc="none", ms=3, color=S.COLORS[1],
                      label=_ref_label(run))
        ax.yaxis.set_minor_formatter(S.matplotlib.ticker.NullFormatter())
        ax.set_xlabel(r"strain window $\Delta\gamma^{\rm ext}$")
        ax.set_ylabel(rf"rms deviation $r$ [{S.U_STRESS}]")
        ax.legend()
        fig.tight_layout()
        cap = ("Root-mean-square deviation r of the external stress over strain windows "
               "(paper Fig. 5a) in the stationary regime; dashed: its standard deviation"
               + (f"; squares: reference {run.reference_path.name}" if ref is not None else "")
               + ".")
        return [saver.save(fig, "rms_deviation", cap)]


def plastic_activity(run: RunData, saver: Saver) -> list[Entry]:
    reals = run.realizations
    has_epl = any("eps_pl" in r.steps and r.steps["eps_pl"].ndim == 2 for r in reals)
    has_nev = any("n_events" in r.steps for r in reals)
    if not (has_epl or has_nev):
        return []
    with S.style():
        fig, ax = plt.subplots(1, 2, figsize=(S.DOUBLE, 2.6))
        if has_epl:
            rs = [r for r in reals if "eps_pl" in r.steps and r.steps["eps_pl"].ndim == 2]
            n = min(len(r.gamma) for r in rs)
            for j, (lab, c) in enumerate([("xx", 3), ("yy", 2), ("xy", 0)]):
                v = np.vstack([r.steps["eps_pl"][:n, j] for r in rs])
                _band(ax[0], rs[0].gamma[:n], v, S.COLORS[c],
                      rf"$\langle\varepsilon^{{\rm pl}}_{{{lab}}}\rangle$", n_thin=0)
            h, lab = ax[0].get_legend_handles_labels()
            keep = [i for i, s in enumerate(lab) if "std" not in s]
            ax[0].legend([h[i] for i in keep], [lab[i] for i in keep])
            ax[0].set_ylabel(r"mean plastic strain $\langle\varepsilon^{\rm pl}\rangle$")
        if has_nev:
            g, v = ensemble(reals, "n_events")
            _band(ax[1], g, np.cumsum(v, axis=1), S.COLORS[1], "mean", n_thin=8)
            ax[1].set_ylabel(r"cumulative slip events $N_{\rm ev}$")
            ax[1].legend(loc="upper left")
        for x in ax:
            x.set_xlabel(S.strain_label(reals[0].stress_measure))
        S.panel_letters(ax)
        fig.tight_layout()
        cap = ("Plastic activity: (a) mean plastic strain components (tensorial shear "
               "eps_xy = gamma/2) and (b) cumulative number of slip events versus strain; "
               "bands: one standard deviation over realizations.")
        return [saver.save(fig, "plastic_activity", cap)]


def scalar_evolution(run: RunData, saver: Saver) -> list[Entry]:
    present = [k for k in SCALAR_OBSERVABLES if ensemble(run.realizations, k)[0] is not None]
    if not present:
        return []
    n = len(present)
    with S.style():
        nr, nc = (2, 2) if n > 2 else (1, n)
        fig, ax = plt.subplots(nr, nc, figsize=(min(S.DOUBLE, 3.5 * nc), 2.5 * nr),
                               squeeze=False)
        ax = ax.ravel()
        for x in ax[n:]:
            x.axis("off")
        for i, k in enumerate(present):
            g, v = ensemble(run.realizations, k)
            _band(ax[i], g, v, S.COLORS[i], f"mean of {len(v)}")
            name, unit = S.SCALAR_LABELS[k]
            ax[i].set_ylabel(name + unit)
            ax[i].set_xlabel(S.strain_label(run.realizations[0].stress_measure))
        ax[0].legend(loc="best")
        S.panel_letters(ax[:n], x=-0.25)
        fig.tight_layout()
        cap = ("Scalar-model observables versus strain (mean over realizations, band of one "
               "standard deviation): " + ", ".join(present) + ".")
        return [saver.save(fig, "scalar_evolution", cap)]


# ----------------------------------------------------------------------------- Bauschinger
def _case(run: RunData, *keys, default=None):
    """A key of the resolved case in summary.json (``default`` when absent)."""
    v = (run.summary or {}).get("case", {})
    for k in keys:
        if not isinstance(v, dict) or k not in v or v[k] is None:
            return default
        v = v[k]
    return v


def stage_protocol(run: RunData) -> list[tuple[str, str | None]]:
    """(stage, the stage it starts from) in protocol order: the case's ``stages`` list when
    summary.json has it (``start:`` branches), else the directory order, each stage starting
    from the previous one."""
    spec = {s["name"]: s.get("start") for s in (_case(run, "stages", default=[]) or [])
            if isinstance(s, dict) and "name" in s}
    names = [n for n in spec if n in run.stages] + [n for n in run.stages if n not in spec]
    out, prev = [], None
    for n in names:
        out.append((n, spec.get(n) or prev))
        prev = n
    return out


def reload_stages(run: RunData) -> list[str]:
    """The branches reloaded from a common state (stages with ``start:``); without a case
    in summary.json, every stage after the second (load, unload, then the reloads)."""
    spec = [s for s in (_case(run, "stages", default=[]) or []) if isinstance(s, dict)]
    if spec:
        return [s["name"] for s in spec if s.get("start") and s["name"] in run.stages]
    return list(run.stages)[2:] or list(run.stages)


def elastic_modulus(run: RunData, g: np.ndarray, s: np.ndarray) -> float:
    """Slope of the elastic response ``Sigma = G gamma`` (case's elasticity.G; without it, or
    on a specimen, whose drive stress has its own stiffness, the slope of the first ten steps
    of the branch)."""
    G = _case(run, "elasticity", "G")
    if isinstance(G, (int, float)) and _case(run, "mesh", "kind") != "geometry":
        return float(G)
    k = min(len(g), 11)
    return float(np.polyfit(g[:k] - g[0], s[:k], 1)[0])


def reload_yield(run: RunData) -> dict[str, dict]:
    """Per reload branch: mean curve (gamma, mean, std, n) and its offset yield point
    (:func:`measures.offset_yield`, offset ``YIELD_OFFSET``) on the mean curve."""
    out = {}
    for name in reload_stages(run):
        reals = [r for r in run.stages[name] if r.stress is not None]
        if not reals:
            continue
        g, v = ensemble(reals)
        m = v.mean(axis=0)
        y = M.offset_yield(g, m, elastic_modulus(run, g, m))
        out[name] = dict(gamma=g, mean=m, std=v.std(axis=0), n=len(v), yield_point=y,
                         alpha=reals[0].alpha_deg)
    return out


def _protocol_curves(run: RunData):
    """Each stage's mean curve in the frame of the first stage: strain along the first
    loading direction a0 (``gamma cos 2(a - a0)``, accumulated from where the stage starts)
    and the stress resolved on a0."""
    a0 = None
    ends: dict[str, float] = {}
    curves = []
    for name, start in stage_protocol(run):
        reals = [r for r in run.stages[name] if r.stress is not None]
        if not reals:
            continue
        a = reals[0].alpha_deg
        a0 = a if a0 is None else a0
        proj = [Realization(r.name, r.gamma, r.stress, r.steps, alpha_deg=a0) for r in reals]
        g, v = ensemble(proj)
        x = ends.get(start, 0.0) + (g - g[0]) * np.cos(np.deg2rad(2 * (a - a0)))
        ends[name] = float(x[-1])
        curves.append((name, x, v.mean(axis=0), v.std(axis=0), a))
    return curves, a0


def bauschinger(run: RunData, saver: Saver) -> list[Entry]:
    """Bauschinger test (tensorial paper sec. 5, Fig. 5d): (a) the whole protocol in the
    frame of the first loading direction, (b) the reload branches from the unloaded state,
    each resolved on its own direction, with the offset yield stress marked."""
    curves, a0 = _protocol_curves(run)
    if not curves:
        return []
    ys = reload_yield(run)
    with S.style():
        fig, ax = plt.subplots(1, 2, figsize=(S.DOUBLE, 2.9))
        for i, (name, x, m, sd, a) in enumerate(curves):
            c = S.COLORS[i % len(S.COLORS)]
            ax[0].fill_between(x, m - sd, m + sd, color=c, alpha=0.2, lw=0)
            unload = "unload" in name  # drawn dashed on top: the forward reload retraces it
            ax[0].plot(x, m, color=c, ls="--" if unload else "-", zorder=4 if unload else 2,
                       label=rf"{name} ($\alpha_{{\rm ext}}$ = {a:g}°)")
        ax[0].axhline(0, color="0.6", lw=0.5)
        ax[0].set_xlabel(rf"strain along $\alpha_{{\rm ext}}$ = {a0:g}°, "
                         r"$\gamma^{\rm ext}$")
        specimen = _case(run, "mesh", "kind") == "geometry"  # stress: grip force / area
        ax[0].set_ylabel(f"grip force / area [{S.U_STRESS}]" if specimen
                         else S.stress_label(a0))
        ax[0].legend(loc="best", fontsize=6.5)
        notes = []
        for name, d in ys.items():
            c = S.COLORS[[n for n, *_ in curves].index(name) % len(S.COLORS)]
            g, m, sd = d["gamma"], d["mean"], d["std"]
            ax[1].fill_between(g, m - sd, m + sd, color=c, alpha=0.2, lw=0)
            lab = rf"{name} ($\alpha_{{\rm ext}}$ = {d['alpha']:g}°, n = {d['n']})"
            if d["yield_point"] is not None:
                gy, sy = d["yield_point"]
                lab += rf", $\Sigma_y$ = {sy:.3f}"
                ax[1].plot([gy], [sy], "o", ms=6, mfc="white", mec=c, mew=1.5, zorder=5)
                notes.append(f"{name}: yield stress {sy:.4g} at gamma_ext = {gy:.4g}")
            ax[1].plot(g, m, color=c, label=lab)
        G = elastic_modulus(run, curves[0][1], curves[0][2])
        gmax = max(float(d["gamma"][-1]) for d in ys.values()) if ys else 0.0
        xx = np.array([M.YIELD_OFFSET, gmax])
        ax[1].plot(xx, G * (xx - M.YIELD_OFFSET), ":", color="0.4", lw=0.8,
                   label=rf"offset line $G(\gamma - {M.YIELD_OFFSET:g})$")
        top = max((float((d["mean"] + d["std"]).max()) for d in ys.values()), default=1.0)
        ax[1].set_ylim(min(0.0, *(float(d["mean"].min()) for d in ys.values())) - 0.02,
                       1.15 * top)
        ax[1].set_xlim(0, gmax)
        ax[1].set_xlabel(r"strain of the reload $\gamma^{\rm ext}$")
        ax[1].set_ylabel(f"grip force / area [{S.U_STRESS}]" if specimen
                         else f"resolved stress {S.stress_symbol(90.0)} [{S.U_STRESS}]")
        ax[1].legend(loc="lower right", fontsize=6.5)
        S.panel_letters(ax, x=-0.15)
        fig.tight_layout()
        cap = ("Bauschinger test (paper Fig. 5d): (a) mean stress of every stage in the frame "
               f"of the first loading direction (alpha_ext = {a0:g} deg; band: one standard "
               "deviation); (b) the reloads from the unloaded state, each resolved on its own "
               f"direction, yield stress at a plastic strain gamma - Sigma/G = {M.YIELD_OFFSET:g}"
               " (circles). " + "; ".join(notes) + ".")
        return [saver.save(fig, "bauschinger", cap)]


# ----------------------------------------------------------------------------- patches
def patch_table(run: RunData) -> list[dict]:
    """Rows {state, R, alpha_deg, <q>_mean, <q>_std, n} from the raw tests (preferred) or
    summary.json 'patches'."""
    p = run.patches
    if p is None:
        return run.patch_rows
    rows = []
    keys = np.rec.fromarrays([p["state"], p["R"], p["alpha_deg"]], names="s,R,a")
    for key in np.unique(keys):
        m = (p["state"] == key["s"]) & (p["R"] == key["R"]) & (p["alpha_deg"] == key["a"])
        row = dict(state=str(key["s"]), R=float(key["R"]), alpha_deg=float(key["a"]),
                   n=int(m.sum()))
        for q in PATCH_QUANTITIES:
            if q in p:
                x = p[q][m].astype(float)
                x = x[np.isfinite(x)]
                if len(x):
                    row[f"{q}_mean"], row[f"{q}_std"] = float(x.mean()), float(x.std())
        rows.append(row)
    return rows


def _main_states(states: list[str]) -> list[str]:
    """With a pooled 'stationary' state, its single probes (gamma_ext=...) are left out."""
    if "stationary" in states:
        return [s for s in states if not s.startswith("gamma_ext=")]
    return states


def _patch_panels(n: int):
    """A two-column grid of ``n`` patch-quantity panels (unused cells hidden)."""
    nr = (n + 1) // 2
    fig, axes = plt.subplots(nr, 2, figsize=(S.DOUBLE, 2.3 * nr + 0.2), squeeze=False)
    axes = axes.ravel()
    for x in axes[n:]:
        x.axis("off")
    return fig, axes


def _sel(rows, **kw):
    return [r for r in rows if all(np.isclose(r[k], v) if isinstance(v, float) else r[k] == v
                                   for k, v in kw.items())]


PATCH_PANELS = ("tau_i", "tau_c", "dtau_c", "delta_tau_c")  # paper Fig. 4 (a)-(d)


def _few(values, k: int = 3) -> list[float]:
    """Up to ``k`` of the sorted values: smallest, largest and one in between."""
    v = sorted(set(values))
    if len(v) <= k:
        return v
    return [v[round(i * (len(v) - 1) / (k - 1))] for i in range(k)]


def _patch_states(rows) -> tuple[str, str | None]:
    """(main state, the quench state or None): the stationary state when present."""
    states = _main_states(list(dict.fromkeys(r["state"] for r in rows)))
    main = "stationary" if "stationary" in states else states[-1]
    init = next((s for s in states if s in ("initial", "quench") and s != main), None)
    return main, init


def _patch_grid(run: RunData, saver: Saver, stat: str) -> list[Entry]:
    """Patch averages (``stat`` mean) or standard deviations versus the shear orientation
    alpha (paper Figs. 4 and 8): one panel per quantity, a few patch sizes R (colours) in the
    main state, the quench state dashed at the largest R."""
    rows = patch_table(run)
    qs = [q for q in PATCH_PANELS if any(f"{q}_{stat}" in r for r in rows)]
    if not qs:
        return []
    main, init = _patch_states(rows)
    Rs = _few([r["R"] for r in rows if r["state"] == main])
    with S.style():
        fig, axes = _patch_panels(len(qs))
        for ax, q in zip(axes, qs, strict=False):
            sym, name = S.PATCH_LABELS[q]
            for j, R in enumerate(Rs):
                rr = sorted(_sel(rows, state=main, R=R), key=lambda r: r["alpha_deg"])
                rr = [r for r in rr if f"{q}_{stat}" in r]
                ax.plot([r["alpha_deg"] for r in rr], [r[f"{q}_{stat}"] for r in rr], "o-",
                        ms=3, color=S.COLORS[j % 8], label=f"{main}, R = {R:.3g}")
            if init is not None:
                rr = sorted(_sel(rows, state=init, R=Rs[-1]), key=lambda r: r["alpha_deg"])
                rr = [r for r in rr if f"{q}_{stat}" in r]
                ax.plot([r["alpha_deg"] for r in rr], [r[f"{q}_{stat}"] for r in rr], "s--",
                        ms=3, color="0.45", label=f"{init}, R = {Rs[-1]:.3g}")
            sy = rf"$\langle${sym}$\rangle$" if stat == "mean" else f"std({sym})"
            ax.set_ylabel(f"{sy} [{S.U_STRESS}]")
            ax.set_xlabel(r"shear orientation $\alpha$ [°]")
            ax.set_title(name, fontsize=8)
        axes[0].legend(fontsize=6.5)
        S.panel_letters(axes[:len(qs)], x=-0.2)
        fig.tight_layout()
        what = "averages" if stat == "mean" else "standard deviations"
        cap = (f"Patch {what} versus the shear orientation alpha (paper Fig. "
               f"{4 if stat == 'mean' else 8}): "
               + ", ".join(f"({chr(97 + i)}) {q}" for i, q in enumerate(qs))
               + f"; state {main} at R = {', '.join(f'{R:.3g}' for R in Rs)}"
               + (f", state {init} at R = {Rs[-1]:.3g} (dashed)" if init else "") + ".")
        return [saver.save(fig, f"patches_{stat}", cap)]


def patches_densities(run: RunData, saver: Saver) -> list[Entry]:
    """Densities of the patch quantities at alpha = 0 as step histograms: a few patch sizes in
    the main state (colours), the quench state at the largest R (grey)."""
    raw = run.patches
    if raw is None:
        return []
    rows = [dict(state=s, R=R) for s, R in zip(raw["state"], raw["R"], strict=True)]
    main, init = _patch_states(rows)
    Rs = _few(raw["R"][raw["state"] == main].tolist())
    a0 = min(set(raw["alpha_deg"].tolist()), key=abs)
    qs = [q for q in PATCH_PANELS if q in raw]
    with S.style():
        fig, axes = _patch_panels(len(qs))
        for ax, q in zip(axes, qs, strict=False):
            sym, name = S.PATCH_LABELS[q]
            sel = [(main, R, S.COLORS[j % 8]) for j, R in enumerate(Rs)]
            if init is not None:
                sel.append((init, Rs[-1], "0.45"))
            for st, R, c in sel:
                m = (raw["state"] == st) & np.isclose(raw["R"], R) & (raw["alpha_deg"] == a0)
                v = raw[q][m]
                v = v[np.isfinite(v)]
                if len(v) < 2:
                    continue
                edges = np.histogram_bin_edges(v, bins=int(np.clip(np.sqrt(len(v)), 6, 30)))
                ax.stairs(*np.histogram(v, edges, density=True), color=c, lw=1.1,
                          label=f"{st}, R = {R:.3g}")
            ax.set_xlabel(f"{name} {sym} [{S.U_STRESS}]")
            ax.set_ylabel(f"$P(${sym}$)$")
        axes[0].legend(fontsize=6.5)
        S.panel_letters(axes[:len(qs)], x=-0.2)
        fig.tight_layout()
        cap = (f"Densities of the patch quantities at alpha = {a0:g} deg (step histograms): "
               + ", ".join(f"({chr(97 + i)}) {q}" for i, q in enumerate(qs))
               + f"; state {main} at R = {', '.join(f'{R:.3g}' for R in Rs)}"
               + (f", state {init} at R = {Rs[-1]:.3g} (grey)" if init else "") + ".")
        return [saver.save(fig, "patches_densities", cap)]


def patches_mean(run: RunData, saver: Saver) -> list[Entry]:
    return _patch_grid(run, saver, "mean")


def patches_std(run: RunData, saver: Saver) -> list[Entry]:
    return _patch_grid(run, saver, "std")


def patches_drop_vs_yield(run: RunData, saver: Saver) -> list[Entry]:
    rows = [r for r in patch_table(run) if "tau_c_mean" in r and "delta_tau_c_mean" in r]
    if not rows:
        return []
    Rmax = max(r["R"] for r in rows)
    states = _main_states(list(dict.fromkeys(r["state"] for r in rows)))
    with S.style():
        fig, ax = plt.subplots(figsize=S.SINGLE)
        for si, s in enumerate(states):
            rr = sorted(_sel(rows, state=s, R=Rmax), key=lambda r: r["alpha_deg"])
            ax.plot([r["tau_c_mean"] for r in rr], [r["delta_tau_c_mean"] for r in rr], "o-",
                    color=S.COLORS[si % 8], label=s)
            for r in rr:
                if r["alpha_deg"] in (0.0, 90.0):
                    ax.annotate(f"{r['alpha_deg']:g}°", (r["tau_c_mean"],
                                r["delta_tau_c_mean"]), fontsize=6, xytext=(3, 3),
                                textcoords="offset points")
        ax.set_xlabel(rf"$\langle\tilde\tau_c\rangle$ [{S.U_STRESS}]")
        ax.set_ylabel(rf"$\langle\delta\tilde\tau_c\rangle$ [{S.U_STRESS}]")
        ax.legend()
        fig.tight_layout()
        cap = (f"Mean local stress drop versus mean yield stress at R = {Rmax:.3g} over "
               "orientations alpha, per state (paper Fig. 5c).")
        return [saver.save(fig, "patches_drop_vs_yield", cap)]


# ----------------------------------------------------------------------------- calibration
def best_per_k(t: dict[str, np.ndarray], by: str = "L_stat") -> dict[str, np.ndarray]:
    """For each k (and element length l if present) the row with the lowest ``by``."""
    ls = t["l"] if "l" in t else np.zeros(len(t["k"]))
    idx = []
    for lv in np.unique(ls):
        for k in np.unique(t["k"][ls == lv]):
            m = np.flatnonzero((ls == lv) & (t["k"] == k) & np.isfinite(t[by]))
            if len(m):
                idx.append(m[np.argmin(t[by][m])])
    idx = np.asarray(idx, int)
    return {c: v[idx] for c, v in t.items()}


def fit_parabola(k: np.ndarray, L: np.ndarray, half_width: int | None = None):
    """Fit a + b k + c k^2 around the minimum; (k_hat, L_hat, coeffs[c, b, a], used mask) or
    None when there is no minimum (c <= 0 or < 3 points)."""
    o = np.argsort(k)
    k, L = k[o], L[o]
    if len(k) < 3:
        return None
    i = int(np.argmin(L))
    hw = half_width or max(2, len(k) // 4)
    lo, hi = max(0, i - hw), min(len(k), i + hw + 1)
    if hi - lo < 3:
        lo, hi = max(0, hi - 3), max(hi, 3)
    coef = np.polyfit(k[lo:hi], L[lo:hi], 2)
    if coef[0] <= 0:
        return None
    kh = -coef[1] / (2 * coef[0])
    used = np.zeros(len(k), bool)
    used[o[lo:hi]] = True
    return float(kh), float(np.polyval(coef, kh)), coef, used


_ERROR_LABELS = {"L_macro": r"$L_{\rm macro}$", "L_meso_plus": r"$L^+_{\rm meso}$",
                 "L_meso_minus": r"$L^-_{\rm meso}$", "L_stat": r"$L_{\rm stat}$"}


def _of_l(rows: dict[str, np.ndarray], lv):
    """Mask of the rows at sweep length ``lv`` (all rows when the sweep has no l column)."""
    return slice(None) if lv is None else rows["l"] == lv


def _l_label(lv) -> str:
    return "" if lv is None else f"l = {lv:g}"


def _panel_macro(ax, t: dict[str, np.ndarray], ls) -> None:
    """(a) L_macro of every (lambda, chi) and of the best row per k, one line per l."""
    if "L_macro" not in t:
        return
    bm = best_per_k(t, "L_macro")
    ax.scatter(t["k"], t["L_macro"], s=4, color="0.75", label="all (λ, χ)")
    for j, lv in enumerate(ls):
        mm = _of_l(bm, lv)
        o = np.argsort(bm["k"][mm])
        ax.plot(bm["k"][mm][o], bm["L_macro"][mm][o], "o-", color=S.COLORS[j % 8],
                label=f"best per k {_l_label(lv)}".strip())


def _panel_stat(ax, best: dict[str, np.ndarray], ls) -> list[str]:
    """(b) L_stat(k) of the best rows per k with the parabola around its minimum, one set per
    l; returns the optimum (k_hat, L_stat_hat, lambda_hat, chi_hat) of each as text."""
    notes = []
    for j, lv in enumerate(ls):
        c = S.COLORS[j % 8]
        lab = _l_label(lv)
        mb = _of_l(best, lv)
        k, L = best["k"][mb], best["L_stat"][mb]
        o = np.argsort(k)
        ax.plot(k[o], L[o], "o", color=c, label=lab or r"$L_{\rm stat}$ (best per k)")
        ax.set_ylim(top=L.max() + 0.35 * (L.max() - L.min()))
        fit = fit_parabola(k, L)
        if not fit:
            continue
        kh, Lh, coef, used = fit
        xx = np.linspace(k[used].min(), k[used].max(), 100)
        lam = np.interp(kh, k[o], best["lambda"][mb][o]) if "lambda" in best else np.nan
        chi = np.interp(kh, k[o], best["chi"][mb][o]) if "chi" in best else np.nan
        ax.plot(xx, np.polyval(coef, xx), "-", color=c, lw=0.9,
                label=rf"parabola: $\hat k$ = {kh:.2f}, $\hat\lambda$ = {lam:.2f}, "
                      rf"$\hat\chi$ = {chi:.2f}")
        ax.plot([kh], [Lh], "*", ms=10, color=c)
        notes.append(f"{lab + ': ' if lab else ''}k_hat = {kh:.3g}, L_stat_hat = "
                     f"{Lh:.3g}, lambda_hat = {lam:.3g}, chi_hat = {chi:.3g}")
    return notes


def _panel_components(ax, best: dict[str, np.ndarray], comps: list[str], lv0) -> None:
    """(c) every error component of the best rows per k at the first l."""
    m0 = _of_l(best, lv0)
    o = np.argsort(best["k"][m0])
    for j, cc in enumerate(comps):
        ax.plot(best["k"][m0][o], best[cc][m0][o], "o-", ms=3, color=S.COLORS[j],
                label=_ERROR_LABELS[cc])
    ax.set_ylabel("relative error" + ("" if lv0 is None else f" (l = {lv0:g})"))


def _panel_landscape(fig, ax, t: dict[str, np.ndarray], best: dict[str, np.ndarray], lv0):
    """(d) L_stat over (lambda, chi) at the swept k closest to the optimum (first l)."""
    if "lambda" not in t or "chi" not in t:
        ax.axis("off")
        return
    m0 = _of_l(best, lv0)
    fit = fit_parabola(best["k"][m0], best["L_stat"][m0])
    kh = fit[0] if fit else best["k"][m0][np.argmin(best["L_stat"][m0])]
    ks = np.unique(t["k"])
    kn = ks[np.argmin(abs(ks - kh))]
    m = t["k"] == kn
    if lv0 is not None:
        m &= t["l"] == lv0
    sc = ax.scatter(t["lambda"][m], t["chi"][m], c=t["L_stat"][m], s=40,
                    cmap="viridis_r", edgecolors="k", linewidths=0.3)
    i = np.flatnonzero(m)[np.argmin(t["L_stat"][m])]
    ax.plot(t["lambda"][i], t["chi"][i], "*", ms=12, color=S.COLORS[0])
    fig.colorbar(sc, ax=ax, label=_ERROR_LABELS["L_stat"])
    ax.set_xlabel(r"Weibull scale $\lambda$ [" + S.U_STRESS + "]")
    ax.set_ylabel(r"amplitude parameter $\chi$")
    ax.set_title(f"landscape at k = {kn:g}", fontsize=8)


def calibration(run: RunData, saver: Saver) -> list[Entry]:
    """Calibration figure (paper Fig. 3) of a sweep table: panels (a)-(d)."""
    t = run.calibration
    if t is None:
        return []
    if not any(np.isfinite(t[c]).any() for c in ("L_macro", "L_stat") if c in t):
        return sweep_observables(run, saver)  # a sweep without calibration errors
    best = best_per_k(t)
    ls = np.unique(best["l"]) if "l" in best else [None]
    comps = [c for c in ("L_macro", "L_meso_plus", "L_meso_minus", "L_stat") if c in t]
    with S.style():
        fig, ax = plt.subplots(2, 2, figsize=(S.DOUBLE, 5.2))
        ax = ax.ravel()
        _panel_macro(ax[0], t, ls)
        notes = _panel_stat(ax[1], best, ls)
        ax[0].set_ylabel(_ERROR_LABELS["L_macro"])
        ax[1].set_ylabel(_ERROR_LABELS["L_stat"])
        _panel_components(ax[2], best, comps, ls[0])
        for x in ax[:3]:
            x.set_xlabel(r"Weibull exponent $k$")
            x.legend(fontsize=6.5, loc="upper center" if x is ax[1] else "best")
        _panel_landscape(fig, ax[3], t, best, ls[0])
        S.panel_letters(ax, x=-0.22)
        fig.tight_layout()
        cap = ("Calibration (paper Fig. 3): (a) macroscale error versus k (grey: every "
               "(lambda, chi); line: best per k), (b) L_stat(k) of the best rows with the "
               "parabola a + b k + c k^2 fitted around its minimum (star), (c) components, "
               "(d) L_stat landscape over (lambda, chi) at the k closest to the optimum. "
               + "; ".join(notes) + f" (table: {run.calibration_path.name}).")
        e = saver.save(fig, "calibration", cap)
        return [e]


_SWEEP_OBSERVABLES = (
    ("sigma_xy_mean", "sigma_xy_std_err", r"stationary $\langle\Sigma_{xy}\rangle$"),
    ("drop_xy_mean", None, r"mean stress drop $\langle\Delta\Sigma\rangle$"),
    ("slip_events_per_unit_strain", None, "slip events per unit strain"))
# a scalar sweep's (femplast.scalar.model.statistics); {s}: the stress symbol of the run's
# stress measure (summary.json sweep.stress_measure: a specimen's grip force per area)
_SCALAR_SWEEP_OBSERVABLES = (
    ("flow_stress", "flow_stress_err", "flow stress {s}"),
    ("peak_stress", "peak_stress_err", "peak stress {s}"),
    ("loc_max", None, "maximum LOC (eq. 13)"))
# the first statistics column of each table (the grid keys are the columns before it)
_SWEEP_FIRST_STAT = ("sigma_xy_mean", "flow_stress")


def sweep_observables(run: RunData, saver: Saver) -> list[Entry]:
    """Observables of a sweep without calibration errors (``sweep.errors: []``) against each
    swept parameter: one row of panels per parameter, the other parameters' points as
    separate markers."""
    t = run.calibration
    first_error = next((i for i, c in enumerate(t) if c.startswith("L_")
                        or c in _SWEEP_FIRST_STAT), len(t))
    params = [c for c in list(t)[:first_error] if c != "point" and len(np.unique(t[c])) > 1]
    try:
        measure = run.summary["sweep"].get("stress_measure")
    except (TypeError, KeyError, AttributeError):
        measure = None
    sym = S.stress_symbol(measure=measure)
    obs = [(c, e, lab.replace("{s}", sym)) for c, e, lab in
           _SWEEP_OBSERVABLES + _SCALAR_SWEEP_OBSERVABLES
           if c in t and np.isfinite(t[c]).any()]
    if not params or not obs:
        return []
    with S.style():
        fig, ax = plt.subplots(len(params), len(obs), squeeze=False,
                               figsize=(S.DOUBLE, 2.3 * len(params)))
        for r, p in enumerate(params):
            for c, (col, err, label) in enumerate(obs):
                a = ax[r, c]
                a.errorbar(t[p], t[col], yerr=None if err is None else t[err], fmt="o",
                           ms=3, color=S.COLORS[0], capsize=2)
                a.set_xlabel(p)
                a.set_ylabel(label)
        fig.tight_layout()
        cap = ("Sweep without calibration errors: stationary observables of every grid point "
               f"against each swept parameter ({', '.join(params)}); error bars: standard "
               f"error over realizations (table: {run.calibration_path.name})"
               + ("." if measure is None else f"; stresses: {S.STRESS_NAMES[measure]}."))
        return [saver.save(fig, "sweep_observables", cap)]


# ----------------------------------------------------------------------------- finite size
def finite_size(run: RunData, saver: Saver) -> list[Entry]:
    """std(Sigma_xy) versus L with error bars and the weighted fit of summary.json (paper
    Fig. 5b): the same function, :func:`femplast.analysis.calibration.finite_size_fit`,
    computes both."""
    from femplast.analysis.calibration import finite_size_fit

    fs = run.finite_size
    if not fs:
        return []
    L = np.asarray(fs["L"], float)
    s = np.asarray(fs["std_sigma_xy"], float)
    err = fs.get("std_sigma_xy_err")
    err = None if err is None else np.asarray(err, float)
    fit = finite_size_fit(L, s, err)
    with S.style():
        fig, ax = plt.subplots(figsize=S.SINGLE)
        ax.errorbar(L, s, yerr=err, fmt="o", color=S.COLORS[0], capsize=2, label="femplast")
        cap = ("Finite-size scaling of the external stress fluctuations (paper Fig. 5b), "
               "error bars: standard error of std(Sigma_xy) over realizations")
        ref = run.reference.finite_size if run.reference is not None else None
        if ref is not None and "L" in ref and "std_sigma_xy" in ref:
            ax.errorbar(ref["L"], ref["std_sigma_xy"], yerr=ref.get("std_sigma_xy_err"),
                        fmt="s", mfc="none", color=S.COLORS[1], capsize=2,
                        label=_ref_label(run))
            cap += f"; squares: reference {run.reference_path.name}"
        if np.isfinite(fit["exponent"]):
            xx = np.geomspace(L.min(), L.max(), 50)
            ax.plot(xx, fit["amplitude"] * xx ** fit["exponent"], "-", color="0.4", lw=0.8,
                    label=rf"$\propto L^{{a}}$, $a$ = {fit['exponent']:.3f} $\pm$ "
                          f"{fit['exponent_err']:.3f}")
            cap += (f"; {'weighted ' if fit['weighted'] else ''}power-law fit exponent "
                    f"{fit['exponent']:.3f} +- {fit['exponent_err']:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"system size $L$ [{S.U_LENGTH}]")
        ax.set_ylabel(rf"std($\Sigma^{{\rm ext}}_{{xy}}$) [{S.U_STRESS}]")
        ax.legend()
        fig.tight_layout()
        return [saver.save(fig, "finite_size", cap + ".")]


def localization(run: RunData, saver: Saver) -> list[Entry]:
    """Windowed LOC with confidence bands and the band profile image
    (femplast.postprocess.localization)."""
    from femplast.postprocess.localization import figures as localization_figures

    return localization_figures(run, saver)


# ----------------------------------------------------------------------------- KMC quench
def quench(run: RunData, saver: Saver) -> list[Entry]:
    """The KMC preparation (tensorial paper, appendix A.3): the mean slip threshold and the
    spread of the resolved stress against thermal events, per realization, with the windows
    whose means decided stationarity marked."""
    with S.style():
        fig, ax = plt.subplots(1, 2, figsize=(S.DOUBLE, 2.6))
        for i, q in enumerate(run.quench):
            c = S.COLORS[i % 8]
            lab = f"r{i}" if len(run.quench) <= 8 else None
            ax[0].plot(q["sample_event"], q["sample_mean_tau_c"], color=c, lw=0.8, label=lab)
            ax[1].plot(q["sample_event"], q["sample_stress_std"], color=c, lw=0.8)
            if len(q.get("window_event", ())):
                ax[0].plot(q["window_event"], q["window_mean_tau_c"], "o", color=c, ms=3)
                ax[1].plot(q["window_event"], q["window_stress_std"], "o", color=c, ms=3)
        ax[0].set_ylabel(r"mean threshold $\langle\tau_c\rangle$")
        ax[1].set_ylabel(r"stress spread std$(\tau)$")
        for a in ax:
            a.set_xlabel("thermal events")
        if len(run.quench) <= 8:
            ax[0].legend(loc="best")
        S.panel_letters(ax, x=-0.25)
        fig.tight_layout()
        cap = (f"KMC preparation of {len(run.quench)} realization(s) (appendix A.3): the "
               "sampled mean threshold and resolved-stress spread against thermal events; "
               "dots: window means used by the stationarity test.")
        return [saver.save(fig, "quench", cap)]


def _ref_label(run: RunData) -> str:
    ref = run.reference
    return "reference" + (" (SYNTHETIC)" if ref is not None and ref.synthetic else "")


FIGURES = [stress_strain, macro_densities, avalanche_sizes, rms, plastic_activity,
           scalar_evolution, bauschinger, patches_densities, patches_mean, patches_std,
           patches_drop_vs_yield, calibration, finite_size, localization, quench]


def applies(fn, run: RunData) -> bool:
    """Whether a figure function has data in this run (cheap check, no plotting)."""
    tens = any(r.stress is not None for r in run.realizations)
    return {
        stress_strain: tens, macro_densities: tens,
        avalanche_sizes: tens and any(r.sizes() is not None for r in run.realizations),
        rms: any(r.stress is not None and r.uniform_steps for r in run.realizations),
        plastic_activity: any({"eps_pl", "n_events"} & set(r.steps) for r in run.realizations),
        scalar_evolution: any(set(SCALAR_OBSERVABLES) & set(r.steps) for r in run.realizations),
        bauschinger: bool(run.stages),
        patches_densities: run.patches is not None,
        patches_mean: run.patches is not None or bool(run.patch_rows),
        patches_std: run.patches is not None or bool(run.patch_rows),
        patches_drop_vs_yield: run.patches is not None or bool(run.patch_rows),
        calibration: run.calibration is not None, finite_size: bool(run.finite_size),
        localization: bool((run.summary or {}).get("localization")),
        quench: bool(run.quench),
    }[fn]
