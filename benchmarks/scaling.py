"""Benchmark: scaling over MPI ranks, one big sample and a sweep.

    python benchmarks/scaling.py [--sizes 128 256 512] [--ranks 1 2] [--events 200]
                                 [--sweep cases/sweep_small.yaml] [--json FILE]

* ``sample``: one sample distributed over all ranks (``run.parallel: sample``, direct FE
  backend) with variant A's heterogeneous moduli (G ~ Weibull(18.4, 1.3) per cell, B = 59,
  l = 6.6, N = 4): per size and number of ranks the model construction (mesh, assembly,
  MUMPS factorization, every cell's self-response) and the AQS loop up to ``--events`` slip
  events from a fresh state, each in a fresh ``mpirun`` process. Wall time is the maximum over
  ranks, CPU time (``time.process_time``) the maximum over ranks as well; ``speedup`` is the
  1-rank time over the R-rank time of the same size. All rank counts produce the same events
  (checked: the event count and the final gamma_ext).
* ``sweep``: a sweep case run serially and under ``mpirun -n R`` (``--sweep-ranks``), each in a
  fresh process: total wall time of the process, start-up (total minus the sweep's own wall
  time from summary.json), work units per rank and busy time per rank, CPU time of all processes
  (``RUSAGE_CHILDREN``), and ``ideal_speedup``: serial total / (start-up + slowest rank's busy
  time), what an idle machine gives; ``cpu_speedup``: the serial process's CPU time (start-up +
  units) over the largest of the ranks' (start-up + their units), the same estimate from CPU
  times, which other jobs on the machine do not inflate; ``predicted_speedup``: the serial
  process's whole CPU time over that largest rank's plus the serial run's CPU outside
  start-up and units (results, table, exit: once on any run's critical path), the CPU-based
  prediction of the idle machine's total speed-up (mpirun's own launch, ~0.1 s, not in it).
  Work units are (point, realization) pairs (femplast.app.sweep).
* ``startup``: CPU seconds of fresh processes importing, cumulatively, numpy, mpi4py, numba
  with its first cached kernel, dolfinx and petsc4py: the floor under the CLI's start-up
  (``--no-startup`` skips it).

Only ratios within one run mean something, and only on an idle machine for wall times: with
other jobs on the cores, ranks wait for CPU (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = str(Path(sys.executable).parent / "mpirun")


def sample_worker(n: int, events: int, out: str) -> None:
    """One distributed sample (runs under mpirun): construction, then ``events`` events."""
    import numpy as np
    from mpi4py import MPI

    import femplast  # noqa: F401
    from femplast.app.cases import case_from_dict
    from femplast.protocols.prepare import build_model
    from femplast.streams import realization_rng
    from femplast.tensorial.aqs import AQSDriver

    comm = MPI.COMM_WORLD
    case = case_from_dict({"mesh": {"n": n, "L": 6.6 * n}, "slip": {"N": 4},
                           "variant": {"model": "A"}, "run": {"parallel": "sample"},
                           "redistribution": {"backend": "direct"}})
    comm.barrier()
    w0, c0 = time.perf_counter(), time.process_time()
    model = build_model(case, comm, 0)
    comm.barrier()
    w1, c1 = time.perf_counter(), time.process_time()
    st = model.new_state(realization_rng(case.run.seed, 0))
    drv = AQSDriver(model, st, 0.0, 1e-4, 10**7)
    drv.advance(None, events)
    comm.barrier()
    w2, c2 = time.perf_counter(), time.process_time()
    rec = dict(n=n, cells=n * n, ranks=comm.size, backend=model.backend,
               build_wall_s=w1 - w0, build_cpu_s=c1 - c0, run_wall_s=w2 - w1, run_cpu_s=c2 - c1,
               events=drv.num_events, gamma_ext=float(drv.gamma_ext),
               solves=int(model.el.num_solves))
    for k in ("build_wall_s", "build_cpu_s", "run_wall_s", "run_cpu_s"):
        rec[k] = comm.allreduce(rec[k], op=MPI.MAX)
    rec["stress_checksum"] = float(comm.allreduce(np.abs(st.sig).sum()) / comm.size)
    if comm.rank == 0:
        Path(out).write_text(json.dumps(rec))


def run_sample(n: int, ranks: int, events: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rec.json"
        cmd = [MPIRUN, "-n", str(ranks), sys.executable, __file__, "--sample-worker", str(n),
               "--events", str(events), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(proc.stdout + proc.stderr)
        return json.loads(out.read_text())


def sample_section(args) -> list[dict]:
    rows = []
    for n in args.sizes:
        base = None
        for r in args.ranks:
            rec = run_sample(n, r, args.events)
            base = base or rec
            rec["build_speedup"] = base["build_wall_s"] / rec["build_wall_s"]
            rec["run_speedup"] = base["run_wall_s"] / rec["run_wall_s"]
            rec["run_cpu_speedup"] = base["run_cpu_s"] / rec["run_cpu_s"]
            rec["same_events"] = (rec["events"], rec["gamma_ext"]) == (base["events"],
                                                                       base["gamma_ext"])
            rows.append(rec)
            print(f"  n = {n:4d} ranks = {r}: build {rec['build_wall_s']:7.2f} s, "
                  f"{rec['events']} events in {rec['run_wall_s']:7.2f} s "
                  f"({1e3 * rec['run_wall_s'] / max(rec['solves'], 1):.1f} ms per solve)",
                  flush=True)
    return rows


def run_sweep(case: str, ranks: int, overrides=()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "femplast", case, "--out", str(out)]
        for o in overrides:
            cmd += ["--set", o]
        if ranks > 1:
            cmd = [MPIRUN, "-n", str(ranks)] + cmd
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            raise RuntimeError(proc.stdout + proc.stderr)
        sw = json.loads((out / "summary.json").read_text())["sweep"]
    per = sw["ranks"]
    return dict(ranks=ranks, total_wall_s=wall, sweep_wall_s=sw["wall_time"],
                startup_s=wall - sw["wall_time"],
                cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                units=[p.get("units_computed", p["points_computed"]) for p in per],
                busy_s=[p["busy_time"] for p in per],
                busy_cpu_s=[p["busy_cpu_time"] for p in per],
                startup_cpu_s=[p["startup_cpu_time"] for p in per])


STARTUP_STEPS = (  # cumulative: what every process of a sweep loads before its first unit
    ("interpreter", "pass"),
    ("+ numpy", "import numpy"),
    ("+ mpi4py (MPI_Init)", "import numpy; from mpi4py import MPI"),
    ("+ numba, first cached kernel", "import numpy; from mpi4py import MPI; "
     "import femplast.tensorial.rules"),
    ("+ dolfinx, petsc4py", "import numpy; from mpi4py import MPI; "
     "import femplast.tensorial.rules; import dolfinx; from petsc4py import PETSc"),
)


def startup_section(reps: int = 3) -> list[dict]:
    """CPU seconds of fresh processes that only import the stack a sweep needs (the floor
    under femplast's own start-up), minimum over ``reps`` runs."""
    rows = []
    for name, code in STARTUP_STEPS:
        best = math.inf
        for _ in range(reps):
            proc = subprocess.run([sys.executable, "-c", code + "; import time; "
                                   "print(time.process_time())"], capture_output=True,
                                  text=True, cwd=ROOT, check=True)
            best = min(best, float(proc.stdout.split()[-1]))
        rows.append(dict(step=name, cpu_s=best))
    return rows


def first_use_worker(case_path: str, overrides=()) -> None:
    """In this fresh process: import what the CLI imports, then compute every work unit of the
    sweep twice in the scheduler's order with a new model cache each pass. Prints JSON: the
    CPU before the first unit, the first pass, the second (warm) pass."""
    t0 = time.process_time()
    import femplast.app.cli  # noqa: F401
    import femplast.app.runner  # noqa: F401
    from femplast.app import sweep as S
    from femplast.app.cases import load_case

    case = load_case(case_path, list(overrides))
    points = S.plan(case)
    ref = S._check_reference(case)
    units = S.work_units(case, list(range(len(points))))
    before = time.process_time() - t0
    passes = []
    for _ in range(2):
        models, c = S.ModelCache(), time.process_time()
        for u in units:
            S.compute_unit(case, points, u, models, ref)
        passes.append(time.process_time() - c)
    print(json.dumps(dict(imports_cpu_s=before, first_pass_cpu_s=passes[0],
                          warm_pass_cpu_s=passes[1], units=len(units))))


def first_use_section(args) -> dict:
    """What a process pays once inside its units (compiled kernels loaded at their first call,
    FE forms, models of each mesh): the first pass over all units minus a warm pass."""
    cmd = [sys.executable, __file__, "--first-use-worker", args.sweep]
    for o in args.sweep_set:
        cmd += ["--sweep-set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["first_use_cpu_s"] = rec["first_pass_cpu_s"] - rec["warm_pass_cpu_s"]
    return rec


def amdahl_bound(ser: dict, fu: dict, ranks: int) -> float:
    """The largest total speed-up ``ranks`` processes can give a sweep whose serial CPU is
    split into per-process costs F (start-up before the first unit + first use inside the
    units), the warm units B (perfectly shared) and the serial tail T (results, exit):
    ``(F + B + T) / (F + B / ranks + T)``."""
    F = ser["startup_cpu_s"][0] + fu["first_use_cpu_s"]
    B = ser["busy_cpu_s"][0] - fu["first_use_cpu_s"]
    T = max(ser["cpu_s"] - ser["startup_cpu_s"][0] - ser["busy_cpu_s"][0], 0.0)
    return (F + B + T) / (F + B / ranks + T)


def sweep_section(args) -> list[dict]:
    rows = [run_sweep(args.sweep, r, args.sweep_set) for r in args.sweep_ranks]
    ser = rows[0]
    for rec in rows:
        rec["speedup"] = ser["total_wall_s"] / rec["total_wall_s"]
        rec["ideal_speedup"] = ser["total_wall_s"] / (rec["startup_s"] + max(rec["busy_s"]))
        crit = [a + b for a, b in zip(rec["startup_cpu_s"], rec["busy_cpu_s"], strict=True)]
        rec["cpu_critical_s"] = max(crit)
        rec["cpu_speedup"] = (ser["startup_cpu_s"][0] + ser["busy_cpu_s"][0]) / max(crit)
        # the serial process's CPU outside start-up and units (results, table, exit) is once
        # on the critical path of any run: an idle machine's total speed-up, from CPU times
        tail = max(ser["cpu_s"] - ser["startup_cpu_s"][0] - ser["busy_cpu_s"][0], 0.0)
        rec["predicted_speedup"] = ser["cpu_s"] / (max(crit) + tail)
    if args.first_use:
        fu = first_use_section(args)
        for rec in rows:
            rec["first_use"] = fu
            rec["amdahl_bound"] = amdahl_bound(ser, fu, rec["ranks"])
    return rows


def print_startup(rows, sweep) -> None:
    print("\nstart-up CPU of a fresh process (min of 3), cumulative")
    for r in rows:
        print(f"  {r['step']:32s} {r['cpu_s']:6.3f} s")
    if sweep:
        print(f"  {'femplast CLI to its first unit':32s} "
              f"{min(min(r['startup_cpu_s']) for r in sweep):6.3f} s (summary.json)")


def print_tables(sample, sweep) -> None:
    if sample:
        print("\none sample over ranks (variant A moduli, direct backend)")
        print("    n  ranks  build[s]  build x   events   run[s]  run x  cpu x  same")
        for r in sample:
            print(f"{r['n']:5d} {r['ranks']:6d} {r['build_wall_s']:9.2f} "
                  f"{r['build_speedup']:7.2f}x {r['events']:8d} {r['run_wall_s']:8.2f} "
                  f"{r['run_speedup']:5.2f}x {r['run_cpu_speedup']:5.2f}x "
                  f"{str(r['same_events']):>5}")
    if sweep:
        print("\nsweep")
        print(" ranks total[s] startup[s] sweep[s] cpu[s]  units busy[s]     "
              "startup_cpu[s] busy_cpu[s] speedup  ideal cpu x predicted")
        for r in sweep:
            def f(v):
                return "/".join(f"{b:.2f}" for b in v)
            pts = "/".join(map(str, r["units"]))
            print(f"{r['ranks']:6d} {r['total_wall_s']:8.2f} {r['startup_s']:10.2f} "
                  f"{r['sweep_wall_s']:8.2f} {r['cpu_s']:6.2f} {pts:>6} {f(r['busy_s']):>11} "
                  f"{f(r['startup_cpu_s']):>14} {f(r['busy_cpu_s']):>11} "
                  f"{r['speedup']:6.2f}x {r['ideal_speedup']:5.2f}x {r['cpu_speedup']:4.2f}x "
                  f"{r['predicted_speedup']:8.2f}x")
        fu = sweep[0].get("first_use")
        if fu:
            print(f"per process: start-up {sweep[0]['startup_cpu_s'][0]:.2f} CPU s before the "
                  f"first unit, first use inside the units {fu['first_use_cpu_s']:.2f} CPU s "
                  f"(first pass {fu['first_pass_cpu_s']:.2f} - warm pass "
                  f"{fu['warm_pass_cpu_s']:.2f} over {fu['units']} units)")
            print("largest speed-up with these per-process costs (Amdahl): " + ", ".join(
                f"{r['ranks']} ranks {r['amdahl_bound']:.2f}x" for r in sweep))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[128, 256, 512])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--sweep", default="cases/sweep_small.yaml",
                    help="sweep case ('' to skip the sweep section)")
    ap.add_argument("--sweep-ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sweep-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the sweep case (repeatable), e.g. "
                         "sweep.realizations=8")
    ap.add_argument("--no-startup", action="store_true",
                    help="skip the start-up breakdown (fresh processes importing the stack)")
    ap.add_argument("--first-use", action="store_true",
                    help="measure the per-process first use inside the units (a fresh process "
                         "computing every unit twice) and the Amdahl bound it sets")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sample-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--first-use-worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sample_worker:
        sample_worker(args.sample_worker, args.events, args.out)
        return
    if args.first_use_worker:
        first_use_worker(args.first_use_worker, args.sweep_set)
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average before: {' '.join(load)} (wall-time ratios need an idle machine)")
    sample = sample_section(args) if args.sizes else []
    sweep = sweep_section(args) if args.sweep else []
    startup = [] if args.no_startup else startup_section()
    print_tables(sample, sweep)
    if startup:
        print_startup(startup, sweep)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(benchmark="scaling", load_average=load,
                                                   sample=sample, sweep=sweep,
                                                   startup=startup), indent=1))


if __name__ == "__main__":
    main()
