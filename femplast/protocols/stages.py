"""Stages of a loading protocol: load (strain or stress control), unload, hold; branches
(Bauschinger tests). The realization pipeline (femplast.protocols.pipeline) runs them in order.


Stages and frames. A stage drives the state along one orientation ``alpha_ext`` from its own
``gamma_ext = 0``. At the end of a stage the external part of the stress is folded into the
internal stress, ``sig += gamma R(alpha)`` (and into ``sigma0``, so that the pressure refresh
and the direct FE backend, which rebuild the stress from ``sigma0`` and the plastic strain, keep
it), and the macroscopic strain is accumulated separately: ``E += gamma M(alpha)``
(``state.E_macro``, ``[xx, yy, xy]`` tensorial). The next stage starts at ``gamma_ext = 0`` with
``R(alpha_new)``. Outputs give ``gamma_ext`` of the stage, the accumulated ``E_macro`` and the
true pre-stress (``sigma0`` minus the folded load).

Kinds. ``load`` drives along ``alpha_ext`` to a strain (strain control: integer increments
``k d(gamma_ext)`` as single-stage runs) or to a resolved external stress (stress control,
below). ``unload`` is stress control to a zero external stress resolved on the previous
orientation ``alpha_p``, along ``alpha_p + 90 deg`` (``M(alpha + pi/2) = -M(alpha)``) when that
stress is positive, along ``alpha_p`` otherwise. ``hold`` keeps the strain; with a temperature
it runs thermally activated events (:mod:`femplast.tensorial.kmc`) at that strain. A stage
starts from the previous stage's final state or, with ``start: NAME``, from a copy of that
stage's final state (random generator included: branches from one saved state see the same
random stream).

Stress control. Between avalanches the box-averaged stress resolved on ``alpha``,
``S(gamma) = A + B gamma``, is linear in ``gamma`` (``A = <tau(sig)>``, ``B = <tau(R)>``). From a
stable state at ``gamma`` the target strain is ``gamma* = (S* - A) / B`` (continuous, not a
multiple of an increment) and the next instability ``gamma_i`` is the smallest ``a_n / r_n``
over all systems (``dtau_c,n(gamma) = a_n - r_n gamma``), settled upward by a few ulps until the
exact activity test of the event loop finds an active system. If ``gamma_i <= gamma*`` the
avalanche runs at ``gamma_i`` (the load that brings the sample to its next instability) and
the procedure repeats; otherwise the stage ends at ``gamma*``, where ``S`` equals the target to
round-off (|S - S*| ~ 1e-15 x |S*|, asserted < 1e-10 in the tests). If an avalanche leaves
``S > S*``, ``gamma*`` lies behind: the strain moves back elastically when the sample is stable
there, otherwise an avalanche runs at ``gamma*``. ``gamma`` of the stage caps the strain
(default 1): a target above the flow stress ends at the cap (reported as not reached).
Stress-controlled stages write one ``steps`` row per avalanche (``gamma_ext``, ``stress_before``
at its onset, ``stress`` after it) between the initial and the final row.

Specimens (``mesh.kind: geometry``, :mod:`femplast.fe.boundary`). The same stages, with the
load response of the driven boundaries: orientation 0 moves them forward
(``u = gamma_ext g``), 90 backward (``-gamma_ext g``, :func:`femplast.fe.boundary.drive_sign`:
an unload turns the drive round as on the box). The controlled stress is the drive stress
``S = +-<sigma> : Gd = +-F_drive / A`` (:func:`resolved_stress`), still linear in gamma_ext
between avalanches, so stress control is exact force control of the grips; it needs grips
moved as one affine field (:func:`check_drive`). Folding a stage adds its drive to
``state.drive`` (the grip displacement of the next stage's outputs starts there). A KMC
preparation runs with the driven boundaries held at gamma_ext = 0, so the quenched specimen
may carry a residual grip force (its first force-curve value).
"""

from __future__ import annotations

import math

import numpy as np

