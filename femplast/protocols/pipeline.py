"""The realization pipeline: one realization of any tensorial run kind, and the one loop over
realizations (ranks, checkpoints, resume) that also runs the scalar model (docs/architecture.md).

A realization: prepare (fresh slip systems, ``initial.state``, or a KMC liquid quenched at
T = 0, :mod:`femplast.tensorial.kmc`) -> the stages in order (:mod:`femplast.protocols.stages`;
a plain run is one strain-controlled load stage) -> probes at requested states (field
snapshots, patch tests of :mod:`femplast.analysis.patches` on the prepared state, at
``patches.gamma_ext`` and after the stages of ``patches.after``; the event log) -> records
(HDF5 per stage and realization, or in memory for sweeps).

Checkpoints (:mod:`femplast.protocols.checkpoint`): every rank writes
``OUTDIR/checkpoint/rank<r>-of-<size>.npz`` with the finished realizations' results and the
running one (state arrays, random stream, KMC trees, driver arrays and records, stage index,
saved branch states) every ``run.checkpoint_interval`` seconds, at the end of every
realization, and on SIGINT/SIGTERM (then the run exits with 130/143). Finished stage files are
written when the stage ends (atomic rename), so an interrupted run leaves complete files of the
finished stages and realizations plus the checkpoint; ``--resume`` continues from it and
produces bit-identical datasets. Resuming needs the same case and number of MPI ranks.

Field snapshots (with ``output.fields``, the default: runs with snapshots, with stages or with
KMC; :func:`femplast.protocols.stages.fields_enabled`). ``stages[i].snapshots``
are values of the stage's own ``gamma_ext`` (strain-controlled load stages; taken at the
increments ``round(g / dgamma)`` as single-stage runs). Then every stage writes
``OUTDIR/stages/<stage>/fields/rNNNN.xdmf`` (+ ``.h5``): its snapshots plus its final state
(stress-controlled, unload and hold stages: the final state only; no duplicate when the last
snapshot is the end), and KMC runs write the quenched state at ``gamma_ext = 0``
(``OUTDIR/quench/fields/rNNNN.xdmf``). Runs without ``stages:`` (KMC or checkpoints only) take
``output.snapshots`` of the one loading and write ``OUTDIR/fields/rNNNN.xdmf`` as single-stage
runs do (the same values), plus the quench. Fields are those of
:func:`femplast.io.output.snapshot_fields` (``sigma_*``, ``pressure``, ``eps_pl_*``,
``dtau_c_min``, ``tau_c_min``, ``tau_c_mean``, per-cell ``G``): total stress of the stage
frame, plastic strain accumulated over all stages.
Snapshots are kept in memory (and in the checkpoint) until the stage ends, then written as one
time series with the stage's realization file, so a resumed run writes the same bytes.

Event log (``--event-log``): each stage's realization file gets an ``events`` group with the
datasets of single-stage runs (cell, step, relaxation_step, theta, d_gamma, tau,
self_response); ``step`` is the avalanche's ``avalanches/step`` (strain control: the
increment; stress control and hold: the avalanche number). In hold stages each thermal slip
is logged as relaxation step 0 of the avalanche it triggers (whose size counts it), so the log
holds every event of the stage; KMC preparation events are not logged (there are typically
10^5 or more; the quench state and its observables are saved).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from femplast.analysis.calibration import avalanche_samples
from femplast.analysis.localization import of_windows, window_edges
from femplast.angles import wrap_angle_deg
from femplast.errors import FemplastInputError
from femplast.fe.boundary import drive_sign
from femplast.fe.elasticity import M_vector, resolved_shear_dsp
from femplast.io.output import (
    H5Writer,
    progress_bar,
    snapshot_fields,
    write_fields,
    write_group,
)
from femplast.protocols import checkpoint as ck
from femplast.protocols.records import relaxation_rounds
from femplast.protocols.stage_checks import check  # noqa: F401 (re-exported: the feature's check)
from femplast.protocols.stages import (
    HoldStage,
    Stage,
    StageRun,
    StrainStage,
    StressStage,
    bind,
    check_drive,
    fields_enabled,
    fold,
    init_protocol_state,
    resolved_stress,
    specimen,
    stages_from_case,
)
from femplast.redistribution.backends import from_dsp
from femplast.tensorial.aqs import AQSDriver
from femplast.tensorial.kmc import KMC, quench, sample_observables, write_quench
from femplast.version import __version__

CURVE_POINTS = 201  # points of the mean stress-strain curve of a stage in summary.json
log = logging.getLogger("femplast")

# ============================================================================ realization
class RealizationRun:
    """One realization, whatever the run kind: prepare (fresh, ``initial.state`` or a KMC
    quench) -> the stages in order (a plain run is one strain-controlled load stage) ->
    probes at the requested states (field snapshots, patch tests, event log) -> records.

    ``outdir=None`` keeps the records in memory (``result["tables"]``, sweeps); ``write``
    False computes without writing (the ranks of a distributed sample other than 0).
    """

    def __init__(self, case, model, index: int, outdir: Path | None, stages: list[Stage],
                 initial, progress, event_log: bool = False, write: bool = True):
        from femplast.streams import realization_rng

        self.case, self.model, self.index, self.outdir = case, model, index, outdir
        self.stages, self.progress = stages, progress
        self.write = write and outdir is not None
        # fields are gathered on every rank (collective), written by rank 0
        self.fields = fields_enabled(case) and outdir is not None
        self.event_log = event_log
        self.opts = dict(fields=self.fields, event_log=event_log)
        if getattr(case.variant, "p_std", 0.0) and model.params.alpha_p:
            # model B: this sample's mean pressure (set before any driver or probe reads it)
            from femplast.tensorial.variants import pressure_offset

            model.params.p_offset = pressure_offset(case, index)
        self.probe = None
        if case.patches.enabled:
            from femplast.analysis.patches import PatchProbe

            self.probe = PatchProbe(case, model, index)
        strain = [s.name for s in stages if s.kind == "load" and s.control == "strain"]
        self.probed_stage = (case.patches.stage or (strain[0] if strain else None))
        self.probed_initial = False
        self.needed = {s.start for s in stages if s.start}
        rng = realization_rng(case.run.seed, index)
        sigma0, systems = (None, None) if initial is None else (initial[0], initial[1:])
        st = model.new_state(rng, sigma0, systems)
        init_protocol_state(model, st, case.loading.alpha_ext)
        self.state = st
        self.saved: dict = {}
        self.kmc_on = case.kmc.enabled or case.model == "quench"
        self.phase = "kmc" if self.kmc_on else "stages"
        self.stage_idx = 0
        self.run_obj: StageRun | None = None
        self.kmc: KMC | None = None
        self.kmc_drv: AQSDriver | None = None
        self.result: dict = dict(index=index, events=0, wall=0.0, stages={}, kmc=None,
                                 tables={}, p_offset=float(model.params.p_offset))
        self.t0 = time.perf_counter()
        if self.kmc_on:
            self._new_kmc()

    @property
    def name(self) -> str:
        return f"r{self.index:04d}"

    def _new_kmc(self):
        k = self.case.kmc
        self.kmc_drv = AQSDriver(self.model, self.state, 0.0, 1.0, 1)
        self.kmc = KMC(self.kmc_drv, k.temperature, k.Va,
                       window=int(round(k.window * self.model.num_cells)),
                       tolerance=k.tolerance)

    # ------------------------------------------------------------------ running
    def run(self, tick) -> dict:
        bind(self.model, self.state)
        if self.probe is not None:
            pc = self.case.patches
            bar = progress_bar(self.progress, int(pc.initial) + len(pc.gamma_ext)
                               + len(pc.after), f"{self.name} patch-tested states", "state")
            self.probe.on_probe = lambda label, tests: bar.set(
                len(self.probe.records), f"{label}: {tests:,} tests")
        if self.phase == "kmc":
            self._run_kmc(tick)
        if self.probe is not None and not self.probed_initial:
            self.model.refresh(self.state)
            self.probe.initial(self.state, math.radians(self.case.loading.alpha_ext))
            self.probed_initial = True
        while self.phase == "stages" and self.stage_idx < len(self.stages):
            self._run_stage(tick)
        self.phase = "done"
        if self.probe is not None:
            bar.close()
            if self.write:
                self.probe.write(self.outdir)
            self.result.update(patches=self.probe.sums, patches_wall=self.probe.wall,
                               patch_positions=self.probe.positions)
        self.result["wall"] += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        return self.result

    def _windows(self, sg: Stage):
        """Strains of the plastic-strain snapshots of ``localization``: the load of runs
        without stages, on structured meshes (none otherwise)."""
        lo = self.case.localization
        if not (sg.implicit and lo.enabled and self.case.mesh.kind in ("quad", "tri", "geometry")
                and lo.window <= sg.gamma):
            return ()
        return window_edges(sg.gamma, lo.stride or lo.window)

    def _stage_opts(self, sg: Stage) -> dict:
        probe = self.probe if sg.name == self.probed_stage else None
        return dict(self.opts, probe=probe)

    def _run_kmc(self, tick):
        k, kmc = self.case.kmc, self.kmc
        bar = progress_bar(self.progress, k.max_events, f"{self.name} KMC T={k.temperature:g}",
                           "ev")

        def on_budget(km):
            bar.set(km.events, "stationary" if km.stationary_at is not None else None)
            tick()

        why = kmc.run(k.max_events, until_stationary=k.stop == "stationary",
                      on_budget=on_budget, budget=200)
        bar.set(kmc.events)
        bar.close()
        liquid = sample_observables(self.model, self.state)
        obs = quench(self.model, self.state, self.kmc_drv)
        info = dict(temperature=k.temperature, Va=k.Va, stopped_by=why,
                    stationary_at_event=kmc.stationary_at, window_events=kmc.window,
                    tolerance=k.tolerance, **{f"kmc_{a}": b for a, b in kmc.stats.items()},
                    **{f"liquid_{a}": b for a, b in liquid.items()},
                    **{f"quenched_{a}": b for a, b in obs.items()})
        self.result["kmc"] = dict(info)
        self.result["events"] += kmc.drv.num_events
        if k.save and self.write:
            (self.outdir / "quench").mkdir(parents=True, exist_ok=True)
            info.update(windows=kmc.windows, samples=kmc.samples, realization=self.index,
                        seed=self.case.run.seed)
            write_quench(self.outdir / "quench" / f"{self.name}.h5", self.model, self.state,
                         info)
        if self.fields:  # the quenched state (gamma_ext 0 of the first stage)
            alpha = math.radians(float(self.state.alpha_last))
            write_fields(self.outdir / "quench" / "fields" / f"{self.name}.xdmf", self.model.box,
                         [(0.0, snapshot_fields(self.model, self.state, 0.0, alpha))])
        msg = (f"realization {self.index + 1}: KMC {kmc.events} events ("
               + (f"stationary at {kmc.stationary_at}" if kmc.stationary_at is not None
                  else "not stationary") + f"), quenched: mean |stress| "
               f"{obs['mean_abs_stress']:.4f}, mean dtau_c,min {obs['mean_dtau_c_min']:.4f}")
        self.progress(msg, True)
        self.kmc = self.kmc_drv = None
        self.phase = "stages"
        if self.case.model == "quench":
            self.stages = []

    def _start_stage(self) -> StageRun:
        sg = self.stages[self.stage_idx]
        if sg.start is not None:
            self.state = self.saved[sg.start].copy()
        st = self.state
        bind(self.model, st)
        prev = float(st.alpha_last)
        if sg.kind == "load":
            alpha = sg.alpha_deg
            if sg.implicit and self.case.mesh.kind == "geometry" \
                    and "first_slip" not in self.result:
                from femplast.analysis.specimen import first_slip_record
                from femplast.fe.geometry import spec_from_case

                self.result["first_slip"] = first_slip_record(
                    self.model, st, spec_from_case(self.case), math.radians(alpha))
            if sg.control == "strain":
                return StrainStage(self.model, st, sg, alpha, windows=self._windows(sg),
                                   **self._stage_opts(sg))
            return StressStage(self.model, st, sg, alpha, sg.stress, **self._stage_opts(sg))
        if sg.kind == "unload":
            self.model.refresh(st)
            mean = st.sig @ self.model.weights
            s_prev = (resolved_stress(self.model, from_dsp(mean), prev)
                      if specimen(self.model) else resolved_shear_dsp(mean, prev))
            alpha = wrap_angle_deg(prev + 90.0) if s_prev > 0 else prev
            return StressStage(self.model, st, sg, alpha, 0.0, **self._stage_opts(sg))
        return HoldStage(self.model, st, sg, prev, self.case.kmc.Va, **self._stage_opts(sg))

    def _run_stage(self, tick):
        if self.run_obj is None:
            self.run_obj = self._start_stage()
        ro = self.run_obj
        strain = isinstance(ro, StrainStage)
        bar = progress_bar(self.progress, ro.k_end if strain else None,
                           f"{self.name} {ro.stage.name}", "inc" if strain else "ev")

        def show():
            d = ro.drv
            bar.set(d.k if strain else d.num_events,
                    f"gamma_ext {d.gamma_ext:.4g}, {d.num_events:,} events")

        def ticking():  # safe points: the bar shows the stage's progress
            show()
            tick()

        ro.run(ticking)
        show()
        bar.close()
        sg = ro.stage
        if self.fields and not sg.implicit and (not ro.snaps
                                                or ro.snaps[-1][0] != ro.gamma_final):
            ro.snapshot()  # the final state of the stage
        tabs = ro.tables()
        mean = ro.mean_dsp()
        res = dict(kind=sg.kind, control=sg.control, alpha_ext=ro.alpha_deg,
                   gamma_final=ro.gamma_final, stress_final=resolved_shear_dsp(mean, ro.alpha_deg),
                   events=ro.drv.num_events, start=sg.start or "")
        if isinstance(ro, StressStage):
            res.update(target=ro.target, reached=int(ro.reached), stress_error=ro.error)
        tg = tabs["steps"]["gamma_ext"]
        tr = tabs["steps"]["stress"]
        a2 = math.radians(2 * ro.alpha_deg)
        res["curve_gamma"] = tg
        res["curve_stress"] = math.sin(a2) * 0.5 * (tr[:, 1] - tr[:, 0]) + math.cos(a2) * tr[:, 2]
        self._specimen_response(ro, tabs, res)
        if sg.implicit:
            g0 = self.case.loading.stationary_from
            av = tabs["avalanches"]
            # a specimen with one driven boundary: its nominal stress, not sigma_xy
            before, after = res.pop("nominal_pair", (av["stress_before"][:, 2],
                                                av["stress_after"][:, 2]))
            a = avalanche_samples(before, after, av["gamma_ext"], g0)
            nominal = "nominal_stress" in tabs["steps"]
            res.update(sxy=(res["curve_stress"] if nominal else tr[:, 2])[tg > g0],
                       drops=a["drops"], increments=a["increments"], nominal=nominal,
                       events_stat=int(av["size"][av["gamma_ext"] > g0].sum()))
            if ro.loc_k:  # only the derived observables are kept (not the fields)
                w = dict(edges=np.array(ro.loc_k) * sg.dgamma, eps_pl=np.array(ro.observed),
                         n=self.case.mesh.n, kind=self.case.mesh.kind, gamma=tg,
                         stress=res["curve_stress"])
                w.update(self._window_cells())
                self.result["localization"] = of_windows(w, self.case.localization)
        res.pop("nominal_pair", None)  # only the summary's samples above need it
        if self.probe is not None:
            self.model.refresh(self.state)
            self.probe.after_stage(self.state, sg.name, ro.gamma_final, ro.alpha, sg.dgamma)
        if self.outdir is not None:
            self._write_stage(ro, tabs, mean)
        else:
            self.result["tables"][sg.name] = tabs
        self.result["stages"][sg.name] = res
        self.result["events"] += ro.drv.num_events
        fold(self.model, self.state, ro.gamma_final, ro.alpha_deg)
        if sg.name in self.needed:
            self.saved[sg.name] = self.state.copy()
        self.progress(f"realization {self.index + 1}/{self.case.run.realizations}: stage "
                      f"{sg.name} done ({res['events']} events, gamma_ext "
                      f"{ro.gamma_final:.5g}, stress {res['stress_final']:.5g})", True)
        self.run_obj = None
        self.stage_idx += 1

    def _window_cells(self) -> dict:
        """A specimen's cells for the localization windows (area weights, band line scan);
        nothing on the structured meshes of the box."""
        if self.case.mesh.kind != "geometry":
            return {}
        from femplast.analysis.specimen import window_cells
        from femplast.fe.geometry import spec_from_case

        return window_cells(self.model, spec_from_case(self.case))

    def _specimen_response(self, ro: StageRun, tabs: dict, res: dict) -> None:
        """A specimen driven by affine grips (femplast.fe.boundary): its force-displacement
        curve, ``force = A <sigma> : Gd`` per step, and the stress conjugate to gamma_ext as
        the stage's curve (tension: <sigma_yy>; shear between walls: <sigma_xy>)."""
        box = self.model.box
        if not getattr(box, "bounded", False):
            return
        drive = self.model.el.drive_stress(tabs["steps"]["stress"])
        if drive is None:
            return
        tabs["steps"]["drive_stress"] = drive
        tabs["steps"]["force"] = box.area * drive
        # the grip's displacement: the drive of the earlier stages (folded) plus this one's
        sign = drive_sign(math.radians(ro.alpha_deg))
        tabs["steps"]["displacement"] = (float(self.state.drive) + sign
                                         * tabs["steps"]["gamma_ext"]) * box.height
        factor = self.model.el.nominal
        if factor is not None:  # the grip's force per unit grip length (fe.boundary)
            drive = factor * drive
            tabs["steps"]["nominal_stress"] = drive
            av = tabs["avalanches"]  # written with the table: postprocess drops agree
            el = self.model.el  # the one external stress of a specimen (fe.boundary)
            av["nominal_stress_before"] = el.controlled_stress(av["stress_before"])
            av["nominal_stress_after"] = el.controlled_stress(av["stress_after"])
            res["nominal_pair"] = (av["nominal_stress_before"], av["nominal_stress_after"])
        res["curve_stress"] = drive
        res["stress_final"] = float(drive[-1])

    def _write_stage(self, ro: StageRun, tabs: dict, mean_dsp) -> None:
        sg, st, m = ro.stage, self.state, self.model
        if sg.implicit:
            path = self.outdir / "realizations" / f"{self.name}.h5"
        else:
            path = self.outdir / "stages" / sg.name / "realizations" / f"{self.name}.h5"
        if self.write:
            path.parent.mkdir(parents=True, exist_ok=True)
        if ro.snaps:
            write_fields(path.parent.parent / "fields" / f"{self.name}.xdmf", m.box, ro.snaps)
        stress = m.total_stress(st, ro.gamma_final, ro.alpha)
        E = st.E_macro + ro.gamma_final * M_vector(ro.alpha)
        attrs = dict(gamma_ext=ro.gamma_final, alpha_ext=ro.alpha_deg, E_macro=E,
                     rng_state=json.dumps(st.rng.bit_generator.state), stage=sg.name,
                     kind=sg.kind, control=sg.control, start=sg.start or "")
        if isinstance(ro, StressStage):
            attrs.update(target_stress=ro.target, reached=ro.reached, stress_error=ro.error)
        if not self.write:
            return
        with H5Writer(path) as f:
            f.attrs.update(dict(realization=self.index, seed=self.case.run.seed,
                                femplast_version=__version__, backend=m.backend,
                                num_events=ro.drv.num_events, stage=sg.name))
            write_group(f, "steps", tabs["steps"],
                        dict(doc="gamma_ext of the stage; mean stress [xx,yy,xy] and plastic "
                                 "strain after the avalanche; stress control: one row per "
                                 "avalanche (stress_before at its onset)"))
            write_group(f, "avalanches", tabs["avalanches"])
            write_group(f, "state", dict(stress=stress, sigma0=from_dsp(st.sigma0 - st.sig_fold),
                                         eps_pl=st.eps_pl, theta=st.theta, tau_c=st.tauc),
                        attrs)
            if self.event_log:
                ei, ef = ro.drv.event_table()
                steps, box = ro.event_steps(ei), from_dsp(ef[:, 5:8].T)
                write_group(f, "events", dict(cell=ei[:, 0], step=steps,
                                              relaxation_step=ei[:, 2], theta=ef[:, 0],
                                              d_gamma=ef[:, 1], tau=ef[:, 2],
                                              self_response=ef[:, 3], tau_c=ef[:, 4],
                                              box_stress=box),
                            dict(doc="every slip event of the stage; step: the avalanche's "
                                     "avalanches/step (strain control: the increment; stress "
                                     "control and hold: the avalanche number); tau_c: the "
                                     "slipping system's threshold (pressure-shifted); "
                                     "box_stress [xx,yy,xy]: box average at the start of "
                                     "its relaxation round"))
                write_group(f, "rounds", relaxation_rounds(steps, ei[:, 2], box),
                            dict(doc="one row per relaxation round of the event log: the "
                                     "box-average stress [xx,yy,xy] at its start"))

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> dict:
        d = dict(index=self.index, phase=self.phase, stage_idx=self.stage_idx,
                 state=ck.state_arrays(self.state),
                 saved={k: ck.state_arrays(v) for k, v in self.saved.items()},
                 result=self.result, wall=self.result["wall"] + time.perf_counter() - self.t0,
                 stage=None if self.run_obj is None else self.run_obj.checkpoint(),
                 kmc=None, probed_initial=int(self.probed_initial),
                 probe=None if self.probe is None else self.probe.checkpoint())
        if self.phase == "kmc":
            d["kmc"] = dict(kmc=self.kmc.checkpoint(), drv=ck.driver_arrays(self.kmc_drv))
        return d

    def restore(self, d: dict) -> None:
        ck.restore_state(self.state, d["state"])
        for k, v in d["saved"].items():
            s = self.state.copy()
            ck.restore_state(s, v)
            self.saved[k] = s
        self.phase, self.stage_idx = d["phase"], int(d["stage_idx"])
        self.probed_initial = bool(int(d.get("probed_initial", 0)))
        if self.probe is not None and d.get("probe") is not None:
            self.probe.restore(d["probe"])
        self.result = d["result"]
        self.result["wall"] = float(d["wall"])
        self.t0 = time.perf_counter()
        bind(self.model, self.state)
        if self.phase == "kmc":
            self._new_kmc()
            self.kmc.restore(d["kmc"]["kmc"])
            ck.restore_driver(self.kmc_drv, d["kmc"]["drv"])
        else:
            self.kmc = self.kmc_drv = None
            if self.case.model == "quench":
                self.stages = []
        if d["stage"] is not None:
            sgd = d["stage"]
            sg = self.stages[self.stage_idx]
            alpha = float(sgd["alpha_deg"])
            kw = self._stage_opts(sg)
            if sg.kind == "hold":
                ro = HoldStage(self.model, self.state, sg, alpha, self.case.kmc.Va, **kw)
            elif sg.control == "strain":
                ro = StrainStage(self.model, self.state, sg, alpha, windows=self._windows(sg),
                                 **kw)
            else:
                ro = StressStage(self.model, self.state, sg, alpha,
                                 0.0 if sg.kind == "unload" else sg.stress, **kw)
            ro.restore(sgd)
            self.run_obj = ro


