"""Matplotlib figures, one function per observable family, each a no-op when its data is absent.

Every function takes the :class:`~femplast.postprocess.data.RunData` and a :class:`Saver`
and returns the written :class:`Entry` list; :func:`jobs` lists the functions that apply to a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
        ax[1].set_title("ensemble")
        ax[1].legend(loc="lower right")
        for x in ax:
            x.set_xlabel(S.GAMMA)
            _stat_line(x, g0)
        ax[0].set_ylabel(S.stress_label(a))
        S.panel_letters(ax)
        fig.tight_layout()
        cap = (f"Stress-strain curve: (a) realization {r.name}, (b) mean over {len(vals)} "
               f"realizations with a band of one standard deviation. Dotted: start of the "
               f"stationary regime (gamma_ext = {g0:g}).")
        return [saver.save(fig, "stress_strain", cap)]


def macro_densities(run: RunData, saver: Saver) -> list[Entry]:
    reals = [r for r in run.realizations if r.stress is not None]
    if not reals:
        return []
    a = reals[0].alpha_deg
    _, g0 = _stationary(run, reals[0].gamma)
    sig, inc, drops, sizes = [], [], [], []
    for r in reals:
        m, _ = _stationary(run, r.gamma)
        s = r.resolved()
        sig.append(s[m])
        if r.uniform_steps:  # increments per fixed loading step (AQS)
            inc.append(np.diff(s)[m[1:]])
        dg = r.drop_gamma()
        drops.append(r.drops()[dg > g0] if len(dg) else r.drops())
        sz = r.sizes()
        if sz is not None:
            sizes.append(sz[1][sz[0] > g0])
    sig, drops = np.concatenate(sig), np.concatenate(drops)
    inc = np.concatenate(inc) if inc else None
    sizes = np.concatenate(sizes) if sizes else None
    panels = [p for p, ok in (("sig", True), ("drop", True), ("inc", inc is not None),
                              ("size", sizes is not None)) if ok]
    n = len(panels)
    with S.style():
        fig, axs = plt.subplots(2, 2, figsize=(S.DOUBLE, 4.8))
        axs = axs.ravel()
        for x in axs[n:]:
            x.axis("off")
        ax = dict(zip(panels, axs, strict=False))
        _density(ax["sig"], sig, color=S.COLORS[0])
        ax["sig"].set_xlabel(S.stress_label(a))
        ax["sig"].set_ylabel(rf"$P(${S.stress_symbol(a)}$)$")
        _density(ax["drop"], drops, log=True, color=S.COLORS[1])
        ax["drop"].set_xscale("log")
        ax["drop"].set_yscale("log")
        ax["drop"].set_xlabel(S.stress_label(a, "drop"))
        ax["drop"].set_ylabel(rf"$P(${S.stress_symbol(a, 'drop')}$)$")
        parts = [f"external stress ({len(sig)} values)", f"stress drops of avalanches "
                 f"({len(drops)})"]
        if inc is not None:
            _density(ax["inc"], inc, color=S.COLORS[2])
            ax["inc"].set_yscale("log")
            ax["inc"].set_xlabel(S.stress_label(a, "inc"))
            ax["inc"].set_ylabel(rf"$P(${S.stress_symbol(a, 'inc')}$)$")
            parts.append("stress increments per loading step")
        if sizes is not None:
            _density(ax["size"], sizes, bins=20, log=True, color=S.COLORS[3])
            ax["size"].set_xscale("log")
            ax["size"].set_yscale("log")
            ax["size"].set_xlabel(r"avalanche size $S$ [slip events]")
            ax["size"].set_ylabel(r"$P(S)$")
            parts.append(f"avalanche sizes ({len(sizes)})")
        S.panel_letters(axs[:n], x=-0.2)
        fig.tight_layout()
        cap = (f"Probability densities in the stationary regime (gamma_ext > {g0:g}), "
               f"{len(reals)} realizations: "
               + ", ".join(f"({chr(97 + i)}) {t}" for i, t in enumerate(parts)) + ".")
        return [saver.save(fig, "densities", cap)]


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
    a = reals[0].alpha_deg
    with S.style():
        fig, ax = plt.subplots(figsize=S.SINGLE)
        ax.loglog(x, r, "o-", ms=3, color=S.COLORS[0], label=r"$r(\Delta\gamma^{\rm ext})$")
        ax.axhline(std, color="0.4", ls="--", lw=0.8, label=rf"std({S.stress_symbol(a)})")
        ax.yaxis.set_minor_formatter(S.matplotlib.ticker.NullFormatter())
        ax.set_xlabel(r"strain window $\Delta\gamma^{\rm ext}$")
        ax.set_ylabel(rf"rms deviation $r$ [{S.U_STRESS}]")
        ax.legend()
        fig.tight_layout()
        cap = ("Root-mean-square deviation r of the external stress over strain windows "
               "(paper Fig. 5a) in the stationary regime; dashed: its standard deviation.")
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
            x.set_xlabel(S.GAMMA)
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
            ax[i].set_xlabel(S.GAMMA)
        ax[0].legend(loc="best")
        S.panel_letters(ax[:n], x=-0.25)
        fig.tight_layout()
        cap = ("Scalar-model observables versus strain (mean over realizations, band of one "
               "standard deviation): " + ", ".join(present) + ".")
        return [saver.save(fig, "scalar_evolution", cap)]


# ----------------------------------------------------------------------------- Bauschinger
def bauschinger(run: RunData, saver: Saver) -> list[Entry]:
    stages = {k: [r for r in v if r.stress is not None] for k, v in run.stages.items()}
    stages = {k: v for k, v in stages.items() if v}
    if not stages:
        return []
    with S.style():
        fig, ax = plt.subplots(figsize=(S.SINGLE[0] * 1.3, S.SINGLE[1] * 1.2))
        for i, (name, reals) in enumerate(stages.items()):
            g, v = ensemble(reals)
            a = reals[0].alpha_deg
            c = S.COLORS[i % len(S.COLORS)]
            m, sd = v.mean(axis=0), v.std(axis=0)
            ax.fill_between(g, m - sd, m + sd, color=c, alpha=0.2, lw=0)
            ax.plot(g, m, color=c, label=rf"{name} ($\alpha_{{\rm ext}}$ = {a:g}$^\circ$, "
                                         f"n = {len(v)})")
        ax.set_xlabel(S.GAMMA + " (of the stage)")
        ax.set_ylabel(r"resolved external stress $\Sigma^{\rm ext}_\alpha$" + f" [{S.U_STRESS}]")
        ax.axhline(0, color="0.6", lw=0.5)
        ax.legend(loc="best")
        fig.tight_layout()
        cap = ("Bauschinger test: mean stress-strain branch of each stage (stress resolved on "
               "the stage's loading direction alpha_ext; band: one standard deviation). "
               "Stages: " + ", ".join(stages) + ".")
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


def _sel(rows, **kw):
    return [r for r in rows if all(np.isclose(r[k], v) if isinstance(v, float) else r[k] == v
                                   for k, v in kw.items())]


def _patch_grid(run: RunData, saver: Saver, stat: str) -> list[Entry]:
    rows = patch_table(run)
    qs = [q for q in PATCH_QUANTITIES if any(f"{q}_{stat}" in r for r in rows)]
    if not qs:
        return []
    states = _main_states(list(dict.fromkeys(r["state"] for r in rows)))
    Rmax = max(r["R"] for r in rows)
    alphas = sorted({r["alpha_deg"] for r in rows})
    show_a = [a for a in (0.0, 90.0) if a in alphas] or alphas[:1]
    raw = run.patches
    ncol = 3 if (raw is not None and stat == "mean") else 2
    ls = {0.0: "-", 90.0: "--"}
    with S.style():
        fig, axes = plt.subplots(len(qs), ncol, figsize=(S.DOUBLE, 1.9 * len(qs) + 0.3),
                                 squeeze=False)
        for i, q in enumerate(qs):
            sym, name = S.PATCH_LABELS[q]
            c0 = 0
            if ncol == 3:  # densities at the largest R
                ax = axes[i, 0]
                for si, s in enumerate(states):
                    for a in show_a:
                        m = (raw["state"] == s) & (raw["R"] == Rmax) & (raw["alpha_deg"] == a)
                        if q in raw and m.any():
                            _density(ax, raw[q][m], bins=int(np.clip(np.sqrt(m.sum()), 8, 30)),
                                     color=S.COLORS[si % 8],
                                     ls=ls.get(a, ":"), label=f"{s}, {a:g}°")
                ax.set_xlabel(f"{name} {sym} [{S.U_STRESS}]")
                ax.set_ylabel(f"$P(${sym}$)$, R = {Rmax:.3g}")
                c0 = 1
            ax = axes[i, c0]
            for si, s in enumerate(states):
                for a in show_a:
                    rr = sorted(_sel(rows, state=s, alpha_deg=a), key=lambda r: r["R"])
                    rr = [r for r in rr if f"{q}_{stat}" in r]
                    if rr:
                        ax.plot([r["R"] for r in rr], [r[f"{q}_{stat}"] for r in rr], "o",
                                ls=ls.get(a, ":"), color=S.COLORS[si % 8],
                                label=rf"{s}, $\alpha$ = {a:g}°")
            ax.set_xlabel(f"patch radius $R$ [{S.U_LENGTH}]")
            sy = rf"$\langle${sym}$\rangle$" if stat == "mean" else f"std({sym})"
            ax.set_ylabel(f"{sy} [{S.U_STRESS}]")
            ax = axes[i, c0 + 1]
            for si, s in enumerate(states):
                rr = sorted(_sel(rows, state=s, R=Rmax), key=lambda r: r["alpha_deg"])
                rr = [r for r in rr if f"{q}_{stat}" in r]
                if rr:
                    ax.plot([r["alpha_deg"] for r in rr], [r[f"{q}_{stat}"] for r in rr], "o-",
                            color=S.COLORS[si % 8], label=s)
            ax.set_xlabel(r"shear orientation $\alpha$ [°]")
            ax.set_ylabel(f"{sy}, R = {Rmax:.3g}")
        axes[0, c0].legend(fontsize=6.5)
        axes[0, c0 + 1].legend(fontsize=6.5)
        S.panel_letters(axes.ravel(), x=-0.32)
        fig.tight_layout()
        what = "averages" if stat == "mean" else "standard deviations"
        cap = (f"Patch statistics ({what}, paper Fig. {4 if stat == 'mean' else 8}): "
               + ("densities at the largest R (first column), " if ncol == 3 else "")
               + f"{what} versus patch radius R (alpha = {', '.join(f'{a:g}' for a in show_a)}"
               f" deg; solid forward, dashed backward) and versus orientation alpha at "
               f"R = {Rmax:.3g}, for each state ({', '.join(states)}).")
        return [saver.save(fig, f"patches_{stat}", cap)]


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


# ----------------------------------------------------------------------------- finite size
def finite_size(run: RunData, saver: Saver) -> list[Entry]:
    fs = run.finite_size
    if not fs:
        return []
    L = np.asarray(fs["L"], float)
    s = np.asarray(fs["std_sigma_xy"], float)
    o = np.argsort(L)
    L, s = L[o], s[o]
    with S.style():
        fig, ax = plt.subplots(figsize=S.SINGLE)
        ax.loglog(L, s, "o", color=S.COLORS[0], label="femplast")
        cap = "Finite-size scaling of the external stress fluctuations (paper Fig. 5b)"
        if len(L) >= 2 and (s > 0).all():
            p = np.polyfit(np.log(L), np.log(s), 1)
            ax.loglog(L, np.exp(np.polyval(p, np.log(L))), "-", color="0.4", lw=0.8,
                      label=rf"$\propto L^{{{p[0]:.2f}}}$")
            cap += f"; power-law fit exponent {p[0]:.3f}"
        ax.set_xlabel(f"system size $L$ [{S.U_LENGTH}]")
        ax.set_ylabel(rf"std($\Sigma^{{\rm ext}}_{{xy}}$) [{S.U_STRESS}]")
        ax.legend()
        fig.tight_layout()
        return [saver.save(fig, "finite_size", cap + ".")]


FIGURES = [stress_strain, macro_densities, rms, plastic_activity, scalar_evolution, bauschinger,
           patches_mean, patches_std, patches_drop_vs_yield, calibration, finite_size]


def applies(fn, run: RunData) -> bool:
    """Whether a figure function has data in this run (cheap check, no plotting)."""
    tens = any(r.stress is not None for r in run.realizations)
    return {
        stress_strain: tens, macro_densities: tens,
        rms: any(r.stress is not None and r.uniform_steps for r in run.realizations),
        plastic_activity: any({"eps_pl", "n_events"} & set(r.steps) for r in run.realizations),
        scalar_evolution: any(set(SCALAR_OBSERVABLES) & set(r.steps) for r in run.realizations),
        bauschinger: bool(run.stages),
        patches_mean: run.patches is not None or bool(run.patch_rows),
        patches_std: run.patches is not None or bool(run.patch_rows),
        patches_drop_vs_yield: run.patches is not None or bool(run.patch_rows),
        calibration: run.calibration is not None, finite_size: bool(run.finite_size),
    }[fn]