from femplast.analysis.localization import resolved_plastic
from femplast.errors import FemplastInputError
from femplast.fe.elasticity import M_vector, resolved_shear
from femplast.io.output import snapshot_fields
from femplast.protocols import checkpoint as ck
from femplast.protocols.records import steps_table
from femplast.redistribution.backends import from_dsp
from femplast.tensorial.aqs import RC_END, RC_STOP, AQSDriver, any_active_at
from femplast.tensorial.kmc import KMC

BUDGET = 5000  # events between safe points (interruption, checkpoints)
SLICE = 1000  # strain increments between safe points


def bind(model, state) -> None:
    """The direct FE backend rebuilds stresses from the state's sigma0: point it there."""
    if model.redist.kind == "direct":
        model.redist.sigma0 = state.sigma0


def init_protocol_state(model, state, alpha_deg: float) -> None:
    nc = model.num_cells
    state.E_macro = np.zeros(3)
    state.sig_fold = np.zeros((3, nc))
    state.alpha_last = np.array(float(alpha_deg))
    state.drive = np.array(0.0)  # a specimen's accumulated boundary drive (folded gamma_ext)


def specimen(model) -> bool:
    """Whether the model is a specimen driven by its boundaries (femplast.fe.boundary)."""
    return bool(getattr(model.box, "bounded", False))


def resolved_stress(model, stress_xyz, alpha_deg: float):
    """The external stress a stage controls, from mean stresses ``[xx, yy, xy]`` (..., 3).

    The periodic box: the shear stress resolved on the loading orientation (eq. 3-4,
    :func:`femplast.fe.elasticity.resolved_shear`). A specimen: the drive stress
    ``<sigma> : Gd = F_drive / A`` (the force conjugate to gamma_ext per unit area,
    femplast.fe.boundary), scaled to the nominal stress when one boundary is driven
    (:meth:`~femplast.fe.boundary.BoundedElasticity.controlled_stress`, the quantity the
    records report), times the drive direction (+1 forward, -1 reversed: orientation 90),
    so that it rises with the stage's gamma_ext either way: stress control of a specimen is
    control of the force on its driven boundaries.

    Raises:
        FemplastInputError: a specimen whose driven boundaries do not move as an affine field
            (the drive force is then not a function of the mean stress).
    """
    if not specimen(model):
        return resolved_shear(math.radians(alpha_deg), stress_xyz)
    from femplast.fe.boundary import drive_sign

    el = model.el
    d = el.controlled_stress(stress_xyz)
    if d is None:
        raise FemplastInputError("geometry.boundaries", {c.name: c.kind for c in el.conditions},
                                 "boundaries moved as an affine field (grips, walls) for "
                                 "stress control, unloading and sweeps on a specimen (the "
                                 "drive force is then A <sigma> : Gd)")
    return drive_sign(math.radians(alpha_deg)) * d


def fold(model, state, gamma: float, alpha_deg: float) -> None:
    """Fold the external load of a finished stage into the internal stress (module doc)."""
    model.refresh(state)
    R = model.load_response(math.radians(alpha_deg))
    state.sig += gamma * R
    state.sigma0 += gamma * R
    state.sig_fold += gamma * R
    state.E_macro += gamma * M_vector(math.radians(alpha_deg))
    state.alpha_last[...] = alpha_deg
    if specimen(model):
        from femplast.fe.boundary import drive_sign

        state.drive += drive_sign(math.radians(alpha_deg)) * gamma


def check_drive(model, stages: list) -> None:
    """Stress control and unloading on a specimen need its drive stress
    (:func:`resolved_stress`): refuse them, before any realization runs, when the driven
    boundaries do not move as an affine field (FemplastInputError naming the stage)."""
    if not specimen(model) or model.el.drive_gradient is not None:
        return
    for i, sg in enumerate(stages):
        if sg.control == "stress":
            key, value = ((f"stages[{i}].stress", sg.stress) if sg.kind == "load"
                          else (f"stages[{i}].kind", sg.kind))
            raise FemplastInputError(key, value, "strain control on this specimen: its "
                                     "driven boundaries do not move as one affine field, so "
                                     "the force on them is not A <sigma> : Gd (use grips or "
                                     "walls)")