# ============================================================================ the run
def checkpoint_path(outdir: Path, comm) -> Path:
    return Path(outdir) / "checkpoint" / f"rank{comm.rank:03d}-of-{comm.size:03d}.npz"


class Models:
    """The model of each realization: one for all, or one per realization when the variant
    draws a moduli field per realization (femplast.tensorial.variants); on ``comm``
    (``run.parallel: sample``: the mesh distributed over the ranks) or on this rank alone."""

    def __init__(self, case, comm, first_index: int):
        from femplast.config.case import resolve_path
        from femplast.protocols.prepare import build_model, load_initial_state
        from femplast.tensorial.variants import per_realization_model

        self.case, self.comm = case, comm
        self.per_realization = per_realization_model(case)
        self._build = build_model
        self.first_index = first_index
        self.first = build_model(case, comm, first_index)
        self.initial = None
        if case.initial.state:
            self.initial = load_initial_state(resolve_path(case, case.initial.state),
                                              self.first)

    def get(self, index: int):
        if not self.per_realization or index == self.first_index:
            return self.first
        return self._build(self.case, self.comm, index)


class TensorialRuns:
    """The tensorial run kind of :func:`run_realizations`: realizations are
    :class:`RealizationRun` objects; ``sample`` (``run.parallel: sample``): each realization
    on the mesh distributed over all ranks (every rank runs the same replicated dynamics,
    rank 0 writes). ``event_log``: every stage's realization file gets an ``events`` group."""

    def __init__(self, case, outdir: Path, comm, progress, event_log: bool = False):
        from mpi4py import MPI

        self.case, self.outdir, self.comm = case, outdir, comm
        self.progress, self.event_log = progress, event_log
        self.sample = case.run.parallel == "sample"
        self.stages = stages_from_case(case)
        self.models = Models(case, comm if self.sample else MPI.COMM_SELF,
                             0 if self.sample else comm.rank)
        check_drive(self.models.first, self.stages)

    def new_run(self, index: int) -> RealizationRun:
        return RealizationRun(self.case, self.models.get(index), index, self.outdir,
                              stages_from_case(self.case), self.models.initial, self.progress,
                              self.event_log, write=not self.sample or self.comm.rank == 0)

    def summarize(self, res: list[dict]) -> dict:
        return summarize(self.case, self.models.first, self.stages, res)


