"""Benchmark of the tensorial EPM on specimens with boundaries (issue 19): time per event of
each redistribution backend on each geometry, at about 10^3, 10^4 (and 10^5) cells.

    python benchmarks/geometry.py [--cells 1000 10000] [--events 400] [--json FILE]

Per geometry (a U-notched strip in tension, a strip sheared between walls, periodic along
them), cell count and backend: the setup (gmsh meshing + FE factorization; the self-responses
of every cell (``direct``: MUMPS selected inversion; ``dense``: the whole Green operator, from
blocked solves) and the CPU time per slip event of AQS loading until ``--events`` events.
``dense`` runs when its operator fits ``--dense-mb``. Above ``--full-setup-max`` cells the row
reports only the factorization and the time of one solve, and the one-solve-per-cell setup it
implies (``setup_estimate_s``), with no events.

``--models scalar`` adds the scalar EPM on the same specimens (femplast.scalar.specimen: the
scalar paper's ESL-like laws, c0 = 0.05): ``dense`` (one resolved column per cell, 8 cells^2
bytes, from blocked solves; an event is one column add) and ``direct`` (one FE solve per
synchronous step); events are the slips of the extremal dynamics until ``--events`` (one
call, no strain steps: the scalar loop loads event by event).

CPU times (``time.process_time``) from one run on a shared machine: noisy, ratios matter.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

import femplast  # noqa: F401  (loads MPI before dolfinx / petsc4py)

CELL_SIZE = 6.6  # LJ length: the tensorial paper's element
TRI_AREA = math.sqrt(3) / 4  # area of an equilateral triangle of unit side


def _geometry(kind: str, cells: int) -> dict:
    """Geometry section of a case with about ``cells`` triangles of side CELL_SIZE."""
    area = cells * TRI_AREA * CELL_SIZE**2
    if kind == "notch":
        H = math.sqrt(area / 2)
        return {"shape": "notched_strip", "width": 2 * H, "height": H, "size": CELL_SIZE,
                "notch_depth": 0.2 * 2 * H, "notch_radius": 2 * CELL_SIZE,
                "boundaries": {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}}
    H = math.sqrt(area)
    return {"shape": "strip", "width": H, "height": H, "size": CELL_SIZE, "periodic": "x",
            "boundaries": {"bottom": "clamped", "top": {"displacement": [1.0, 0.0]}}}


def _case(kind, cells, backend, dense_mb):
    from femplast.app.api import load_case

    return load_case({"mesh": {"kind": "geometry"}, "geometry": _geometry(kind, cells),
                      "redistribution": {"backend": backend, "dense_memory_mb": dense_mb},
                      "loading": {"dgamma_ext": 2e-4, "gamma_max": 1.0,
                                  "stationary_from": 0.5}})


def run_case(kind: str, cells: int, backend: str, events: int, dense_mb: float) -> dict:
    """Setup and per-event CPU time of one geometry / size / backend."""
    from femplast.app.api import Simulation

    t0 = time.process_time()
    sim = Simulation(_case(kind, cells, backend, dense_mb))
    setup = time.process_time() - t0
    m = sim._model
    g, t1 = 0.0, time.process_time()
    while sim.num_events < events and g < 1.0:
        g = round(g + 5e-3, 6)
        sim.advance_to(g)
    dt = time.process_time() - t1
    el = m.el
    res = el.residual(sim.eps_pl[el.cells], sim.gamma_ext)
    return dict(geometry=kind, cells=m.num_cells, backend=m.backend, setup_s=setup,
                events=sim.num_events, gamma_ext=sim.gamma_ext,
                us_per_event=1e6 * dt / max(sim.num_events, 1), residual=res)


SCALAR = {"c0": 0.05, "thresholds": {"kind": "weibull", "scale": 1.404, "shape": 3.0},
          "renewal": {"kind": "weibull", "scale": 1.232, "shape": 3.0},
          "internal_stress_std": 0.175}


def run_scalar_case(kind: str, cells: int, backend: str, events: int, dense_mb: float) -> dict:
    """Setup and per-slip CPU time of the scalar model on one geometry / size / backend."""
    from femplast.app.api import load_case
    from femplast.scalar.model import ScalarDriver
    from femplast.scalar.specimen import model_from_case
    from femplast.streams import realization_rng

    case = load_case({"model": "scalar", "mesh": {"kind": "geometry"},
                      "geometry": _geometry(kind, cells), "elasticity": {"G": 14.7, "B": 52.0},
                      "redistribution": {"backend": backend, "dense_memory_mb": dense_mb},
                      "scalar": SCALAR})
    t0 = time.process_time()
    m = model_from_case(case)
    st = m.new_state(realization_rng(1, 0))
    setup = time.process_time() - t0
    d = ScalarDriver(m, st, budget=events)  # extremal dynamics: no strain steps needed
    t1 = time.process_time()
    d.advance(2.0)
    dt = time.process_time() - t1
    el = m.el
    res = el.residual(m.eigenstrain(st)[el.cells], st.gamma)
    return dict(model="scalar", geometry=kind, cells=m.num_cells, backend=m.backend,
                setup_s=setup, events=d.num_events, gamma_ext=st.gamma,
                us_per_event=1e6 * dt / max(d.num_events, 1), residual=res)


def estimate_setup(kind: str, cells: int, solves: int = 20) -> dict:
    """Meshing + factorization, and the self-response setup extrapolated from ``solves``."""
    from mpi4py import MPI

    from femplast.fe.boundary import BoundedElasticity
    from femplast.fe.elasticity import UNIT_S
    from femplast.fe.geometry import ShapeSpec, build_geometry

    geo_kw = _geometry(kind, cells)
    bc = geo_kw.pop("boundaries")
    t0 = time.process_time()
    geo = build_geometry(ShapeSpec(**geo_kw), MPI.COMM_SELF)
    el = BoundedElasticity(geo, bc)
    fact = time.process_time() - t0
    eps = np.zeros((el.num_local, 3))
    t1 = time.process_time()
    for c in range(solves):
        eps[:] = 0.0
        eps[c] = UNIT_S
        el.stress(eps)
    per = (time.process_time() - t1) / solves
    return dict(geometry=kind, cells=geo.num_cells, backend="direct", setup_s=fact,
                solve_ms=1e3 * per, setup_estimate_s=fact + 2 * geo.num_cells * per,
                events=0, us_per_event=float("nan"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--geometries", nargs="+", default=["notch", "walls"])
    p.add_argument("--events", type=int, default=400)
    p.add_argument("--models", nargs="+", default=["tensorial"],
                   choices=["tensorial", "scalar"])
    p.add_argument("--dense-mb", type=float, default=1024.0)
    p.add_argument("--full-setup-max", type=int, default=200000,
                   help="above this many cells only estimate the setup")
    p.add_argument("--json", help="write the results as JSON")
    a = p.parse_args(argv)
    rows = []
    print(f"{'model':>9} {'geometry':>8} {'cells':>7} {'backend':>7} {'setup s':>9} "
          f"{'events':>7} {'us/event':>10} {'residual':>9}", flush=True)
    for model in a.models:
        rows += (_tensorial_rows if model == "tensorial" else _scalar_rows)(a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


def _print_row(r: dict) -> None:
    print(f"{r.get('model', 'tensorial'):>9} {r['geometry']:>8} {r['cells']:>7} "
          f"{r['backend']:>7} {r['setup_s']:>9.1f} {r['events']:>7} {r['us_per_event']:>10.1f} "
          f"{r['residual']:>9.1e}", flush=True)


def _scalar_rows(a) -> list[dict]:
    from femplast.scalar.specimen import dense_bytes

    rows = []
    for kind in a.geometries:
        for n in a.cells:
            for be in ("dense", "direct"):
                if be == "dense" and dense_bytes(n) / 2**20 > a.dense_mb:
                    print(f"{'scalar':>9} {kind:>8} {n:>7} {'dense':>7}  over the "
                          f"{a.dense_mb:.0f} MiB budget", flush=True)
                    continue
                if n > a.full_setup_max:
                    continue
                rows.append(run_scalar_case(kind, n, be, a.events, a.dense_mb))
                _print_row(rows[-1])
    return rows


def _tensorial_rows(a) -> list[dict]:
    from femplast.redistribution.backends import DenseRedistribution

    rows = []
    for kind in a.geometries:
        for n in a.cells:
            if n > a.full_setup_max:
                r = estimate_setup(kind, n)
                rows.append(r)
                print(f"{'tensorial':>9} {kind:>8} {r['cells']:>7} {'direct':>7} "
                      f"{r['setup_s']:>9.1f} {'-':>7} {'-':>10} {'-':>9}  (one solve "
                      f"{r['solve_ms']:.1f} ms: self-responses ~{r['setup_estimate_s']:.0f} s)",
                      flush=True)
                continue
            for be in ("dense", "direct"):
                if be == "dense" and DenseRedistribution.memory_bytes(n) / 2**20 > a.dense_mb:
                    print(f"{'tensorial':>9} {kind:>8} {n:>7} {'dense':>7}  over the "
                          f"{a.dense_mb:.0f} MiB budget", flush=True)
                    continue
                rows.append(run_case(kind, n, be, a.events, a.dense_mb))
                _print_row(rows[-1])
    return rows


if __name__ == "__main__":
    main()
