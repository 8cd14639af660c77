"""Benchmark of the periodic elasticity core on structured quad boxes.

    python benchmarks/elasticity.py [--sizes 16 32 64 128 256] [--repeats 7] [--json FILE]

Every size runs in a fresh Python process (so the peak-memory figure belongs to that size
alone), after a warm-up on a 4 x 4 box that takes the form JIT compilation out of the timings.
Columns (also the JSON keys, see benchmarks/README.md): mesh creation; construction of
PeriodicElasticity split into assembly (forms, P, P^T K P, ...) and factorization (PETSc
``PCSetUp`` event: MUMPS symbolic + numeric LU); one update = ``stress()`` (rhs, back-solve,
cell strains and stresses), median of ``--repeats``; peak resident memory (VmHWM of
/proc/self/status, reset through /proc/self/clear_refs) above the warmed-up baseline.
Serial by default; under mpirun (with --in-process) the times are the max over ranks and the
memory the sum over ranks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import femplast  # noqa: F401  (loads MPI before dolfinx / petsc4py)


def _vm_hwm_mib() -> float:
    """Peak resident set size of this process (VmHWM), MiB; ru_maxrss as a fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_hwm() -> bool:
    """Reset VmHWM to the current resident size (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_size(n: int, repeats: int) -> dict:
    import numpy as np
    from mpi4py import MPI
    from petsc4py import PETSc

    from femplast.fe.elasticity import PeriodicElasticity
    from femplast.fe.mesh import structured_box

    comm = MPI.COMM_WORLD
    PETSc.Log.begin()
    pcsetup = PETSc.Log.Event("PCSetUp")

    def tmax(t):
        return comm.allreduce(t, op=MPI.MAX)

    warm = PeriodicElasticity(structured_box(4, 1.0, "quad", comm))
    warm.stress(np.zeros((warm.num_local, 3)))
    warm.destroy()
    del warm
    import gc

    gc.collect()
    hwm_reset = _reset_hwm()
    base_mem = _vm_hwm_mib()

    comm.Barrier()
    t0 = time.perf_counter()
    box = structured_box(n, 1.0, "quad", comm)
    t_mesh = time.perf_counter() - t0

    f0 = pcsetup.getPerfInfo()["time"]
    comm.Barrier()
    t0 = time.perf_counter()
    el = PeriodicElasticity(box, 13.2, 59.0)
    t_build = time.perf_counter() - t0
    t_fact = pcsetup.getPerfInfo()["time"] - f0

    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        eps_pl = rng.normal(0.0, 1e-2, (el.num_local, 3))
        comm.Barrier()
        t0 = time.perf_counter()
        el.stress(eps_pl, (0.0, 0.0, 1e-3))
        times.append(time.perf_counter() - t0)
    peak = _vm_hwm_mib()
    out = {
        "n": n,
        "cells": box.num_cells,
        "dofs": int(el.n_reduced),
        "ranks": comm.size,
        "mesh_s": tmax(t_mesh),
        "construct_s": tmax(t_build),
        "assembly_s": tmax(t_build - t_fact),
        "factorize_s": tmax(t_fact),
        "update_s": tmax(float(np.median(times))),
        "update_min_s": tmax(float(np.min(times))),
        "peak_mem_mib": comm.allreduce(peak - base_mem),
        "vm_hwm_mib": comm.allreduce(peak),
        "memory_method": "VmHWM (/proc/self/status) minus warmed-up baseline"
        + ("" if hwm_reset else " (VmHWM not resettable: includes earlier peaks)"),
    }
    el.destroy()
    return out


HEADER = (f"{'n':>5} {'cells':>7} {'dofs':>7} {'mesh[s]':>8} {'assem[s]':>9} {'fact[s]':>8} "
          f"{'constr[s]':>9} {'update[ms]':>10} {'peak[MiB]':>9}")


def fmt(r: dict) -> str:
    return (f"{r['n']:>5} {r['cells']:>7} {r['dofs']:>7} {r['mesh_s']:>8.3f} "
            f"{r['assembly_s']:>9.3f} {r['factorize_s']:>8.3f} {r['construct_s']:>9.3f} "
            f"{1e3 * r['update_s']:>10.2f} {r['peak_mem_mib']:>9.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="benchmark femplast.fe.elasticity")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=7, help="update() calls per size")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--in-process", action="store_true",
                        help="run all sizes in this process (needed under mpirun)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_size(args.worker, args.repeats)))
        return 0

    from mpi4py import MPI

    root = MPI.COMM_WORLD.rank == 0
    results = []
    if root:
        print(HEADER, flush=True)
    for n in args.sizes:
        if args.in_process:
            r = run_size(n, args.repeats)
        else:
            proc = subprocess.run([sys.executable, __file__, "--worker", str(n),
                                   "--repeats", str(args.repeats)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        if root:
            print(fmt(r), flush=True)
    if args.json:
        if root:
            with open(args.json, "w") as f:
                json.dump({"benchmark": "elasticity", "mesh": "structured quad",
                           "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