def run_realizations(case, outdir: Path, comm, progress, resume: bool = False,
                     event_log: bool = False, runs=None) -> dict:
    """The one realization loop of every run kind. ``runs`` is the kind (default
    :class:`TensorialRuns`; the scalar model's is ``femplast.scalar.realization.ScalarRuns``):
    an object with ``sample`` (True: every rank runs every realization, on a distributed
    mesh; False: realizations spread over the ranks), ``new_run(index)`` returning a
    realization (``index``, ``run(tick) -> result dict`` with ``index``, ``events``,
    ``wall``; ``checkpoint() -> dict``, ``restore(d)``) and ``summarize(results)``. Results
    are gathered to rank 0, sorted by index; returns the kind's summary on rank 0.

    Checkpoints (every ``run.checkpoint_interval`` seconds, after every realization, on
    SIGINT/SIGTERM, which then raise :class:`femplast.protocols.checkpoint.Interrupted`)
    make every run resumable (``--resume``).
    """
    if runs is None:
        runs = TensorialRuns(case, outdir, comm, progress, event_log)
    sample = runs.sample
    mine = (list(range(case.run.realizations)) if sample
            else list(range(comm.rank, case.run.realizations, comm.size)))
    cpath = checkpoint_path(outdir, comm)
    done: list[dict] = []
    current = None
    fp = ck.fingerprint(case.to_dict())
    if resume and cpath.is_file():
        data = ck.load(cpath, fp)
        try:
            done = list(data["done"])
            if data["current"] is not None:
                current = runs.new_run(int(data["current"]["index"]))
                current.restore(data["current"])
        except (KeyError, ValueError, IndexError, TypeError) as exc:  # foreign or damaged
            raise FemplastInputError("checkpoint", str(cpath), "a checkpoint of this run "
                                     f"(it does not fit: {exc!r:.80}); delete it to restart "
                                     "the interrupted realizations") from None
        progress(f"resumed from {cpath}: {len(done)} realization(s) done"
                 + (f", realization {current.index + 1} in progress" if current else ""), True)
    finished = {r["index"] for r in done}
    holder = {"run": current}

    def write():
        cur = holder["run"]
        ck.save(cpath, dict(nranks=comm.size, rank=comm.rank, fingerprint=fp, done=done,
                            current=None if cur is None else cur.checkpoint()))
        return cpath

    todo = [i for i in mine if i not in finished]
    desc = "run" if sample or comm.size == 1 else f"run, rank {comm.rank} of {comm.size}"
    bar = progress_bar(progress, len(todo), desc, "realizations") if len(todo) > 1 else None
    with ck.Interrupter(write, case.run.checkpoint_interval) as intr:
        for i in todo:
            if holder["run"] is None or holder["run"].index != i:
                holder["run"] = runs.new_run(i)
            res = holder["run"].run(intr.tick)
            done.append(res)
            holder["run"] = None
            progress(f"realization {i + 1}/{case.run.realizations} done: {res['events']} "
                     f"events in {res['wall']:.2f} s", True)
            if bar is not None:
                bar.update()
            intr.tick(force=True)
        write()
    if bar is not None:
        bar.close()
    allres = [done] if sample else comm.gather(done, root=0)
    if comm.rank != 0:
        return {}
    from femplast.analysis.localization import from_results

    res = sorted((r for rs in allres for r in rs), key=lambda r: r["index"])
    out = runs.summarize(res)
    loc = from_results(_specimen_windows(case, runs, res), case.localization)
    if loc is not None:
        out["localization"] = loc
    return out


