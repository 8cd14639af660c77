"""Benchmark: stress redistribution with heterogeneous (per-cell) moduli, per event.

    python benchmarks/heterogeneous.py [--sizes 16 32 64 128] [--gmsh 13.2] [--json FILE]

Variant A's moduli (tensorial paper, appendix A.8.1: G ~ Weibull(<G> = 18.4, k_G = 1.3) per
cell, B = 59) on structured quad boxes of n x n cells of l = 6.6 (and, with ``--gmsh SIZE``,
on a periodic gmsh box of 15 l with that target cell size). For every size, the costs of one
event (one slip; the direct backend solves once per relaxation step) with the options of
issue 16:

* ``direct``: one FE back-solve of the whole eigenstrain field (MUMPS, today's fallback),
  ``Redistribution.stress_from_plastic``;
* ``dense`` float64: one column add of the Green operator (``kernels.dense_add``), built by
  the backend itself (``DenseRedistribution``: blocked multi-right-hand-side solves from
  ``Redistribution.BLOCKED_FROM`` cells) within ``--budget-mib`` (default: the backend's
  budget from the available memory); 2,000 prescribed events, then the max stress error
  against one direct FE solve of the accumulated eigenstrain (the 1e-8 contract); the build
  by single-right-hand-side solves extrapolated from ``--sample-columns`` columns, and the
  speed-up amortized over 2,000 / 20,000 events (build included). When the operator exceeds
  the budget it is not built: the per-event time is measured on a slab of random rows of
  the same row length, larger than the caches;
* ``sym``: the (d, s) block in half storage (reciprocity, ``w_i D[c, a, b, i] = w_c D[i, b,
  a, c]``): packed lower triangle, an event reads its row contiguously and the rest of its
  column with one strided read per cell; its error against the full operator (real operator
  up to ``--sym-check-cells``, timing on random numbers above);
* ``dense`` float32 (``--f32``): the operator rounded to float32 (half the memory), its
  stress error after 2,000 events (relative to the largest stress) against float64;
* ``pcg``: a Lippmann-Schwinger-type update, preconditioned conjugate gradients on the
  heterogeneous FE system with the homogeneous reference medium (G0 = sqrt(Gmin Gmax), B)
  inverted exactly by FFT as preconditioner and the homogeneous solution as starting guess;
  iterations to a relative residual of 1e-10, CPU time per event and the stress error
  against the direct solve. Structured quads only (the FFT needs the grid).

Times are CPU seconds (``time.process_time``, the machine is shared); ratios within one run
are the contract. JSON keys are documented in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from numba import njit

import femplast  # noqa: F401  (loads MPI before dolfinx / petsc4py)

G_MEAN, G_SHAPE, B_MOD, CELL = 18.4, 1.3, 59.0, 6.6


def cpu(fn, repeats: int = 1) -> float:
    """Median CPU seconds of ``fn()`` over ``repeats`` calls."""
    ts = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return float(np.median(ts))


def make_box(n: int | None, gmsh_size: float | None):
    from mpi4py import MPI

    from femplast.fe.mesh import gmsh_box, structured_box

    if gmsh_size:
        return gmsh_box(None, 15 * CELL, gmsh_size, comm=MPI.COMM_SELF)
    return structured_box(n, n * CELL, comm=MPI.COMM_SELF)


def direct_step(red, rng, repeats: int) -> float:
    """CPU seconds of one direct back-solve of a random eigenstrain field (median)."""
    eps = rng.normal(0.0, 0.01, (red.num_cells, 3))
    red.stress_from_plastic(eps)  # first solve outside the timing
    return cpu(lambda: red.stress_from_plastic(eps), repeats)


def dense_columns(red, cells) -> np.ndarray:
    """Rows ``D[c]`` (2, 3, cells) of the dense operator for ``cells`` (2 FE solves each)."""
    out = np.empty((len(cells), 2, 3, red.num_cells))
    for k, c in enumerate(cells):
        out[k, 0], out[k, 1] = red._responses(int(c))
    return out


def prescribed_events(red, D, args) -> tuple[float, float]:
    """CPU seconds per event of ``--events`` prescribed slips (random cells, angles, amplitudes)
    through the compiled column add of the full operator ``D``, and the max stress error against
    one direct FE solve of the accumulated eigenstrain, relative to the max stress (the
    contract: <= 1e-8)."""
    from femplast.fe.elasticity import UNIT_C, UNIT_S

    rng = np.random.default_rng(2)
    nc = red.num_cells
    cells = rng.integers(0, nc, args.events)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, args.events)
    dg = rng.uniform(0, 0.05, args.events)
    gs, gc = dg * np.sin(2 * theta), dg * np.cos(2 * theta)
    t, sig = dense_events(D, cells, gs, gc)
    eps = np.zeros((nc, 3))
    np.add.at(eps, cells, gs[:, None] * UNIT_S + gc[:, None] * UNIT_C)
    ref = red.stress_from_plastic(eps)
    return t, float(np.abs(sig - ref).max() / np.abs(ref).max())


def dense_events(D, cells, gs, gc) -> tuple[float, np.ndarray]:
    """CPU seconds per event of the compiled column add over ``cells``; the final stress."""
    from femplast.redistribution.kernels import dense_add

    sig = np.zeros((3, D.shape[-1]))
    dense_add(sig, D, int(cells[0]), 0.0, 0.0)  # compile / load outside the timing
    t = time.process_time()
    for c, a, b in zip(cells, gs, gc, strict=True):
        dense_add(sig, D, int(c), a, b)
    return (time.process_time() - t) / len(cells), sig


def dense_section(red, args, rng) -> dict:
    """Dense operator: build (the backend's own, blocked solves from BLOCKED_FROM cells), memory,
    per-event time and error after ``--events`` prescribed events vs the direct solve; the
    symmetric (half) storage; float32 (``--f32``)."""
    from femplast.redistribution.backends import DenseRedistribution, dense_budget_mb

    nc = red.num_cells
    mib = DenseRedistribution.memory_bytes(nc) / 2**20
    budget, why = dense_budget_mb(args.budget_mib)
    out = dict(dense_mib=mib, dense_budget_mib=budget, dense_built=mib <= budget)
    sample = rng.choice(nc, min(nc, args.sample_columns), replace=False)
    t = time.process_time()
    dense_columns(red, sample)  # the single-solve build, extrapolated
    out["dense_build_single_s"] = (time.process_time() - t) * nc / len(sample)
    if out["dense_built"]:
        t = time.process_time()
        dense = DenseRedistribution(red.box, red.G, red.B, args.budget_mib, elasticity=red.el)
        out["dense_build_s"] = time.process_time() - t
        out["dense_blocked"] = dense.blocked
        D = dense.dense
        out["dense_event_s"], out["dense_err"] = prescribed_events(red, D, args)
        if nc <= args.sym_check_cells:
            out.update(symmetric_section(D, red.weights, args))
        if args.f32:
            out.update(f32_section(D, args))
        del dense, D
    else:
        print(f"  {nc} cells: the {mib:.0f} MiB operator exceeds the budget ({why}): event time "
              "on a slab of random rows")
        slab = max(64, int(256 * 2**20 / (48 * nc)))
        D = rng.random((slab, 2, 3, nc))
        ev = np.random.default_rng(5)
        out["dense_event_s"] = dense_events(D, ev.integers(0, slab, args.events),
                                            *ev.uniform(-0.05, 0.05, (2, args.events)))[0]
        out["dense_build_s"] = out["dense_build_single_s"]
        del D
    if nc > args.sym_check_cells:  # time the half storage on random numbers of its size
        out.update(symmetric_section(None, np.full(nc, 1.0 / nc), args))
    return out


def f32_section(D, args) -> dict:
    """The operator rounded to float32: per-event time, error against float64 (rejected: it
    breaks the 1e-8 contract, benchmarks/README.md)."""
    ev = np.random.default_rng(5)
    cells, g = ev.integers(0, len(D), args.events), ev.uniform(-0.05, 0.05, (2, args.events))
    _, s64 = dense_events(D, cells, *g)
    t32, s32 = dense_events(D.astype(np.float32), cells, *g)
    return dict(dense_f32_event_s=t32,
                dense_f32_rel_err=float(np.abs(s32 - s64).max() / np.abs(s64).max()))


@njit(cache=True)
def _pack_lower(D, P, off):
    """``P[off[r] + k, a, b] = D[r, a, b, k]`` for ``k <= r`` (the (d, s) block)."""
    for r in range(D.shape[0]):
        for k in range(r + 1):
            for a in range(2):
                for b in range(2):
                    P[off[r] + k, a, b] = D[r, a, b, k]


@njit(cache=True)
def sym_add(sig, P, off, w, c, gs, gc):
    """The (d, s) column add of cell ``c`` from the packed lower triangle: row ``c`` holds
    cells ``i <= c`` contiguously; ``i > c`` from row ``i`` by reciprocity (Maxwell-Betti:
    ``w_i D[c, a, b, i] = w_c D[i, b, a, c]``), one strided read per cell."""
    o = off[c]
    for i in range(c + 1):
        sig[0, i] += gs * P[o + i, 0, 0] + gc * P[o + i, 1, 0]
        sig[1, i] += gs * P[o + i, 0, 1] + gc * P[o + i, 1, 1]
    for i in range(c + 1, sig.shape[1]):
        r = w[c] / w[i]
        q = off[i] + c
        sig[0, i] += r * (gs * P[q, 0, 0] + gc * P[q, 0, 1])
        sig[1, i] += r * (gs * P[q, 1, 0] + gc * P[q, 1, 1])


def symmetric_section(D, w, args) -> dict:
    """Half storage of the (d, s) block (reciprocity), per-event time; with the operator
    ``D``, the (d, s) stress error after ``--events`` events against the full column add."""
    nc = len(w)
    off = np.concatenate([[0], np.cumsum(np.arange(1, nc + 1))])[:-1].astype(np.int64)
    P = np.empty((nc * (nc + 1) // 2, 2, 2))
    if D is None:
        P[:] = 1e-3
    else:
        _pack_lower(D, P, off)
    ev = np.random.default_rng(5)
    cells, g = ev.integers(0, nc, args.events), ev.uniform(-0.05, 0.05, (2, args.events))
    sig = np.zeros((2, nc))
    sym_add(sig, P, off, w, int(cells[0]), 0.0, 0.0)
    t = time.process_time()
    for c, a, b in zip(cells, *g, strict=True):
        sym_add(sig, P, off, w, int(c), a, b)
    out = dict(sym_mib=P.nbytes / 2**20, sym_event_s=(time.process_time() - t) / len(cells))
    if D is not None:
        ref = dense_events(D, cells, *g)[1][:2]
        out["sym_err"] = float(np.abs(sig - ref).max() / np.abs(ref).max())
    return out


def grid_dofs(el, n: int):
    """(ix, iy, comp) on the n x n node grid of every reduced dof of the periodic problem."""
    import scipy.sparse as sps

    ai, aj, av = el.P.getValuesCSR()
    P = sps.csr_matrix((av, aj, ai), shape=el.P.getSize()).tocsc()
    first = P.indices[P.indptr[:-1]]  # one full dof per reduced dof
    bs = el.V.dofmap.index_map_bs
    x = el.V.tabulate_dof_coordinates()[first // bs, :2]
    h = el.box.L / n
    ij = np.rint(x / h).astype(np.int64) % n
    return ij[:, 0], ij[:, 1], first % bs


def fft_preconditioner(el, n: int, G0: float, B0: float):
    """The exact inverse of the homogeneous (G0, B0) periodic stiffness, by FFT, on the
    reduced dofs (zero mean displacement instead of the pinned node: a rigid translation)."""
    from femplast.fe.elasticity import quad_stencils

    S, _, _ = quad_stencils(el.box.L / n, G0, B0)
    k = 2 * np.pi * np.fft.fftfreq(n)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    Kh = np.zeros((n, n, 2, 2), complex)
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            Kh += S[a + 1, b + 1] * np.exp(1j * (kx * a + ky * b))[..., None, None]
    Kh[0, 0] = np.eye(2)
    Kinv = np.linalg.inv(Kh)
    Kinv[0, 0] = 0.0
    ix, iy, comp = grid_dofs(el, n)

    def apply(r):
        g = np.zeros((n, n, 2))
        g[ix, iy, comp] = r
        gh = np.fft.fft2(g, axes=(0, 1))
        u = np.fft.ifft2(np.einsum("ijab,ijb->ija", Kinv, gh), axes=(0, 1)).real
        return u[ix, iy, comp]

    return apply


def pcg_section(red, n: int, args, rng) -> dict:
    """Preconditioned CG per event: iterations, CPU time, stress error vs the direct solve."""
    import scipy.sparse as sps
    from scipy.sparse.linalg import LinearOperator, cg

    from femplast.fe.elasticity import UNIT_S, to_dsp

    el = red.el

    def csr(M):
        ai, aj, av = M.getValuesCSR()
        return sps.csr_matrix((av, aj, ai), shape=M.getSize())

    K, Bt, Dm = csr(el.Kp), csr(el.PtBs), csr(el.DmP)
    G = el.G
    pre = fft_preconditioner(el, n, math.sqrt(G.min() * G.max()), B_MOD)
    M = LinearOperator(K.shape, matvec=pre)
    iters, errs, ts = [], [], []
    for c in rng.choice(red.num_cells, args.pcg_events, replace=False):
        eps = np.zeros((el.num_local, 3))
        eps[c] = UNIT_S
        q = np.zeros(Bt.shape[1])
        q.reshape(-1, 3)[el._qblk] = el.C(eps)
        b = Bt @ q
        count = [0]

        def cb(_x, count=count):
            count[0] += 1

        t = time.process_time()
        x, _ = cg(K, b, x0=pre(b), rtol=1e-10, maxiter=args.pcg_maxiter, M=M, callback=cb)
        sig = to_dsp(el.C((Dm @ x).reshape(-1, 3)[el._qblk] - eps))
        ts.append(time.process_time() - t)
        ref = to_dsp(el.stress(eps))
        iters.append(count[0])
        errs.append(float(np.abs(sig - ref).max() / np.abs(ref).max()))
    return dict(pcg_iterations=float(np.median(iters)), pcg_event_s=float(np.median(ts)),
                pcg_rel_err=float(max(errs)), contrast=float(G.max() / G.min()))


def one_size(n: int | None, args, gmsh_size: float | None = None) -> dict:
    from femplast.redistribution.backends import Redistribution
    from femplast.tensorial.variants import weibull_moduli

    box = make_box(n, gmsh_size)
    rng = np.random.default_rng(args.seed)
    G = weibull_moduli(box.num_cells, G_MEAN, G_SHAPE, rng)
    t = time.process_time()
    red = Redistribution(box, G, B_MOD)
    red.el  # noqa: B018  (build + factorize)
    rec = dict(mesh="gmsh" if gmsh_size else "quad", n=n, cells=box.num_cells,
               factorize_s=time.process_time() - t)
    rec["direct_step_s"] = direct_step(red, rng, args.repeats)
    # the direct backend's set-up: every cell's self-response (selected inversion), which
    # used to take 2 FE solves per cell, i.e. dense_build_s
    rec["selfq_s"] = cpu(red.el.self_strain_tensors)
    rec.update(dense_section(red, args, rng))
    rec["dense_speedup"] = rec["direct_step_s"] / rec["dense_event_s"]
    for events in (2000, 20000):  # build included: direct cost / dense cost of `events` events
        rec[f"amortized_{events // 1000}k"] = (rec["direct_step_s"] * events / (
            rec["dense_build_s"] + events * rec["dense_event_s"]))
    if "sym_event_s" in rec:
        rec["sym_speedup"] = rec["direct_step_s"] / rec["sym_event_s"]
    if not gmsh_size and args.pcg_events:
        rec.update(pcg_section(red, n, args, rng))
        rec["pcg_speedup"] = rec["direct_step_s"] / rec["pcg_event_s"]
    return rec


COLUMNS = [("mesh", "mesh", "{:>5}"), ("cells", "cells", "{:>6d}"),
           ("direct_step_s", "direct[ms]", "{:10.2f}", 1e3),
           ("selfq_s", "selfq[s]", "{:8.2f}"),
           ("dense_mib", "dense[MiB]", "{:10.0f}"),
           ("dense_build_single_s", "build1[s]", "{:9.1f}"),
           ("dense_build_s", "build[s]", "{:8.1f}"),
           ("dense_event_s", "dense[us]", "{:9.1f}", 1e6),
           ("dense_speedup", "speedup", "{:7.0f}x"),
           ("amortized_2k", "amort 2k", "{:7.1f}x"), ("amortized_20k", "amort 20k", "{:7.1f}x"),
           ("dense_err", "err", "{:8.1e}"),
           ("sym_mib", "sym[MiB]", "{:8.0f}"), ("sym_event_s", "sym[us]", "{:8.1f}", 1e6),
           ("sym_speedup", "sym x", "{:5.0f}x"), ("sym_err", "sym err", "{:8.1e}"),
           ("dense_f32_event_s", "f32[us]", "{:8.1f}", 1e6),
           ("dense_f32_rel_err", "f32 err", "{:8.1e}"),
           ("contrast", "Gmax/Gmin", "{:9.0f}"), ("pcg_iterations", "pcg it", "{:6.0f}"),
           ("pcg_event_s", "pcg[ms]", "{:8.1f}", 1e3), ("pcg_speedup", "pcg x", "{:6.2f}"),
           ("pcg_rel_err", "pcg err", "{:8.1e}")]


def table(results) -> str:
    """The results as a fixed-width table (``-`` where a column does not apply)."""
    rows = [[c[1] for c in COLUMNS]]
    for r in results:
        row = []
        for key, _name, fmt, *scale in COLUMNS:
            v = r.get(key)
            row.append("-" if v is None else fmt.format(v * scale[0] if scale else v).strip())
        rows.append(row)
    w = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(" ".join(x.rjust(wi) for x, wi in zip(row, w, strict=True))
                     for row in rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--gmsh", type=float, nargs="*", default=[],
                    help="target cell sizes of periodic gmsh boxes of side 15 l")
    ap.add_argument("--budget-mib", type=float, default=None,
                    help="largest dense operator built in full (default: the backend's, "
                         "from the available memory)")
    ap.add_argument("--f32", action="store_true", help="also time the float32 operator")
    ap.add_argument("--sym-check-cells", type=int, default=4096,
                    help="pack the real operator's half up to this many cells (else time the "
                         "half storage on random numbers)")
    ap.add_argument("--sample-columns", type=int, default=32)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pcg-events", type=int, default=3)
    ap.add_argument("--pcg-maxiter", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    results = [one_size(n, args) for n in args.sizes]
    results += [one_size(None, args, s) for s in args.gmsh]
    print("heterogeneous moduli (variant A: G ~ Weibull(18.4, 1.3), B = 59), CPU time per "
          "event")
    print(table(results))
    print("speedup = direct back-solve / dense column add; amort = the same with the build "
          "spread over 2,000 / 20,000 events; build1 = the build by single-RHS solves "
          "(extrapolated); err = max |stress - direct FE solve| / max |stress| after "
          f"{args.events} prescribed events; sym = the (d, s) block in half storage; "
          "pcg: CPU time and iterations per event")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(benchmark="heterogeneous", args=vars(args), results=results), f,
                      indent=1)


if __name__ == "__main__":
    main()
