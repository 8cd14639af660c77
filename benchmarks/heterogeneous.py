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
  2 FE solves per cell; when the operator exceeds ``--budget-mib`` it is not built: its build
  time is extrapolated from ``--sample-columns`` solved columns and its per-event time is
  measured on a slab of random rows of the same row length, larger than the caches;
* ``dense`` float32: the same operator rounded to float32 (half the memory), its stress error
  after 2,000 prescribed events (relative to the largest stress) against float64;
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


def dense_events(D, rows, events: int, rng) -> tuple[float, np.ndarray]:
    """CPU seconds per event of the compiled column add over random rows; final stress."""
    from femplast.redistribution.kernels import dense_add

    sig = np.zeros((3, D.shape[-1]))
    idx = rng.choice(rows, events)
    g = rng.uniform(-0.05, 0.05, (events, 2))
    dense_add(sig, D, int(idx[0]), 0.0, 0.0)  # compile / load outside the timing
    t = time.process_time()
    for c, (gs, gc) in zip(idx, g, strict=True):
        dense_add(sig, D, int(c), gs, gc)
    return (time.process_time() - t) / events, sig


def dense_section(red, args, rng) -> dict:
    """Dense operator: build, memory, per-event time float64 / float32, float32 error."""
    from femplast.redistribution.backends import DenseRedistribution

    nc = red.num_cells
    mib = DenseRedistribution.memory_bytes(nc) / 2**20
    out = dict(dense_mib=mib, dense_f32_mib=mib / 2, dense_built=mib <= args.budget_mib)
    if out["dense_built"]:
        t = time.process_time()
        D = dense_columns(red, range(nc))
        out["dense_build_s"] = time.process_time() - t
        rows = np.arange(nc)
    else:  # extrapolate the build, time the event on a slab larger than the caches
        sample = rng.choice(nc, args.sample_columns, replace=False)
        t = time.process_time()
        dense_columns(red, sample)
        out["dense_build_s"] = (time.process_time() - t) * nc / len(sample)
        slab = max(64, int(256 * 2**20 / (48 * nc)))
        D = rng.random((slab, 2, 3, nc))
        rows = np.arange(slab)
    out["dense_event_s"], s64 = dense_events(D, rows, args.events, np.random.default_rng(5))
    D32 = D.astype(np.float32)
    out["dense_f32_event_s"], s32 = dense_events(D32, rows, args.events,
                                                 np.random.default_rng(5))
    out["dense_f32_rel_err"] = float(np.abs(s32 - s64).max() / np.abs(s64).max())
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
    if not gmsh_size and args.pcg_events:
        rec.update(pcg_section(red, n, args, rng))
        rec["pcg_speedup"] = rec["direct_step_s"] / rec["pcg_event_s"]
    return rec


COLUMNS = [("mesh", "mesh", "{:>5}"), ("cells", "cells", "{:>6d}"),
           ("direct_step_s", "direct[ms]", "{:10.2f}", 1e3),
           ("selfq_s", "selfq[s]", "{:8.2f}"),
           ("dense_mib", "dense[MiB]", "{:10.0f}"), ("dense_build_s", "build[s]", "{:8.1f}"),
           ("dense_event_s", "dense[us]", "{:9.1f}", 1e6),
           ("dense_speedup", "speedup", "{:7.0f}x"),
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
    ap.add_argument("--budget-mib", type=float, default=1024.0,
                    help="largest dense operator built in full (default 1024)")
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
    print("speedup = direct back-solve / dense column add; f32 err = max |stress error| / max "
          f"|stress| after {args.events} events; pcg: CPU time and iterations per event")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(benchmark="heterogeneous", args=vars(args), results=results), f,
                      indent=1)


if __name__ == "__main__":
    main()
