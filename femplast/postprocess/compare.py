"""Several runs on one figure (``femplast plot RUN1 RUN2 ... --labels a,b``): mean stress-strain
curves, stationary densities and avalanche sizes with their power-law exponents, scalar-model
observables, Bauschinger reloads with their yield stresses, LOC(gamma) with bands; one colour
per run, as the papers compare variants (e.g. rejuvenation on/off)."""

from __future__ import annotations

import numpy as np

from femplast.postprocess import figures as F
from femplast.postprocess import measures as M
from femplast.postprocess import style as S
from femplast.postprocess.data import SCALAR_OBSERVABLES, RunData, ensemble
from femplast.postprocess.figures import Entry, Saver

plt = S.plt


def _curves(ax, runs, labels, key=None):
    for i, (run, lab) in enumerate(zip(runs, labels, strict=True)):
        g, v = ensemble(run.realizations, key)
        if g is None:
            continue
        F._band(ax, g, v, S.COLORS[i % 8], f"{lab} (n = {len(v)})", n_thin=0)


def _legend_without_bands(ax, **kw):
    h, lab = ax.get_legend_handles_labels()
    keep = [j for j, s in enumerate(lab) if "std" not in s]
    ax.legend([h[j] for j in keep], [lab[j] for j in keep], **kw)


def compare_stress_strain(runs, labels, saver: Saver) -> list[Entry]:
    """Mean stress-strain curves (band: one standard deviation) and the flow stresses."""
    tens = [r for r in runs if any(x.stress is not None for x in r.realizations)]
    if len(tens) < len(runs):
        return []
    a = runs[0].realizations[0].alpha_deg
    notes = []
    with S.style():
        fig, ax = plt.subplots(figsize=(S.SINGLE[0] * 1.3, S.SINGLE[1] * 1.2))
        _curves(ax, runs, labels)
        for run, lab in zip(runs, labels, strict=True):
            g, v = ensemble(run.realizations)
            _, g0 = F._stationary(run, g)
            pf = M.peak_and_flow(g, v.mean(axis=0), g0)
            notes.append(f"{lab}: peak {pf.peak:.4g}, flow {pf.flow:.4g} +- {pf.flow_std:.2g}")
        measure = runs[0].realizations[0].stress_measure
        ax.set_xlabel(S.strain_label(measure))
        ax.set_ylabel(S.stress_label(a, measure=measure))
        _legend_without_bands(ax, loc="lower right")
        fig.tight_layout()
        cap = ("Mean stress-strain curves of the compared runs (band: one standard deviation "
               "over realizations): " + "; ".join(notes) + ".")
        return [saver.save(fig, "compare_stress_strain", cap)]


def compare_densities(runs, labels, saver: Saver) -> list[Entry]:
    """Stationary densities of the external stress and of the avalanche sizes (with each
    run's maximum-likelihood exponent)."""
    ds = [F.stationary_samples(r) for r in runs]
    if any(d is None for d in ds):
        return []
    a = ds[0]["alpha"]
    notes = []
    with S.style():
        fig, ax = plt.subplots(1, 2, figsize=(S.DOUBLE, 2.7))
        for i, (d, lab) in enumerate(zip(ds, labels, strict=True)):
            c = S.COLORS[i % 8]
            F._density(ax[0], d["sig"], color=c, label=lab)
            if d["size"] is None:
                continue
            sz = d["size"][d["size"] > 0]
            fit = M.fit_power_law(sz)
            edges = np.unique(np.round(np.geomspace(1, sz.max() + 1, 20))) - 0.5
            h, e = np.histogram(sz, edges)
            ok = h > 0
            lab2 = lab
            if fit is not None:
                lab2 += rf": $\tau$ = {fit.alpha:.2f} [{fit.alpha_lo:.2f}, {fit.alpha_hi:.2f}]"
                notes.append(f"{lab}: tau = {fit.alpha:.4g} ({fit.alpha_lo:.4g} .. "
                             f"{fit.alpha_hi:.4g}, S >= {fit.x_min:g})")
            ax[1].plot(np.sqrt((e[:-1] + 0.5) * (e[1:] - 0.5))[ok],
                       (h / (len(sz) * np.diff(e)))[ok], "o-", ms=3, color=c, label=lab2)
        ax[0].set_xlabel(S.stress_label(a, measure=ds[0]["measure"]))
        ax[0].set_ylabel(rf"$P(${S.stress_symbol(a, measure=ds[0]['measure'])}$)$")
        ax[0].legend()
        ax[1].set_xscale("log")
        ax[1].set_yscale("log")
        ax[1].set_xlabel(r"avalanche size $S$ [slip events]")
        ax[1].set_ylabel(r"$P(S)$")
        if ax[1].lines:
            ax[1].legend(loc="lower left", fontsize=6.5)
        S.panel_letters(ax)
        fig.tight_layout()
        cap = ("Stationary densities of the compared runs: (a) external stress, (b) avalanche "
               "sizes with maximum-likelihood exponents (95 % bootstrap interval)"
               + (": " + "; ".join(notes) if notes else "") + ".")
        return [saver.save(fig, "compare_densities", cap)]


