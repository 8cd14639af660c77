"""Run a validated case: build the model once, run realizations (spread over MPI ranks),
write per-realization outputs and the summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from femplast.config.case import Case
from femplast.errors import FemplastInputError
from femplast.io.output import (
    FieldWriter,
    H5Writer,
    Progress,
    stress_fields,
    write_group,
    write_json,
)
from femplast.protocols import pipeline as protocols
from femplast.protocols.prepare import build_box
from femplast.version import __version__


def run_inclusion(case: Case, outdir: Path, comm: MPI.Comm, progress: Progress) -> dict:
    """model: inclusion -> the elastic field of one sheared inclusion, for ParaView."""
    from femplast.fe.elasticity import PeriodicElasticity, macro_strain

    box = build_box(case, comm)
    el = PeriodicElasticity(box, case.elasticity.G, case.elasticity.B)
    inc = case.inclusion
    mid = el.gather(box.midpoints()[el._dolfinx_cells])  # local canonical order
    r = np.hypot(mid[:, 0] - box.L / 2, mid[:, 1] - box.L / 2)
    inside = r <= inc.radius
    if not inside.any():
        raise FemplastInputError("inclusion.radius", inc.radius,
                                 f">= half a cell ({box.cell_size / 2:.3g}): no cell centre lies "
                                 "inside")
    eps = np.zeros((box.num_cells, 3))
    eps[inside, 2] = inc.eps0
    E = macro_strain(inc.gamma_ext)
    sig = el.gather(el.stress(eps[el.cells], E))
    fw = FieldWriter(outdir / "fields" / "inclusion.xdmf", box)
    fields = stress_fields("sigma", sig)
    fields["eps_pl_xy"] = eps[:, 2]
    fw.write(0.0, fields)
    fw.close()
    G, B = case.elasticity.G, case.elasticity.B
    return dict(cells_in_inclusion=int(inside.sum()),
                inclusion_area=float(el.gather(el.area)[inside].sum()),
                mean_stress_inside=sig[inside].mean(axis=0).tolist(),
                eshelby_circular_inside_xy=-G * inc.eps0 / (1 + G / B) + G * inc.gamma_ext,
                mean_stress=(el.mean(el.stress(eps[el.cells], E))).tolist(),
                num_cells=box.num_cells)


SCALAR_STEP_NAMES = dict(gamma_ext=0, stress_before=1, stress=2, eps_pl_mean=3,
                         plastic_strain_variance=4, mean_threshold=5, LOC=6,
                         internal_stress_std=7, size=8, relaxation_steps=9)


def run_scalar(case: Case, outdir: Path, comm: MPI.Comm, progress: Progress) -> dict:
    """model: scalar -> scalar EPM under synchronous extremal dynamics (femplast.scalar.model):
    optional fit of the slip law, then the realizations (spread over ranks)."""
    from femplast.scalar import model as S
    from femplast.streams import realization_rng

    sc, ld, seed, nreal = case.scalar, case.loading, case.run.seed, case.run.realizations
    model = S.model_from_case(case)
    grid = np.linspace(0.0, ld.gamma_max, sc.curve_points)
    fit = None
    if sc.fit.flow_stress is not None:
        fit = S.fit_slip(model, seed, nreal, ld.gamma_max, grid, ld.stationary_from,
                         sc.fit.flow_stress, sc.fit.flow_stress_err, sc.fit.peak_stress,
                         sc.fit.peak_stress_err, sc.fit.max_evaluations, comm,
                         log=lambda m: progress(m, True))
        model = model.with_slip(fit["c0"], fit["c1"])
        progress(f"fit: c0 = {fit['c0']:.5g} +- {fit['c0_err95']:.2g} (95%), c1 = "
                 f"{fit['c1']:.5g}", True)
    box = build_box(case, MPI.COMM_SELF) if case.output.fields and case.output.snapshots \
        else None
    (outdir / "realizations").mkdir(parents=True, exist_ok=True)
    results = []
    for i in range(comm.rank, nreal, comm.size):
        st = model.new_state(realization_rng(seed, i))
        drv = S.ScalarDriver(model, st)
        name = f"r{i:04d}"
        fw = FieldWriter(outdir / "fields" / f"{name}.xdmf", box) if box is not None else None

        def snapshot(g, st=st, fw=fw):
            sig = st.sig + model.G * g
            fw.write(g, dict(sigma_xy=sig, eps_pl_xy=st.epl, tau_c=st.thr, x=st.thr - sig,
                             sigma0_xy=st.sigma0))

        t0 = time.perf_counter()

        def on_progress(d, i=i, t0=t0):
            progress(f"realization {i + 1}/{nreal}: gamma_ext = {d.gamma_ext:.4f} / "
                     f"{ld.gamma_max}, {d.num_events} slips, "
                     f"{d.num_events / max(time.perf_counter() - t0, 1e-9):,.0f} slips/s")

        drv.run(ld.gamma_max, stops=case.output.snapshots if fw else (),
                on_stop=snapshot if fw else None, on_progress=on_progress)
        wall = time.perf_counter() - t0
        if fw:
            fw.close()
        rec = drv.table()
        with H5Writer(outdir / "realizations" / f"{name}.h5") as f:
            f.attrs.update(dict(realization=i, seed=seed, model="scalar",
                                femplast_version=__version__, kernel=model.kernel_kind,
                                wall_time=wall, num_events=drv.num_events))
            write_group(f, "steps", {k: (rec[:, c].astype(np.int64) if k in ("size",
                                         "relaxation_steps") else rec[:, c])
                                     for k, c in SCALAR_STEP_NAMES.items()},
                        dict(doc="row 0: initial state; then one row per avalanche, after it "
                                 "(stress_before: at its start). stress: macroscopic xy stress; "
                                 "eps_pl_mean, plastic_strain_variance: tensorial eps_xy; LOC: "
                                 "eq. 13 of the local total strain; size: slips"))
            write_group(f, "state", dict(stress=st.sig + model.G * st.gamma,
                                         sigma0=st.sigma0, eps_pl=st.epl, tau_c=st.thr),
                        dict(gamma_ext=st.gamma, alpha_ext=0.0,
                             rng_state=json.dumps(st.rng.bit_generator.state),
                             doc="scalar fields per cell (iy * N + ix): xy stress, frozen-in "
                                 "stress, tensorial plastic eps_xy, threshold"))
        results.append(dict(index=i, wall=wall, events=drv.num_events,
                            curves=S.curves_on_grid(rec, grid, model.G)))
        progress(f"realization {i + 1}/{nreal} done: {drv.num_events} slips in {wall:.2f} s",
                 True)
    allres = comm.gather(results, root=0)
    if comm.rank != 0:
        return {}
    res = sorted((r for rs in allres for r in rs), key=lambda r: r["index"])
    curves = {k: np.array([r["curves"][k] for r in res]) for k in S.CURVE_NAMES}
    stats = S.statistics(curves, grid, ld.stationary_from)
    for k in ("flow_per_realization", "peak_per_realization"):
        stats[k] = stats[k].tolist()
    par = model.parameters()
    if fit is not None:
        fit = {k: v for k, v in fit.items()}
    with np.errstate(all="ignore"):
        mean_curves = {k: np.nanmean(v, axis=0) for k, v in curves.items()}
        std_curves = {k: np.nanstd(v, axis=0) for k, v in curves.items()}
    return dict(num_cells=model.num_cells, seeds=[[seed, r["index"]] for r in res],
                total_slip_events=int(sum(r["events"] for r in res)),
                realization_wall_time=[r["wall"] for r in res],
                scalar=dict(disorder_strength=par["disorder_strength_s"], age=par["age_r"],
                            parameters=par, statistics=stats, fit=fit,
                            curves=dict(gamma_ext=grid, mean=mean_curves, std=std_curves)))


def run_case(case: Case, outdir: Path, comm: MPI.Comm = MPI.COMM_WORLD, quiet: bool = False,
             event_log: bool = False, resume: bool = False) -> dict | None:
    """Run ``case`` into ``outdir``; returns the summary on rank 0. ``resume``: continue an
    interrupted run in ``outdir`` (sweeps: finished points are kept)."""
    progress = Progress(quiet or comm.rank != 0)
    t0 = time.perf_counter()
    summary = dict(case=case.to_dict(), femplast_version=__version__,
                   mpi_ranks=comm.size)
    if comm.rank == 0:
        outdir.mkdir(parents=True, exist_ok=True)
        from femplast.config.case import yaml

        if not (resume and (outdir / "case.yaml").exists()):  # resume: the run's own case
            (outdir / "case.yaml").write_text(yaml.safe_dump(case.to_dict(), sort_keys=False))
    comm.barrier()
    if case.sweep.enabled:  # parameter sweep (femplast.app.sweep)
        from femplast.app.sweep import run_sweep

        summary.update(run_sweep(case, outdir, comm, progress, resume=resume))
    elif case.model in ("tensorial", "quench"):  # the realization pipeline
        if resume:
            protocols.check_resume(case, outdir)
        summary.update(protocols.run_realizations(case, outdir, comm, progress, resume=resume,
                                                  event_log=event_log))
    elif resume:
        raise FemplastInputError("--resume", True, "only for tensorial runs and sweeps "
                                 "(sweep.enabled)")
    elif case.model == "inclusion":
        summary["inclusion"] = run_inclusion(case, outdir, comm, progress)
    elif case.model == "scalar":
        summary.update(run_scalar(case, outdir, comm, progress))
    if comm.rank == 0:
        summary["wall_time"] = time.perf_counter() - t0
        write_json(outdir / "summary.json", summary)
        progress(f"done: {outdir / 'summary.json'}", True)
        return summary
    return None