# ============================================================================ stages
class Stage:
    """A resolved stage: name, kind, orientation (deg), control and targets."""

    def __init__(self, name, kind, alpha_deg, control, gamma=None, stress=None, dgamma=1e-4,
                 start=None, temperature=0.0, events=0, implicit=False, snapshots=()):
        self.name, self.kind, self.alpha_deg, self.control = name, kind, alpha_deg, control
        self.gamma, self.stress, self.dgamma, self.start = gamma, stress, dgamma, start
        self.temperature, self.events, self.implicit = temperature, events, implicit
        self.snapshots = [float(g) for g in snapshots]


def fields_enabled(case) -> bool:
    """Whether a protocol run writes cell fields (module doc: field snapshots): with
    ``output.fields``, runs with snapshots, with stages (each stage's final state) and KMC
    runs (the quenched state)."""
    return bool(case.output.fields and (case.output.snapshots or case.stages
                                        or case.kmc.enabled or case.model == "quench"))


def stages_from_case(case) -> list[Stage]:
    ld = case.loading
    if not case.stages:
        return [Stage("load", "load", ld.alpha_ext, "strain", gamma=ld.gamma_max,
                      dgamma=ld.dgamma_ext, implicit=True, snapshots=case.output.snapshots)]
    out = []
    for s in case.stages:
        dg = s.dgamma_ext or ld.dgamma_ext
        if s.kind == "load":
            ctrl = "stress" if s.stress is not None else "strain"
            out.append(Stage(s.name, "load", s.alpha_ext, ctrl, s.gamma, s.stress, dg, s.start,
                             snapshots=s.snapshots))
        elif s.kind == "unload":
            out.append(Stage(s.name, "unload", None, "stress", s.gamma, 0.0, dg, s.start))
        else:
            out.append(Stage(s.name, "hold", None, "hold", None, None, dg, s.start,
                             s.temperature, s.events))
    return out


class StageRun:
    """Running one stage on one state; subclasses by control. ``fields``: take the stage's
    snapshots (kept in ``snaps`` as (gamma_ext, fields) pairs, checkpointed, written by the
    realization when the stage ends); ``event_log``: the driver logs every slip event."""

    def __init__(self, model, state, stage: Stage, alpha_deg: float, fields: bool = False,
                 event_log: bool = False, probe=None):
        self.model, self.state, self.stage, self.alpha_deg = model, state, stage, alpha_deg
        self.fields, self.event_log, self.probe = fields, event_log, probe
        model.refresh(state)
        w = model.weights
        self.int0 = state.sig @ w
        self.epl0 = w @ state.eps_pl
        self.done = False
        self.drv: AQSDriver | None = None
        self.snaps: list[tuple[float, dict]] = []

    @property
    def alpha(self) -> float:
        return math.radians(self.alpha_deg)

    def checkpoint(self) -> dict:
        return dict(int0=self.int0, epl0=self.epl0, done=int(self.done),
                    alpha_deg=self.alpha_deg, drv=ck.driver_arrays(self.drv),
                    snaps=[dict(t=t, fields=f) for t, f in self.snaps], **self._extra())

    def restore(self, d: dict) -> None:
        self.int0, self.epl0 = np.array(d["int0"]), np.array(d["epl0"])
        self.done = bool(d["done"])
        ck.restore_driver(self.drv, d["drv"])
        self.snaps = [(float(x["t"]), dict(x["fields"])) for x in d.get("snaps", [])]
        self._restore_extra(d)

    def snapshot(self) -> None:
        """Cell fields of the current (stable) state at the stage's strain."""
        g = self.gamma_final
        self.snaps.append((g, snapshot_fields(self.model, self.state, g, self.alpha)))

    def event_steps(self, ei: np.ndarray) -> np.ndarray:
        """The ``step`` column of the event log: the avalanche's ``avalanches/step``."""
        return ei[:, 1]

    def _numbered_events(self, n_logged: int, logged_per_avalanche) -> np.ndarray:
        # events are logged in avalanche order: number them 1, 2, ... by avalanche
        ends = np.cumsum(logged_per_avalanche)
        assert len(ends) == 0 or ends[-1] == n_logged, (n_logged, ends[-1:])
        return np.searchsorted(ends, np.arange(n_logged), side="right").astype(np.int64) + 1

    def _extra(self) -> dict:
        return {}

    def _restore_extra(self, d: dict) -> None:
        pass

    @property
    def gamma_final(self) -> float:
        return self.drv.gamma_ext

    def mean_dsp(self) -> np.ndarray:
        self.model.refresh(self.state)
        return (self.state.sig + self.gamma_final * self.drv.R) @ self.model.weights


