"""Realizations of the scalar EPM in the one realization loop
(:func:`femplast.protocols.pipeline.run_realizations`).

Where this lives. The loop (ranks, checkpoints, ``--resume``, gathering) is in
``femplast.protocols``, above this package; it takes a *run kind*: an object with ``sample``
(False here: realizations are spread over the ranks), ``new_run(index)`` returning a
realization with the interface of :class:`femplast.protocols.pipeline.RealizationRun`
(``index``, ``run(tick) -> result``, ``checkpoint() -> dict``, ``restore(d)``) and
``summarize(results) -> dict``. Both :class:`ScalarRealization` and the kind :class:`ScalarRuns`
only use the scalar model and lower layers (io, fe, streams), so they sit in
``femplast.scalar`` next to the model they drive, and the loop stays model-agnostic: nothing in
``femplast.protocols`` needs to know the scalar model, and the scalar model does not import the
protocols (checkpoints are plain nested dicts of arrays and scalars, the format
:mod:`femplast.protocols.checkpoint` stores). Sweeps (``femplast.app.sweep``) run the same
class in memory (``outdir=None``).

One realization: a state from ``realization_rng(run.seed, index)``, the driver runs to
``loading.gamma_max`` (when field snapshots are written it stops at each
``output.snapshots`` value first, as the classic scalar runner did: the stops are part of the
trajectory), safe points every :data:`SAFE_POINT_SLIPS` slips (the loop resumes mid-avalanche
without changing the trajectory), snapshots kept in memory (and in the checkpoint) and written
with the realization file at its end, so a resumed run writes the same bytes.

Checkpoint: state arrays, random stream, the compiled loop's arrays (:class:`model.Loop`), the
flushed records, the stops passed, the snapshots, the wall time so far. The fit of the slip law
(``scalar.fit``) is a preparation step before the loop (:meth:`ScalarRuns.prepare`); its
result is kept in ``OUTDIR/checkpoint/fit.json`` so ``--resume`` does not refit.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

from femplast.io.output import H5Writer, progress_bar, write_fields, write_group
from femplast.scalar import model as S
from femplast.streams import realization_rng
from femplast.version import __version__

SAFE_POINT_SLIPS = 20000  # slips between safe points (interruption, periodic checkpoints)

STEP_NAMES = dict(gamma_ext=0, stress_before=1, stress=2, eps_pl_mean=3,
                  plastic_strain_variance=4, mean_threshold=5, LOC=6,
                  internal_stress_std=7, size=8, relaxation_steps=9,
                  total_strain_variance=10,  # of the local total strain (plastic + elastic)
                  LOC_plastic=11)
STEPS_DOC = ("row 0: initial state; then one row per avalanche, after it (stress_before: at its "
             "start). stress: macroscopic xy stress; eps_pl_mean, plastic_strain_variance: "
             "tensorial eps_xy; LOC: eq. 13 of the local total strain; LOC_plastic: eq. 13 of the "
             "plastic strain alone (NaN before the first slip); size: slips. A specimen "
             "(mesh.kind: geometry): stress is the force conjugate to gamma_ext per unit area, "
             "resolved_stress the area-weighted mean scalar stress, force = area * stress, "
             "displacement = gamma_ext * height (femplast.scalar.specimen)")
STATE_DOC = ("scalar fields per cell (iy * N + ix): xy stress, frozen-in stress, tensorial "
             "plastic eps_xy, threshold")


def localization_edges(case) -> np.ndarray:
    """Strains of the plastic-strain snapshots of ``localization`` (none when disabled or
    shorter than one window)."""
    lo = case.localization
    if not lo.enabled or lo.window > case.loading.gamma_max:
        return np.zeros(0)
    return S.window_edges(case.loading.gamma_max, lo.stride or lo.window)


def curve_grid(case) -> np.ndarray:
    """Strains of the ensemble curves (``scalar.curve_points`` up to ``loading.gamma_max``)."""
    return np.linspace(0.0, case.loading.gamma_max, case.scalar.curve_points)


class ScalarRealization:
    """One scalar realization (interface of ``RealizationRun``, see the module doc).

    Args:
        case: the validated case (``model: scalar``).
        model: its :class:`femplast.scalar.model.ScalarModel` (fitted slip law included).
        index: realization number (random stream ``realization_rng(run.seed, index)``).
        outdir: output directory, or None to keep the records in memory (``result["table"]``).
        box: mesh for field snapshots (None: no fields).
        progress: ``progress(msg, force=False)``.
    """

    def __init__(self, case, model: S.ScalarModel, index: int, outdir: Path | None,
                 box=None, progress=None):
        self.case, self.model, self.index, self.outdir = case, model, index, outdir
        self.box = box if outdir is not None else None
        self.progress = progress or (lambda *a, **k: None)
        self.state = model.new_state(realization_rng(case.run.seed, index))
        self.drv = S.ScalarDriver(model, self.state, budget=SAFE_POINT_SLIPS)
        gmax = case.loading.gamma_max
        snaps = case.output.snapshots if self.box is not None else ()
        self.stops = sorted({x for x in snaps if 0 <= x < gmax} | {gmax})  # gmax once
        self.snap_at = set(snaps)
        self.stop_i = 0  # stops passed
        self.snaps: list[tuple[float, dict]] = []
        self.edges = localization_edges(case)
        self.drv.observe(self.edges)
        self.wall = 0.0
        self.t0 = time.perf_counter()

    @property
    def name(self) -> str:
        return f"r{self.index:04d}"

    # ------------------------------------------------------------------ running
    def run(self, tick) -> dict:
        """Run to ``loading.gamma_max`` calling ``tick()`` at safe points; the result
        (index, events, wall, curves on :func:`curve_grid`; in memory also the table)."""
        d, gmax = self.drv, self.case.loading.gamma_max
        bar = progress_bar(self.progress, gmax, f"{self.name} gamma_ext", "strain")
        while self.stop_i < len(self.stops):
            g = self.stops[self.stop_i]
            while d.advance(g) == S.RC_BUDGET:
                bar.set(d.gamma_ext, f"{d.num_events:,} slips")
                tick()
            if g in self.snap_at:
                self.snaps.append((g, self._fields(g)))
            self.stop_i += 1
        bar.set(d.gamma_ext, f"{d.num_events:,} slips")
        bar.close()
        rec = d.table()
        self.wall += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        curves = S.curves_on_grid(rec, curve_grid(self.case), self.model.stress_slope)
        res = dict(index=self.index, wall=self.wall, events=d.num_events, curves=curves)
        if len(self.edges) > 1:  # plastic-strain snapshots (femplast.analysis.localization;
            # a specimen's: its cells and band detector added by the realization loop)
            res["windows"] = dict(edges=self.edges, eps_pl=np.array(d.observed), n=self.model.n,
                                  kind="quad", gamma=curve_grid(self.case),
                                  stress=curves["stress"])
        if self.outdir is None:
            res["table"] = rec
        else:
            self._write(rec)
        return res

    def _fields(self, g: float) -> dict:
        st = self.state
        sig = self.model.total_stress(st, g)
        return dict(sigma_xy=sig, eps_pl_xy=st.epl.copy(), tau_c=st.thr.copy(),
                    x=st.thr - sig, sigma0_xy=st.sigma0.copy())

    def _write(self, rec: np.ndarray) -> None:
        st, m, out = self.state, self.model, Path(self.outdir)
        if self.snaps:
            write_fields(out / "fields" / f"{self.name}.xdmf", self.box, self.snaps)
        (out / "realizations").mkdir(parents=True, exist_ok=True)
        with H5Writer(out / "realizations" / f"{self.name}.h5") as f:
            f.attrs.update(dict(realization=self.index, seed=self.case.run.seed, model="scalar",
                                femplast_version=__version__, kernel=m.kernel_kind,
                                wall_time=self.wall, num_events=self.drv.num_events))
            steps = {k: (rec[:, c].astype(np.int64) if k in ("size", "relaxation_steps")
                         else rec[:, c]) for k, c in STEP_NAMES.items()}
            state = dict(stress=m.total_stress(st, st.gamma), sigma0=st.sigma0, eps_pl=st.epl,
                         tau_c=st.thr)
            if rec.shape[1] > len(STEP_NAMES):  # a specimen (femplast.scalar.specimen)
                steps.update(resolved_stress=rec[:, 12], force=m.box.area * rec[:, 2],
                             displacement=rec[:, 0] * m.box.height)
                if st.eps0 is not None:
                    state["eps0"] = st.eps0
            write_group(f, "steps", steps, dict(doc=STEPS_DOC))
            write_group(f, "state", state,
                        dict(gamma_ext=st.gamma, alpha_ext=0.0,
                             rng_state=json.dumps(st.rng.bit_generator.state), doc=STATE_DOC))

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> dict:
        st, lp = self.state, self.drv.loop
        return dict(index=self.index, stop_i=self.stop_i,
                    wall=self.wall + time.perf_counter() - self.t0,
                    state=dict(sig=st.sig.copy(), sigma0=st.sigma0.copy(), epl=st.epl.copy(),
                               thr=st.thr.copy(), gamma=float(st.gamma),
                               rng_state=json.dumps(st.rng.bit_generator.state)),
                    loop={k: v.copy() for k, v in lp._asdict().items()},
                    records=[r.copy() for r in self.drv.records],
                    observed=np.array(self.drv.observed).reshape(-1, self.model.num_cells),
                    snaps=[dict(t=t, fields=f) for t, f in self.snaps])

    def restore(self, d: dict) -> None:
        st, lp = self.state, self.drv.loop
        s = d["state"]
        for k in ("sig", "sigma0", "epl", "thr"):
            getattr(st, k)[...] = s[k]
        st.gamma = float(s["gamma"])
        st.rng.bit_generator.state = json.loads(s["rng_state"])
        for k, v in d["loop"].items():
            getattr(lp, k)[...] = v
        self.drv.records = [np.array(r) for r in d["records"]]
        self.drv.observed = [np.array(x) for x in d.get("observed", [])]
        self.stop_i = int(d["stop_i"])
        self.snaps = [(float(x["t"]), dict(x["fields"])) for x in d["snaps"]]
        self.wall = float(d["wall"])
        self.t0 = time.perf_counter()


# ============================================================================ the run kind
class ScalarRuns:
    """The scalar run kind of the realization loop: factory and summarizer (module doc).
    Build it with :meth:`prepare` (the optional fit of the slip law runs there)."""

    sample = False

    def __init__(self, case, model: S.ScalarModel, outdir: Path | None, progress,
                 fit: dict | None = None, box=None):
        self.case, self.model, self.outdir, self.progress = case, model, outdir, progress
        self.fit, self.box = fit, box

    @classmethod
    def prepare(cls, case, outdir: Path, comm, progress, resume: bool = False) -> ScalarRuns:
        """The model of the case; with ``scalar.fit`` the slip law fitted over ``comm`` first
        (or, on ``--resume``, read back from ``OUTDIR/checkpoint/fit.json``)."""
        from mpi4py import MPI

        if case.mesh.kind == "geometry":  # a specimen: the FE kernel of its own geometry
            from femplast.scalar.specimen import model_from_case

            model = model_from_case(case)
        else:
            model = S.model_from_case(case)
        fit = None
        if case.scalar.fit.flow_stress is not None or case.scalar.fit.curves is not None:
            fit = _fit(case, model, outdir, comm, progress, resume)
            model = model.with_slip(fit["c0"], fit["c1"])
            progress(f"fit: c0 = {fit['c0']:.5g} +- {fit['c0_err95']:.2g} (95%), c1 = "
                     f"{fit['c1']:.5g}", True)
        box = None
        if case.output.fields and case.output.snapshots and case.mesh.kind == "geometry":
            box = model.box
        elif case.output.fields and case.output.snapshots:
            from femplast.config.case import resolve_path
            from femplast.fe.mesh import box_from_options

            m = case.mesh
            box = box_from_options(m.kind, m.n, m.L, str(resolve_path(case, m.file))
                                   if m.file else None, m.size, MPI.COMM_SELF)
        return cls(case, model, outdir, progress, fit, box)

    def new_run(self, index: int) -> ScalarRealization:
        return ScalarRealization(self.case, self.model, index, self.outdir, self.box,
                                 self.progress)

    def summarize(self, res: list[dict]) -> dict:
        """The summary part of the realizations ``res`` (sorted by index)."""
        case, model = self.case, self.model
        grid = curve_grid(case)
        curves = {k: np.array([r["curves"][k] for r in res]) for k in S.CURVE_NAMES}
        stats = S.statistics(curves, grid, case.loading.stationary_from)
        for k in ("flow_per_realization", "peak_per_realization"):
            stats[k] = stats[k].tolist()
        par = model.parameters()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            # LOC is NaN before the first slip (plastic) or at an all-zero strain (total)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_curves = {k: np.nanmean(v, axis=0) for k, v in curves.items()}
            std_curves = {k: np.nanstd(v, axis=0) for k, v in curves.items()}
        return dict(num_cells=model.num_cells, seeds=[[case.run.seed, r["index"]] for r in res],
                    total_slip_events=int(sum(r["events"] for r in res)),
                    realization_wall_time=[r["wall"] for r in res],
                    scalar=dict(disorder_strength=par["disorder_strength_s"], age=par["age_r"],
                                parameters=par, statistics=stats, fit=self.fit,
                                curves=dict(gamma_ext=grid, mean=mean_curves, std=std_curves)))


def fit_runs(case, comm=None) -> S.FitRuns:
    """The ensemble every evaluation of the case's fit runs (``run.realizations`` of
    ``run.seed`` to ``loading.gamma_max``)."""
    ld = case.loading
    return S.FitRuns(case.run.seed, case.run.realizations, ld.gamma_max, curve_grid(case),
                     ld.stationary_from, comm)


def fit_target(case) -> S.FitTarget:
    f = case.scalar.fit
    return S.FitTarget(f.flow_stress, f.flow_stress_err, f.peak_stress, f.peak_stress_err)


def _fit(case, model, outdir: Path | None, comm, progress, resume: bool) -> dict:
    """Fit the slip law (collective over ``comm``), or read the saved fit on resume;
    ``outdir`` None: not saved."""
    from femplast.io.output import write_json

    path = None if outdir is None else Path(outdir) / "checkpoint" / "fit.json"
    fit = None
    if comm.rank == 0 and resume and path is not None and path.is_file():
        fit = json.loads(path.read_text())
        progress(f"resumed: fit read from {path}", True)
    fit = comm.bcast(fit, root=0)
    if fit is not None:
        return fit
    f = case.scalar.fit
    if f.curves is not None:  # whole curves (femplast.scalar.fit)
        from femplast.config.case import resolve_path
        from femplast.scalar.fit import fit_curves, read_curves

        target = read_curves(resolve_path(case, f.curves))
        ld = case.loading
        runs = S.FitRuns(case.run.seed, case.run.realizations, ld.gamma_max, target.grid,
                         ld.stationary_from, comm)
        fit = fit_curves(model, runs, target, tuple(f.parameters), f.max_evaluations,
                         f.windows, log=lambda m: progress(m, True))
        if fit.get("warning"):
            progress(f"fit: {fit['warning']}", True)
    else:
        fit = S.fit_slip_law(model, fit_runs(case, comm), fit_target(case), f.max_evaluations,
                             log=lambda m: progress(m, True))
    if comm.rank == 0 and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, fit)
    return fit


__all__ = ["ScalarRealization", "ScalarRuns", "curve_grid", "localization_edges", "fit_runs",
           "fit_target", "STEP_NAMES"]
