"""Run a validated case: build the model once, run realizations (spread over MPI ranks),
write per-realization outputs and the summary."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from femplast.config.case import Case
from femplast.errors import FemplastInputError
from femplast.io.output import (
    FieldWriter,
    Progress,
    stress_fields,
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


def run_case(case: Case, outdir: Path, comm: MPI.Comm = MPI.COMM_WORLD, quiet: bool = False,
             event_log: bool = False, resume: bool = False,
             keep_checkpoint: bool = False) -> dict | None:
    """Run ``case`` into ``outdir``; returns the summary on rank 0. ``resume``: continue an
    interrupted run in ``outdir`` (sweeps: finished points are kept). ``OUTDIR/checkpoint/``
    serves ``--resume`` only, so it is removed once ``summary.json`` is written unless
    ``keep_checkpoint``."""
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
    elif case.model in ("tensorial", "quench", "scalar"):  # the realization loop
        if resume:
            protocols.check_resume(case, outdir)
        runs = None  # tensorial: protocols.TensorialRuns
        if case.model == "scalar":  # the fit of the slip law (scalar.fit) runs here
            from femplast.scalar.realization import ScalarRuns

            runs = ScalarRuns.prepare(case, outdir, comm, progress, resume=resume)
        summary.update(protocols.run_realizations(case, outdir, comm, progress, resume=resume,
                                                  event_log=event_log, runs=runs))
    elif resume:
        raise FemplastInputError("--resume", True, "only for tensorial and scalar runs and "
                                 "sweeps (sweep.enabled)")
    elif case.model == "inclusion":
        summary["inclusion"] = run_inclusion(case, outdir, comm, progress)
    comm.barrier()  # every rank's last checkpoint is on disk (removed below)
    if comm.rank == 0:
        summary["wall_time"] = time.perf_counter() - t0
        write_json(outdir / "summary.json", summary)
        if not keep_checkpoint:
            shutil.rmtree(outdir / "checkpoint", ignore_errors=True)
        progress(f"done: {outdir / 'summary.json'}", True)
        return summary
    return None