def compare_scalar(runs, labels, saver: Saver) -> list[Entry]:
    """Scalar-model observables (LOC, plastic-strain variance, mean threshold, internal
    stress) of every run, one panel per observable present in all runs."""
    keys = [k for k in SCALAR_OBSERVABLES
            if all(ensemble(r.realizations, k)[0] is not None for r in runs)]
    if not keys:
        return []
    with S.style():
        nc = min(len(keys), 2)
        nr = (len(keys) + 1) // 2
        fig, ax = plt.subplots(nr, nc, figsize=(S.DOUBLE, 2.5 * nr), squeeze=False)
        ax = ax.ravel()
        for x in ax[len(keys):]:
            x.axis("off")
        for j, k in enumerate(keys):
            _curves(ax[j], runs, labels, k)
            name, unit = S.SCALAR_LABELS[k]
            ax[j].set_ylabel(name + unit)
            ax[j].set_xlabel(S.strain_label(runs[0].realizations[0].stress_measure))
        _legend_without_bands(ax[0], loc="best")
        S.panel_letters(ax[:len(keys)], x=-0.25)
        fig.tight_layout()
        return [saver.save(fig, "compare_scalar", "Scalar-model observables of the compared "
                           "runs (mean over realizations, band: one standard deviation): "
                           + ", ".join(keys) + ".")]


def compare_bauschinger(runs, labels, saver: Saver) -> list[Entry]:
    """The reload branches of Bauschinger runs with their offset yield stresses."""
    ys = [F.reload_yield(r) if r.stages else {} for r in runs]
    if not all(ys):
        return []
    notes = []
    ls = ["-", "--", ":", "-."]
    with S.style():
        fig, ax = plt.subplots(figsize=(S.SINGLE[0] * 1.3, S.SINGLE[1] * 1.2))
        for i, (y, lab) in enumerate(zip(ys, labels, strict=True)):
            for j, (name, d) in enumerate(y.items()):
                c = S.COLORS[i % 8]
                txt = f"{lab}, {name}"
                if d["yield_point"] is not None:
                    gy, sy = d["yield_point"]
                    ax.plot([gy], [sy], "o", mfc="white", mec=c, zorder=5)
                    txt += rf", $\Sigma_y$ = {sy:.3f}"
                    notes.append(f"{lab} {name}: yield stress {sy:.4g}")
                ax.plot(d["gamma"], d["mean"], ls=ls[j % 4], color=c, label=txt)
        ax.set_xlabel(r"strain of the reload $\gamma^{\rm ext}$")
        ax.set_ylabel(f"resolved stress {S.stress_symbol(90.0)} [{S.U_STRESS}]")
        ax.legend(fontsize=6.5, loc="lower right")
        fig.tight_layout()
        return [saver.save(fig, "compare_bauschinger", "Bauschinger reloads of the compared "
                           f"runs, yield stress at plastic strain {M.YIELD_OFFSET:g}: "
                           + "; ".join(notes) + ".")]


def compare_localization(runs, labels, saver: Saver) -> list[Entry]:
    """LOC(gamma_ext) of the runs overlaid, each with its confidence band (scalar paper Fig. 6a
    compares glasses and rejuvenation on/off this way)."""
    from femplast.postprocess.localization import loc_overlay

    return loc_overlay([(lab, r.summary or {}) for r, lab in zip(runs, labels, strict=True)],
                       saver, name="compare_localization")


COMPARISONS = [compare_stress_strain, compare_densities, compare_scalar, compare_bauschinger,
               compare_localization]


def compare_runs(runs: list[RunData], labels: list[str], saver: Saver):
    """Every comparison the runs support; returns (entries, failures)."""
    entries, failures = [], []
    for fn in COMPARISONS:
        try:
            entries += fn(runs, labels, saver)
        except Exception as exc:  # one bad family must not cost the others
            failures.append((fn.__name__, f"{type(exc).__name__}: {exc}"))
    return entries, failures