class StrainStage(StageRun):
    """Strain control in increments ``k d(gamma_ext)``. ``windows``: strains at which the
    plastic strain resolved on the loading orientation is snapshot for the localization
    observables (femplast.analysis.localization), as ``(gamma, field)`` in ``observed``."""

    def __init__(self, model, state, stage, alpha_deg, windows=(), **kw):
        super().__init__(model, state, stage, alpha_deg, **kw)
        self.k_end = int(round(stage.gamma / stage.dgamma))
        self.drv = AQSDriver(model, state, self.alpha, stage.dgamma, self.k_end,
                             event_log=self.event_log)
        # probed states: field snapshots at k = round(gamma / dgamma), patch tests
        self.snap_k = sorted({int(round(g / stage.dgamma)) for g in stage.snapshots}
                             if self.fields else ())
        self.probe_k = self.probe.stops(stage.dgamma) if self.probe is not None else []
        self.loc_k = sorted({int(round(g / stage.dgamma)) for g in windows})
        self.observed: list[np.ndarray] = []
        self.stop_k = sorted(set(self.snap_k) | set(self.probe_k) | set(self.loc_k))
        self.snap_i = 0  # stops passed

    def run(self, tick) -> None:
        # slices of SLICE increments or BUDGET events between safe points; stopping at a
        # stable state and going on does not change the trajectory
        while not self.done:
            ks = min(self.drv.k + SLICE, self.k_end)
            if self.snap_i < len(self.stop_k):
                ks = min(ks, self.stop_k[self.snap_i])
            rc = self.drv.advance(ks, BUDGET)
            if rc in (RC_STOP, RC_END) and self.snap_i < len(self.stop_k) \
                    and self.drv.k == self.stop_k[self.snap_i]:
                self._probe(self.drv.k)
                self.snap_i += 1
            if rc == RC_END or (rc == RC_STOP and self.drv.k >= self.k_end):
                self.done = True
                break
            tick()

    def _probe(self, k: int) -> None:
        """The probes of the stable state at increment k: fields, then patch tests."""
        self.model.refresh(self.state)
        if k in self.loc_k:
            drive = (self.model.el.drive_gradient if getattr(self.model.box, "bounded", False)
                     else None)
            self.observed.append(resolved_plastic(self.state.eps_pl, self.alpha, drive))
        if k in self.snap_k:
            self.snapshot()
        if k in self.probe_k:
            self.probe.at_increment(self.state, k, self.stage.dgamma, self.alpha)

    def _extra(self) -> dict:
        return dict(snap_i=self.snap_i, observed=list(self.observed))

    def _restore_extra(self, d: dict) -> None:
        self.snap_i = int(d.get("snap_i", 0))
        self.observed = [np.array(x) for x in d.get("observed", [])]

    def tables(self) -> dict:
        drv, m = self.drv, self.model
        rec = drv.avalanche_table()
        # evolving moduli: the load response changes along the stage
        Rm = drv.load_mean_per_increment() if drv.load_changes else m.weights @ drv.R.T
        gam, stress, epl, nev = steps_table(rec, self.k_end, self.stage.dgamma, Rm, self.int0,
                                            self.epl0)
        before, after = from_dsp(rec[:, 3:6].T), from_dsp(rec[:, 6:9].T)
        return dict(steps=dict(gamma_ext=gam, stress=stress, eps_pl=epl, n_events=nev),
                    avalanches=dict(step=rec[:, 0].astype(np.int64),
                                    gamma_ext=rec[:, 0] * self.stage.dgamma,
                                    size=rec[:, 1].astype(np.int64),
                                    relaxation_steps=rec[:, 2].astype(np.int64),
                                    stress_before=before, stress_after=after,
                                    drop_xy=before[:, 2] - after[:, 2]))


