"""Branching a sheared glass: reload one copy forward, the other backward.

The paper's optimum at l = 6.6 (cases/paper_optimum_l6.6.yaml: 15 x 15 cells, N = 36) is
prepared as cases/quench_kmc.yaml does it (KMC at kB T = 0.25 Va, eq. 11, then the T = 0
quench, appendix A.3; here with a bounded number of thermal events), sheared by AQS to
gamma_ext = 0.5, copied, and one branch is reloaded forward to 0.6 while the other is
reloaded backward (along alpha_ext + 90 deg) to 0.4. Both stress-strain curves are plotted.

    python docs/examples/branching.py [PNG] [--events N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import femplast  # first: loads MPI before dolfinx / petsc4py

ROOT = Path(__file__).resolve().parents[2]


def curve(sim: femplast.Simulation, target: float, step: float = 5e-4):
    """Load ``sim`` to ``target`` in steps of ``step``; (gamma_ext, Sigma_xy) at each stop."""
    n = max(1, int(round(abs(target - sim.gamma_ext) / step)))
    start = sim.gamma_ext
    gam, sxy = [sim.gamma_ext], [sim.resolved_stress]
    for g in np.linspace(start, target, n + 1)[1:]:
        sim.advance_to(g)
        gam.append(sim.gamma_ext)
        sxy.append(sim.resolved_stress)
    return np.array(gam), np.array(sxy)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("png", nargs="?", default=str(ROOT / "docs/examples/branching.png"))
    p.add_argument("--events", type=int, default=20000, help="cap on the KMC thermal events")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    # the paper's model, with the KMC settings of cases/quench_kmc.yaml
    case = femplast.load_case(ROOT / "cases/paper_optimum_l6.6.yaml", {
        "kmc.enabled": True, "kmc.temperature": 0.25, "kmc.Va": 1.0, "kmc.window": 2.0,
        "kmc.tolerance": 0.05, "kmc.max_events": args.events, "output.snapshots": []})
    sim = femplast.Simulation(case, realization=0)
    q = sim.quench()
    print(f"quench: {q['events']} thermal events ({q['stopped_by']}), mean |stress| "
          f"{q['mean_abs_stress']:.3f}, stress std {q['stress_std']:.3f}")

    g_load, s_load = curve(sim, 0.5)
    print(f"gamma_ext = {sim.gamma_ext:.3f}: Sigma_xy = {sim.resolved_stress:.4f}, "
          f"{sim.num_events} slip events")
    forward, backward = sim.copy(), sim.copy()
    g_fwd, s_fwd = curve(forward, 0.6)
    g_bwd, s_bwd = curve(backward, 0.4)
    print(f"forward  to {forward.gamma_ext:.3f}: Sigma_xy = {forward.resolved_stress:.4f}")
    print(f"backward to {backward.gamma_ext:.3f}: Sigma_xy = {backward.resolved_stress:.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.plot(g_load, s_load, color="0.4", lw=1, label="quenched glass, loading to 0.5")
    ax.plot(g_fwd, s_fwd, color="C0", lw=1, label="branch 1: forward to 0.6")
    ax.plot(g_bwd, s_bwd, color="C1", lw=1, label="branch 2: backward to 0.4")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel(r"$\gamma_\mathrm{ext}$")
    ax.set_ylabel(r"$\langle\Sigma_{xy}\rangle$")
    ax.set_title("paper optimum l = 6.6 (15 x 15, N = 36), realization 0", fontsize=9)
    ax.legend(fontsize=8)
    out = Path(args.png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