def _specimen_windows(case, runs, res: list[dict]) -> list[dict]:
    """The scalar model's raw windows on a specimen get the specimen's cells and band
    detectors (area-weighted LOC, line-scan bands like the tensorial model's; its model is
    on this rank alone); other results as they are."""
    if case.mesh.kind != "geometry" or not any("windows" in r for r in res):
        return res
    from femplast.analysis.specimen import scalar_windows
    from femplast.fe.geometry import spec_from_case

    spec = spec_from_case(case)
    return [dict(r, windows=scalar_windows(runs.model, spec, r["windows"]))
            if "windows" in r else r for r in res]


def summarize(case, model, stages: list[Stage], res: list[dict]) -> dict:
    out = dict(backend=model.backend, slip_systems_per_cell=model.params.N,
               num_cells=model.num_cells, seeds=[[case.run.seed, r["index"]] for r in res],
               total_slip_events=int(sum(r["events"] for r in res)),
               realization_wall_time=[r["wall"] for r in res])
    if getattr(case.variant, "p_std", 0.0):  # model B: each sample's <p>
        out["pressure_offset"] = [r.get("p_offset") for r in res]
    if res and res[0]["kmc"] is not None:
        keys = [k for k, v in res[0]["kmc"].items() if isinstance(v, (int, float))
                and not isinstance(v, bool)]
        out["kmc"] = dict(temperature=case.kmc.temperature, Va=case.kmc.Va,
                          per_realization=[r["kmc"] for r in res],
                          mean={k: float(np.mean([r["kmc"][k] for r in res
                                                  if r["kmc"][k] is not None])) for k in keys})
    st_out = {}
    for sg in stages:
        rows = [r["stages"][sg.name] for r in res if sg.name in r["stages"]]
        if not rows:
            continue
        d = dict(kind=sg.kind, control=sg.control, start=sg.start,
                 alpha_ext=[x["alpha_ext"] for x in rows],
                 gamma_final_mean=float(np.mean([x["gamma_final"] for x in rows])),
                 stress_final_mean=float(np.mean([x["stress_final"] for x in rows])),
                 stress_final_std=float(np.std([x["stress_final"] for x in rows])),
                 events_mean=float(np.mean([x["events"] for x in rows])))
        if sg.control == "stress":
            d.update(target=sg.stress, reached=int(sum(x["reached"] for x in rows)),
                     max_abs_stress_error=float(max(abs(x["stress_error"]) for x in rows)))
        if sg.control == "strain":
            n = min(len(x["curve_gamma"]) for x in rows)
            idx = np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int))
            v = np.array([np.asarray(x["curve_stress"])[:n] for x in rows])
            d["curve"] = dict(gamma_ext=np.asarray(rows[0]["curve_gamma"])[idx],
                              mean=v.mean(axis=0)[idx], std=v.std(axis=0)[idx])
        st_out[sg.name] = d
        if sg.implicit:
            sxy = np.concatenate([x["sxy"] for x in rows])
            drops = np.concatenate([x["drops"] for x in rows])
            inc = np.concatenate([x["increments"] for x in rows])
            span = case.loading.gamma_max - case.loading.stationary_from
            # a specimen pulled, pushed or sheared by one grip: its nominal stress (grip force
            # per unit grip length along the grip's displacement) instead of sigma_xy
            tag = "nominal_stress" if rows[0].get("nominal") else "sigma_xy"
            inc_tag = "increment" if rows[0].get("nominal") else "increment_xy"
            out["stationary"] = {
                "gamma_from": case.loading.stationary_from,
                f"{tag}_mean": float(sxy.mean()) if len(sxy) else 0.0,
                f"{tag}_std": float(sxy.std()) if len(sxy) else 0.0,
                "stress_drop_mean": float(drops.mean()) if len(drops) else 0.0,
                "negative_drops": int((drops < 0).sum()),
                # the elastic rise between avalanches (femplast.analysis.calibration)
                f"{inc_tag}_mean": float(inc.mean()) if len(inc) else math.nan,
                f"{inc_tag}_std": float(inc.std()) if len(inc) else math.nan,
                "avalanches": int(len(drops)),
                "slip_events_per_unit_strain": float(np.mean([x["events_stat"] for x in rows])
                                                     / span)}
            if rows[0].get("nominal"):
                out["stationary"]["stress_measure"] = (
                    "nominal stress: force on the driven boundary along its displacement per "
                    "unit length of it (stress drops and increments too)")
    first = [r.get("first_slip") for r in res]
    if first and all(f is not None for f in first):  # a notched strip (analysis.specimen)
        from femplast.analysis.specimen import first_slip_summary

        out["specimen"] = dict(first_slip=first_slip_summary(
            first[0]["law"], first[0]["area_share"], first[0]["radius"],
            [f["distance"] for f in first], case.slip.reference_area is not None))
    if st_out and not (len(stages) == 1 and stages[0].implicit):
        out["stages"] = st_out
    if case.patches.enabled:
        from femplast.analysis.patches import summary_section

        out["patches"] = summary_section(case, [r["patches"] for r in res],
                                         sum(r["patches_wall"] for r in res),
                                         res[0].get("patch_positions") if res else None)
    return out


def check_resume(case, outdir: Path, marker: str = "checkpoint") -> None:
    """A directory can be resumed: no summary.json, the same case (its ``marker`` folder,
    checkpoint/, may be missing when the run was stopped before its first checkpoint)."""
    from femplast.config.case import yaml

    outdir = Path(outdir)
    if (outdir / "summary.json").exists():
        raise FemplastInputError("--resume", str(outdir), "an output directory of an "
                                 "unfinished run (this one has summary.json: it is complete)")
    # no checkpoint yet (interrupted early, or before the first one): the run starts again
    saved = yaml.safe_load((outdir / "case.yaml").read_text()) if (
        outdir / "case.yaml").is_file() else None
    if saved != yaml.safe_load(yaml.safe_dump(case.to_dict(), sort_keys=False)):
        raise FemplastInputError("--resume", str(outdir), "the same case (and --set "
                                 "overrides) as the interrupted run (OUTDIR/case.yaml)")


__all__ = ["RealizationRun", "TensorialRuns", "check_resume", "run_realizations"]