class StressStage(StageRun):
    """Stress control to ``target`` (resolved on the stage's alpha), see the module doc."""

    def __init__(self, model, state, stage, alpha_deg, target: float, **kw):
        super().__init__(model, state, stage, alpha_deg, **kw)
        self.target = float(target)
        self.cap = float(stage.gamma) if stage.gamma is not None else 1.0
        self.drv = AQSDriver(model, state, self.alpha, 1.0, 2, event_log=self.event_log)
        self._set_gamma(0.0)
        self.av_gamma: list[float] = []
        self.reached = False
        self.initial_relaxed = False
        self.s2a, self.c2a = math.sin(2 * self.alpha), math.cos(2 * self.alpha)

    def _set_gamma(self, g: float) -> None:
        self.drv.set_strain(g)

    @property
    def g(self) -> float:
        return float(self.drv.dgamma)

    def coefficients(self) -> tuple[float, float]:
        """``S(gamma) = A + B gamma``, the controlled stress (:func:`resolved_stress`) between
        avalanches: linear in gamma_ext on the box and on a specimen alike."""
        m, s = self.model, self.state
        w = m.weights
        if specimen(m):
            return (float(resolved_stress(m, from_dsp(s.sig @ w), self.alpha_deg)),
                    float(resolved_stress(m, from_dsp(self.drv.R @ w), self.alpha_deg)))
        A = w @ (self.s2a * s.sig[0] + self.c2a * s.sig[1])
        B = w @ (self.s2a * self.drv.R[0] + self.c2a * self.drv.R[1])
        return float(A), float(B)

    def stress_now(self) -> float:
        A, B = self.coefficients()
        return A + B * self.g

    def _active(self, g: float) -> bool:
        s, p = self.state, self.model.params
        return bool(any_active_at(g, s.sig, self.drv.R, s.sin2, s.cos2, s.tauc, p.alpha_p,
                                  p.p_offset))

    def next_instability(self, g0: float) -> float:
        return self.drv.next_unstable_strain(g0)

    def _avalanche(self, g: float, tick) -> None:
        self._set_gamma(g)
        if self.drv.relax() > 0:
            self.av_gamma.append(g)
        tick()

    def run(self, tick) -> None:
        if not self.initial_relaxed:  # a copied or folded state is stable: normally no-op
            self.initial_relaxed = True
            self._avalanche(self.g, tick)
        guard = 0
        while not self.done:
            A, B = self.coefficients()
            if B <= 0:
                raise FemplastInputError(f"stages.{self.stage.name}", self.alpha_deg,
                                         "an orientation along which the load raises the "
                                         "resolved stress")
            gstar = (self.target - A) / B
            g = self.g
            if gstar >= g:
                gi = self.next_instability(g)
                if gi <= min(gstar, self.cap):
                    self._avalanche(gi, tick)
                    continue
                self.reached = gstar <= self.cap
                self._set_gamma(min(gstar, self.cap))
                self.done = True
            else:
                guard += 1
                if guard > 1000:
                    raise RuntimeError("stress control: no stable state at the target")
                if not self._active(gstar) and gstar >= 0.0:
                    self._set_gamma(gstar)
                    self.reached = True
                    self.done = True
                elif gstar < 0.0:  # the target lies before the stage's start: stop there
                    self.reached = False
                    self.done = True
                else:
                    self._avalanche(gstar, tick)

    @property
    def error(self) -> float:
        return self.stress_now() - self.target

    def _extra(self) -> dict:
        return dict(av_gamma=np.array(self.av_gamma, float), reached=int(self.reached),
                    initial_relaxed=int(self.initial_relaxed))

    def _restore_extra(self, d: dict) -> None:
        self.av_gamma = [float(x) for x in np.asarray(d["av_gamma"])]
        self.reached = bool(d["reached"])
        self.initial_relaxed = bool(d["initial_relaxed"])

    def event_steps(self, ei: np.ndarray) -> np.ndarray:
        # the driver's increment is always 1 here: number the avalanches instead
        return self._numbered_events(len(ei), self.drv.avalanche_table()[:, 1])

    def tables(self) -> dict:
        rec = self.drv.avalanche_table()
        n = len(rec)
        assert n == len(self.av_gamma), (n, len(self.av_gamma))
        Rm = self.model.weights @ self.drv.R.T
        s0 = from_dsp(self.int0)
        gam = np.concatenate([[0.0], self.av_gamma, [self.g]])
        before = from_dsp(rec[:, 3:6].T) if n else np.zeros((0, 3))
        after = from_dsp(rec[:, 6:9].T) if n else np.zeros((0, 3))
        final = from_dsp(self.mean_dsp())
        stress = np.vstack([s0[None], after, final[None]])
        sb = np.vstack([s0[None], before, final[None]])
        epl_end = self.model.weights @ self.state.eps_pl
        epl = np.vstack([self.epl0[None], rec[:, 9:12], epl_end[None]])
        nev = np.concatenate([[0], rec[:, 1].astype(np.int64), [0]]).astype(np.int64)
        del Rm
        return dict(steps=dict(gamma_ext=gam, stress=stress, stress_before=sb, eps_pl=epl,
                               n_events=nev),
                    avalanches=dict(step=np.arange(1, n + 1, dtype=np.int64),
                                    gamma_ext=np.array(self.av_gamma, float),
                                    size=rec[:, 1].astype(np.int64),
                                    relaxation_steps=rec[:, 2].astype(np.int64),
                                    stress_before=before, stress_after=after,
                                    drop_xy=before[:, 2] - after[:, 2]))


