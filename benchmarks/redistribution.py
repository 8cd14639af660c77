"""Benchmark of stress redistribution in the tensorial EPM: propagator vs dense vs direct.

    python benchmarks/redistribution.py [--sizes 64 128 256 512] [--json FILE] [--quick]

Prints one table per section, from one run (ratios are the contract; absolute times on a
shared 2-core machine are noisy). Sections and JSON keys are documented in benchmarks/README.md.
Each large size runs in a fresh process so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

import femplast  # noqa: F401  (loads MPI before dolfinx / petsc4py)

BYTES_PER_CELL_EVENT = 8 * (1.5 + 2 + 2)
"""What one event must touch per cell, in float64: the (d, s) stress (2 reads + 2 writes) and
the distinct values of the (d, s) responses to the two unit shear eigenstrains: three
components (reciprocity), over half the rows (mirror symmetry), i.e. 1.5 reads per cell."""


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def copy_bandwidth(nbytes: float = 2**29, min_bytes: float = 2e9) -> float:
    """Copy bandwidth (bytes read + written per second) of this machine, numpy copyto.

    ``nbytes`` read + written per copy: the default (512 MiB) measures main memory; the size of
    an event's working set measures the cache level that holds it. Each timing repeats the copy
    until ``min_bytes`` have moved; the best of 7 timings is kept.
    """
    a = np.random.default_rng(0).random(max(1, int(nbytes // 16)))
    b = np.empty_like(a)
    reps = max(1, int(min_bytes // (2 * a.nbytes)))
    best = np.inf
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(reps):
            np.copyto(b, a)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * a.nbytes / best


def _model(n, L, backend, N):
    from mpi4py import MPI

    from femplast.fe.mesh import structured_box
    from femplast.tensorial.model import TensorialModel

    return TensorialModel.build(structured_box(n, L, comm=MPI.COMM_SELF), backend=backend, N=N)


def run_aqs(model, seed, k_end, max_events=None, event_log=False):
    from femplast.streams import realization_rng
    from femplast.tensorial.aqs import AQSDriver

    st = model.new_state(realization_rng(seed, 0))
    drv = AQSDriver(model, st, 0.0, 1e-4, k_end, event_log=event_log)
    t = time.perf_counter()
    if max_events is None:
        drv.run()
    else:
        drv.advance(None, max_events)
    return time.perf_counter() - t, drv


def warm_up() -> None:
    """Compile (or load from numba's cache) the event loop and kernels outside the timings:
    a few hundred events on a tiny box, so that a cold cache cannot enter a timing."""
    run_aqs(_model(4, 4 * 6.6, "propagator", 4), 0, 10**7, 200)


def paper_case(realizations: int, direct: bool) -> dict:
    """15 x 15 cells, N = 36, gamma_ext 0 -> 2 by 1e-4 (the paper's optimum at l = 6.6)."""
    n, L = 15, 98.8045
    warm_up()
    t = time.perf_counter()
    prop = _model(n, L, "propagator", 36)
    build = time.perf_counter() - t
    walls, events = [], []
    for r in range(realizations):
        w, drv = run_aqs(prop, r, 20000)
        walls.append(w)
        events.append(drv.num_events)
    _, logged = run_aqs(prop, 0, 20000, event_log=True)
    out = dict(propagator_build_s=build, propagator_wall_s=walls,
               propagator_median_s=float(np.median(walls)), events=events)
    if direct:
        t = time.perf_counter()
        dm = _model(n, L, "direct", 36)
        out["direct_build_s"] = time.perf_counter() - t
        w, drv = run_aqs(dm, 0, 20000)
        _, dlog = run_aqs(dm, 0, 20000, event_log=True)
        a, b = logged.event_table()[0], dlog.event_table()[0]
        m = min(len(a), len(b))
        same = np.all(a[:m] == b[:m], axis=1)
        agree = m if same.all() else int(np.argmin(same))
        out.update(direct_wall_s=w, direct_events=drv.num_events,
                   same_events_realization0=bool(drv.num_events == events[0]),
                   events_agreeing=agree, speedup=w / walls[0])
    return out


def large_size(n: int, events: int, warmup: int) -> dict:
    """Propagator rates on an n x n box with N = 4 (run in a fresh process)."""
    warm_up()
    t = time.perf_counter()
    m = _model(n, 6.6 * n, "propagator", 4)
    build = time.perf_counter() - t
    from femplast.streams import realization_rng
    from femplast.tensorial.aqs import AQSDriver

    st = m.new_state(realization_rng(0, 0))
    drv = AQSDriver(m, st, 0.0, 1e-4, 10**7)
    drv.advance(None, warmup)
    e0 = drv.num_events
    t = time.perf_counter()
    drv.advance(None, events)
    wall = time.perf_counter() - t
    ne = drv.num_events - e0
    rec = drv.avalanche_table()
    return dict(n=n, cells=n * n, build_s=build, events=ne, wall_s=wall, events_per_s=ne / wall,
                ns_per_cell_event=wall / ne / (n * n) * 1e9, gamma_ext=drv.gamma_ext,
                mean_avalanche=float(rec[:, 1].mean()) if len(rec) else 0.0,
                peak_mem_mib=vm_hwm_mib())


def same_events(n: int, events: int, repeats: dict | None = None) -> dict:
    """The same first `events` slip events with propagator and direct (fresh process); the
    best of several repeats of each (the VM's timings vary up to 2x between identical runs)."""
    repeats = repeats or {"propagator": 7, "direct": 3}
    warm_up()
    out = dict(n=n, events=events, repeats=repeats)
    for be in ("propagator", "direct"):
        m = _model(n, 6.6 * n, be, 4)
        run_aqs(m, 1, 10**7, 50)  # warm-up (numba, PETSc)
        walls = []
        for _ in range(repeats[be]):
            w, drv = run_aqs(m, 0, 10**7, events)
            walls.append(w)
        w = min(walls)
        out[f"{be}_walls_s"] = walls
        out[f"{be}_wall_s"] = w
        out[f"{be}_events"] = drv.num_events
        out[f"{be}_gamma_ext"] = drv.gamma_ext
    out["speedup"] = out["direct_wall_s"] / out["propagator_wall_s"]
    return out


def _subprocess(fn: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {repr(sys.path[0])}); "
            f"import redistribution as b; print('@@' + json.dumps(b.{fn}(*{args!r})))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=sys.path[0], check=True)
    line = [x for x in res.stdout.splitlines() if x.startswith("@@")][-1]
    return json.loads(line[2:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--events", type=int, default=20000, help="timed events per large size")
    p.add_argument("--realizations", type=int, default=5, help="paper-case realizations")
    p.add_argument("--direct-events", type=int, default=400,
                   help="events of the propagator/direct comparison at n = 128")
    p.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    p.add_argument("--json", help="write the results as JSON")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.events, a.realizations, a.direct_events = [64, 128], 2000, 2, 60
    res = {"benchmark": "redistribution"}
    bw = copy_bandwidth()
    res["copy_bandwidth_GBps"] = bw / 1e9
    print(f"copy bandwidth (numpy copyto, read+write): {bw / 1e9:.1f} GB/s\n")

    pc = paper_case(a.realizations, direct=True)
    res["paper_case"] = pc
    print("paper case: 15 x 15 cells, N = 36, gamma_ext 0 -> 2 by 1e-4, one core")
    print(f"  propagator: median {pc['propagator_median_s']:.3f} s per realization over "
          f"{a.realizations} ({np.median(pc['events']):.0f} events), build "
          f"{pc['propagator_build_s']:.2f} s")
    print(f"  direct:     {pc['direct_wall_s']:.2f} s for realization 0 "
          f"(same events: {pc['same_events_realization0']}, the first "
          f"{pc['events_agreeing']} of {pc['direct_events']} identical in cell, increment and "
          f"relaxation step), build {pc['direct_build_s']:.2f} s")
    print(f"  speedup propagator vs direct: {pc['speedup']:.0f}x   (target >= 20x, <= 1 s)\n")

    se = _subprocess("same_events", 128, a.direct_events)
    res["same_events_n128"] = se
    print(f"n = 128, N = 4, the same first {se['events']} events from one seed, best of "
          f"{se['repeats']['propagator']} / {se['repeats']['direct']} runs "
          f"(propagator {se['propagator_events']}, direct {se['direct_events']} events):")
    print(f"  propagator {se['propagator_wall_s']:.3f} s, direct {se['direct_wall_s']:.2f} s: "
          f"speedup {se['speedup']:.0f}x   (target >= 100x)\n")

    rows = []
    print("large systems, propagator, N = 4 per cell, after "
          f"{max(2000, a.events // 10)} warm-up events")
    hdr = (f"{'n':>5} {'cells':>7} {'build[s]':>8} {'events':>7} {'ev/s':>9} {'ns/cell/ev':>10} "
           f"{'bound[ns]':>9} {'meas/bound':>10} {'ws_bw[GB/s]':>11} {'ws_bnd[ns]':>10} "
           f"{'meas/ws':>7} {'peak[MiB]':>9}")
    print(hdr)
    for n in a.sizes:
        r = _subprocess("large_size", n, a.events, max(2000, a.events // 10))
        bound_s = BYTES_PER_CELL_EVENT * r["cells"] / bw
        r["bound_s_per_event"] = bound_s
        r["measured_over_bound"] = (r["wall_s"] / r["events"]) / bound_s
        ws_bw = copy_bandwidth(BYTES_PER_CELL_EVENT * r["cells"])
        r["ws_copy_bandwidth_GBps"] = ws_bw / 1e9
        r["ws_bound_s_per_event"] = BYTES_PER_CELL_EVENT * r["cells"] / ws_bw
        r["measured_over_ws_bound"] = (r["wall_s"] / r["events"]) / r["ws_bound_s_per_event"]
        rows.append(r)
        print(f"{n:5d} {r['cells']:7d} {r['build_s']:8.2f} {r['events']:7d} "
              f"{r['events_per_s']:9.0f} {r['ns_per_cell_event']:10.2f} "
              f"{bound_s / r['cells'] * 1e9:9.2f} {r['measured_over_bound']:10.2f} "
              f"{ws_bw / 1e9:11.1f} {r['ws_bound_s_per_event'] / r['cells'] * 1e9:10.2f} "
              f"{r['measured_over_ws_bound']:7.2f} "
              f"{r['peak_mem_mib']:9.0f}")
    res["large"] = rows
    print("  targets: <= 15 ns/cell/event at n = 256; measured/bound <= 2 at n >= 256; "
          "n = 512 in <= 2 GB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