class HoldStage(StageRun):
    """Fixed strain; thermally activated events by KMC when the temperature is > 0."""

    def __init__(self, model, state, stage, alpha_deg, Va: float = 1.0, **kw):
        super().__init__(model, state, stage, alpha_deg, **kw)
        self.drv = AQSDriver(model, state, self.alpha, 1.0, 1, event_log=self.event_log)
        self.kmc = None
        if stage.temperature > 0 and stage.events > 0:
            self.kmc = KMC(self.drv, stage.temperature, Va, window=max(stage.events, 10),
                           tolerance=1.0)

    def run(self, tick) -> None:
        if self.kmc is not None and not self.done:
            self.kmc.run(self.stage.events, until_stationary=False,
                         on_budget=lambda k: tick(), budget=200)
        self.done = True

    def _extra(self) -> dict:
        return dict(kmc=self.kmc.checkpoint()) if self.kmc is not None else {}

    def _restore_extra(self, d: dict) -> None:
        if self.kmc is not None:
            self.kmc.restore(d["kmc"])

    def event_steps(self, ei: np.ndarray) -> np.ndarray:
        # one avalanche per thermal event, which opens it in the log (relaxation step 0)
        return self._numbered_events(len(ei), self.drv.avalanche_table()[:, 1])

    def tables(self) -> dict:
        rec = self.drv.avalanche_table()
        before, after = from_dsp(rec[:, 3:6].T), from_dsp(rec[:, 6:9].T)
        final = from_dsp(self.mean_dsp())
        epl = self.model.weights @ self.state.eps_pl
        return dict(steps=dict(gamma_ext=np.zeros(2), stress=np.vstack([from_dsp(self.int0),
                                                                        final]),
                               eps_pl=np.vstack([self.epl0, epl]),
                               n_events=np.array([0, self.drv.num_events], np.int64)),
                    avalanches=dict(step=np.arange(1, len(rec) + 1, dtype=np.int64),
                                    gamma_ext=np.zeros(len(rec)),
                                    size=rec[:, 1].astype(np.int64),
                                    relaxation_steps=rec[:, 2].astype(np.int64),
                                    stress_before=before, stress_after=after,
                                    drop_xy=before[:, 2] - after[:, 2]))
