"""Parameter sweeps: grid expansion, dynamic scheduling over MPI ranks, resumable point store,
results table, optimum and emergent analyses (tensorial paper sec. 4-5;
femplast.analysis.calibration).

A case with ``sweep.enabled: true`` declares a grid over case keys (``k``, ``lambda``, ``chi``
are short for ``slip.weibull_k``, ``slip.weibull_lambda``, ``slip.chi``); the rest of the case
gives the base parameters. Point ``i`` of the grid (row-major over the axes in the order
written, the last axis fastest) runs ``sweep.realizations`` realizations of the case with the
point's values, in-process on one rank (model on ``MPI.COMM_SELF``, shared by all points with
the same mesh and elasticity), without per-realization files. Realization ``j`` of a point
uses ``SeedSequence([s, j])`` with ``s = run.seed`` (``sweep.seeds: common``: every point sees
the same random numbers, the landscape is smoother) or ``s`` drawn from
``SeedSequence([run.seed, i])`` (``per_point``); either way a point's result does not depend
on the number of ranks or on which rank computes it, and equals a plain femplast run of the
point's case with ``run.seed = s`` (same stationary samples).

Outputs (``OUTDIR/sweep/``):

* ``plan.json``: the resolved sweep (case, points), checked on ``--resume``;
* ``points/pNNNNN.json``: one file per finished point (written atomically by rank 0):
  parameters, seeds, statistics (histogram counts on the reference bins, moments, rms
  deviation, patch statistics), errors, wall time (its realizations' sum), the rank of each
  realization;
* ``table.csv``: one row per grid point in point order (parameters, errors, statistics),
  assembled from the point files, hence identical for any number of ranks or interruptions;
* ``finite_size.csv``: one row per system size (``sweep.finite_size``).

Scalar model (``model: scalar``, femplast.scalar): grid keys are numeric keys of the sections
``scalar`` (``scalar.c0``, ``scalar.c1``, ``scalar.internal_stress_std``,
``scalar.thresholds.scale``, ``scalar.renewal.shape``, ...), ``mesh``, ``elasticity`` and
``loading`` (a specimen, ``mesh.kind: geometry``: also ``geometry``). On a specimen the FE
kernel (meshing, factorization, dense columns: femplast.scalar.specimen) is built once per
process for each geometry and moduli (:meth:`ModelCache.scalar`) and the stresses of the
table are its grip force per area (:data:`SPECIMEN_STRESS`, in the table header and
``summary.json["sweep"]["stress_measure"]``). A point runs its realizations through
:class:`femplast.scalar.realization.ScalarRealization` in memory (no field stops, as a plain
run without snapshots) and reduces them with :func:`femplast.scalar.model.statistics`; the
table has those statistics (:data:`SCALAR_STAT_COLUMNS`: flow and peak stress with standard
errors, overshoot, LOC maximum, thresholds, ...) and no error columns: calibration errors
compare tensorial statistics with a reference, so ``sweep.errors`` must be ``[]`` and
``sweep.reference`` null; no finite-size points (a lattice-size scan: refused on specimens
for either model), no ``scalar.fit`` per point.

Scheduling: the work units are a point's realizations, ``(point, realization)`` pairs (a
scalar point is one unit). Rank 0 hands them out on request (dynamic load balancing), largest
systems first (so that the last units handed out are the shortest and the ranks finish within
one realization of each other), computes units itself, answering requests and taking the
other ranks' results between units and at the pipeline's safe points; when a point has all
its realizations rank 0 reduces them in realization order (the serial sums: the point, the
table and the summary are bit-identical for any number of ranks) and writes the point file.
A killed sweep restarted with ``--resume`` skips every point whose file exists (the
realizations of unfinished points are recomputed).
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import itertools
import json
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from mpi4py import MPI

from femplast.analysis import calibration as C
from femplast.angles import wrap_orientation_deg
from femplast.errors import FemplastInputError
from femplast.protocols.checkpoint import Interrupted

ALIASES = {"k": "slip.weibull_k", "lambda": "slip.weibull_lambda", "chi": "slip.chi"}
COLUMN_OF = {v: k for k, v in ALIASES.items()}
NOT_GRIDDABLE = ("sweep", "run", "output", "patches", "model", "name", "description",
                 "initial", "inclusion", "scalar")
STAT_COLUMNS = ("sigma_xy_mean", "sigma_xy_std", "sigma_xy_std_err", "drop_xy_mean",
                "avalanches_per_realization", "slip_events_per_unit_strain",
                "tau_c_mean_plus", "delta_tau_c_mean_plus", "tau_c_mean_minus",
                "delta_tau_c_mean_minus", "realizations")
SCALAR_SECTIONS = ("scalar", "mesh", "elasticity", "loading")
SCALAR_STAT_COLUMNS = ("flow_stress", "flow_stress_err", "peak_stress", "peak_stress_err",
                       "gamma_peak", "overshoot", "loc_max", "gamma_loc_max", "loc_final",
                       "tau_c_mean_initial", "tau_c_mean_final", "tau_c_mean_max",
                       "gamma_tau_c_max", "eps_pl_var_final", "eps_var_final",
                       "sigma_std_final",
                       "disorder_strength", "age", "slip_events_per_realization",
                       "realizations")
TAG_REQ, TAG_WORK, TAG_RESULT = 7101, 7102, 7103
# what the stresses of a scalar sweep on a specimen are (the name of
# femplast.postprocess.data.Realization.stress_measure, and its meaning)
SPECIMEN_STRESS = ("drive", "grip force conjugate to gamma_ext per unit area (F_drive / A, "
                   "femplast.scalar.specimen): <sigma_xy> between sheared walls, the nominal "
                   "stress in tension")


# ============================================================================ grid
def axis_values(spec, key: str) -> list[float]:
    """Values of one grid axis: ``{start, stop, step}`` (stop included when it lies on the
    grid, within 1e-9 of a step), a list, or one number."""
    if isinstance(spec, dict):
        extra = set(spec) - {"start", "stop", "step"}
        if extra or not {"start", "stop", "step"} <= set(spec):
            raise FemplastInputError(f"sweep.grid.{key}", spec,
                                     "{start, stop, step}, a list of values or a number")
        a, b, s = (spec[n] for n in ("start", "stop", "step"))
        for n, v in (("start", a), ("stop", b), ("step", s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise FemplastInputError(f"sweep.grid.{key}.{n}", v, "a finite number")
        if s <= 0 or b < a:
            raise FemplastInputError(f"sweep.grid.{key}", spec, "step > 0 and stop >= start")
        n = int(math.floor((b - a) / s + 1e-9)) + 1
        if n > 100000:
            raise FemplastInputError(f"sweep.grid.{key}", spec, "at most 100000 values")
        ints = all(isinstance(v, int) for v in (a, b, s))
        return [a + i * s if ints else float(round(a + i * s, 12)) for i in range(n)]
    if isinstance(spec, list):
        if not spec:
            raise FemplastInputError(f"sweep.grid.{key}", spec, "at least one value")
        return list(spec)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return [spec]
    raise FemplastInputError(f"sweep.grid.{key}", spec,
                             "{start, stop, step}, a list of values or a number")


def dotted(name: str) -> str:
    return ALIASES.get(name, name)


def column(name: str) -> str:
    """Table column of a grid key: k, lambda, chi for the Weibull/amplitude keys, else the
    dotted key."""
    return COLUMN_OF.get(dotted(name), dotted(name))


def grid_points(case) -> list[dict]:
    """The grid points, each ``{column: value}``, in point order."""
    sw = case.sweep
    axes = [(column(k), axis_values(v, k)) for k, v in sw.grid.items()]
    if not axes:
        return []
    names = [a for a, _ in axes]
    return [dict(zip(names, vals, strict=True))
            for vals in itertools.product(*(v for _, v in axes))]


def plan(case) -> list[dict]:
    """Every point of the sweep: the grid (kind ``grid``), then one point per finite-size
    system (kind ``finite_size``, base parameters, ``mesh.n`` cells per side at the base
    cell size)."""
    pts = [dict(point=i, kind="grid", params=p) for i, p in enumerate(grid_points(case))]
    for n in case.sweep.finite_size:
        pts.append(dict(point=len(pts), kind="finite_size",
                        params={"mesh.n": n,
                                "mesh.L": float(f"{case.mesh.L / case.mesh.n * n:.12g}")}))
    return pts


def point_cells(case, pt: dict) -> int:
    """Cells of a point's system (cost estimate of the scheduling: largest first)."""
    n = pt["params"].get("mesh.n", case.mesh.n)
    return int(n) ** 2 if n else 0


def _set(d: dict, path: str, value):
    parts = path.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def point_seed(case, index: int) -> int:
    """run.seed of point ``index`` (see the module docstring)."""
    if case.sweep.seeds == "common":
        return int(case.run.seed)
    ss = np.random.SeedSequence([int(case.run.seed), int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(2))


def point_case(case, pt: dict):
    """The plain case of one point: the base case with the point's values, no sweep, no
    field output, ``sweep.realizations`` realizations, the point's seed; patches off for
    finite-size points."""
    from femplast.config.case import case_from_dict
    from femplast.protocols.checks import validate as validate_features

    d = case.to_dict()
    d["sweep"] = {"enabled": False}
    d["output"] = {"fields": False, "snapshots": []}
    d["run"] = dict(d["run"], realizations=realizations_per_point(case),
                    seed=point_seed(case, pt["point"]), parallel="realizations")
    for k, v in pt["params"].items():
        _set(d, dotted(k), v)
    if pt["kind"] == "finite_size":
        d["patches"] = dict(d["patches"], enabled=False)
    try:
        pc = validate_features(case_from_dict(d, source=case.source))
    except FemplastInputError as exc:
        key = exc.key
        for k in pt["params"]:
            if dotted(k) == key:
                key = f"sweep.grid.{k}"
        raise FemplastInputError(key, exc.value, f"{exc.allowed} (grid point {pt['point']})"
                                 ) from None
    pc.name = f"{case.name}-p{pt['point']:05d}"
    return pc


def realizations_per_point(case) -> int:
    return case.sweep.realizations or case.run.realizations


def validate(case) -> None:
    """Checks of the sweep section (femplast.app.cases runs them on loading)."""
    sw = case.sweep
    if not sw.enabled:
        return
    if case.model not in ("tensorial", "scalar"):
        raise FemplastInputError("sweep.enabled", True, "only with model: tensorial or scalar")
    if case.run.parallel != "realizations":
        raise FemplastInputError("run.parallel", case.run.parallel,
                                 "'realizations' with sweep.enabled (points run on one rank)")
    if not sw.grid and not sw.finite_size:
        raise FemplastInputError("sweep.grid", sw.grid, "at least one axis (or "
                                 "sweep.finite_size)")
    if sw.finite_size and case.mesh.kind in ("gmsh", "geometry"):
        raise FemplastInputError("sweep.finite_size", sw.finite_size, "[] on unstructured "
                                 "meshes and specimens (a scan of lattice sizes: mesh.kind "
                                 "quad or tri)")
    if case.model == "scalar":
        _check_scalar(case)
    base = case.to_dict()
    axes = {}
    for k, spec in sw.grid.items():
        _check_key(case, str(k), spec, base)
        if column(k) in axes:
            raise FemplastInputError(f"sweep.grid.{k}", spec, "each key once")
        axes[column(k)] = axis_values(spec, str(k))
    # every axis value, with the other axes at their first value, makes a valid case
    first = {a: v[0] for a, v in axes.items()}
    for a, vals in axes.items():
        for v in {vals[0], vals[-1]} if len(vals) > 1 else {vals[0]}:
            point_case(case, dict(point=0, kind="grid", params=dict(first, **{a: v})))
    if sw.reference is not None:
        _check_reference(case)


def _check_key(case, k: str, spec, base: dict) -> None:
    """A grid key names an existing numeric key of a griddable section: tensorial: sections
    mesh, elasticity, slip, loading, redistribution (and the aliases k, lambda, chi); scalar:
    mesh, elasticity, loading, scalar (scalar.thresholds.* and scalar.renewal.* too)."""
    from femplast.config.case import Case

    dk = dotted(k)
    parts = dk.split(".")
    if case.model == "scalar":
        # a specimen's shape is griddable too: its kernel is rebuilt (ModelCache.scalar)
        secs = SCALAR_SECTIONS + (("geometry",) if case.mesh.kind == "geometry" else ())
        ok = parts[0] in secs and (len(parts) == 2 or (
            len(parts) == 3 and parts[0] == "scalar" and parts[1] in ("thresholds", "renewal")))
        what = (f"a dotted numeric key of sections {', '.join(secs)} with model: "
                "scalar (e.g. scalar.c0, scalar.internal_stress_std, scalar.thresholds.scale, "
                "scalar.renewal.shape, loading.gamma_max)")
    else:
        top = {f.name for f in dataclasses.fields(Case)}
        ok = parts[0] in top and parts[0] not in NOT_GRIDDABLE and len(parts) == 2
        what = ("k, lambda, chi or a dotted numeric key of sections mesh, elasticity, slip, "
                "loading, redistribution (e.g. loading.dgamma_ext)")
    if not ok:
        raise FemplastInputError(f"sweep.grid.{k}", spec, what)
    sec = base
    for p in parts[:-1]:
        sec = sec.get(p) if isinstance(sec, dict) else None
    if not isinstance(sec, dict) or parts[-1] not in sec or isinstance(sec[parts[-1]], dict):
        raise FemplastInputError(f"sweep.grid.{k}", spec, f"an existing key ({dk} is not "
                                 "a case key)")


def _check_scalar(case) -> None:
    """A scalar sweep reports the scalar statistics per point: no calibration errors against
    a tensorial reference, no finite-size points, no fit of the slip law per point."""
    sw = case.sweep
    if sw.errors:
        raise FemplastInputError("sweep.errors", sw.errors, "[] with model: scalar (calibration "
                                 "errors compare tensorial statistics with a reference)")
    if sw.reference is not None:
        raise FemplastInputError("sweep.reference", sw.reference, "null with model: scalar")
    if sw.finite_size:
        raise FemplastInputError("sweep.finite_size", sw.finite_size, "[] with model: scalar "
                                 "(sweep mesh.n instead)")
    if case.scalar.fit.flow_stress is not None:
        raise FemplastInputError("scalar.fit.flow_stress", case.scalar.fit.flow_stress,
                                 "null with sweep.enabled (points run at the grid's slip law)")


def _check_reference(case):
    from femplast.config.case import resolve_path

    sw = case.sweep
    path = resolve_path(case, sw.reference)
    try:
        ref = C.read_reference(path)
    except (C.ReferenceError, OSError, KeyError, ValueError) as exc:
        raise FemplastInputError("sweep.reference", sw.reference,
                                 f"a reference directory in the format of "
                                 f"femplast.analysis.calibration ({exc})") from None
    if "meso" in sw.errors:
        if not case.patches.enabled:
            raise FemplastInputError("sweep.errors", sw.errors, "'meso' needs patches.enabled "
                                     "(patch statistics per point)")
        al = [wrap_orientation_deg(a) for a in case.patches.alpha]
        if not any(abs(a) < 1e-9 for a in al) or not any(abs(abs(a) - 90) < 1e-9 for a in al):
            raise FemplastInputError("patches.alpha", case.patches.alpha, "0 and 90 among the "
                                     "orientations (L_meso_plus / L_meso_minus)")
        if not any(g >= case.loading.stationary_from for g in case.patches.gamma_ext):
            raise FemplastInputError("patches.gamma_ext", case.patches.gamma_ext,
                                     "at least one value >= loading.stationary_from (the "
                                     "mesoscale errors use stationary patch statistics)")
        if not ref.local or ref.local_rows("stationary", 0.0) is None or \
                ref.local_rows("stationary", 90.0) is None:
            raise FemplastInputError("sweep.errors", sw.errors, f"'meso' needs "
                                     f"{path}/local.csv with stationary rows at alpha 0 and 90")
    if "quench" in sw.errors:
        _check_quench_errors(case, ref, path)
    return ref


def _check_quench_errors(case, ref, path):
    """sweep.errors quench (appendix A.3): KMC preparation and patch tests of the quenched
    state at 0 and 90 deg, and initial rows in the reference."""
    sw = case.sweep
    if not (case.kmc.enabled and case.patches.enabled and case.patches.initial):
        raise FemplastInputError("sweep.errors", sw.errors, "'quench' needs kmc.enabled, "
                                 "patches.enabled and patches.initial (patch statistics of "
                                 "the quenched glass per point)")
    al = [wrap_orientation_deg(a) for a in case.patches.alpha]
    if not any(abs(a) < 1e-9 for a in al) or not any(abs(abs(a) - 90) < 1e-9 for a in al):
        raise FemplastInputError("patches.alpha", case.patches.alpha, "0 and 90 among the "
                                 "orientations (L_quench_plus / L_quench_minus)")
    if not ref.local or ref.local_rows("initial", 0.0) is None or \
            ref.local_rows("initial", 90.0) is None:
        raise FemplastInputError("sweep.errors", sw.errors, f"'quench' needs {path}/local.csv "
                                 "with initial rows at alpha 0 and 90")


# ============================================================================ one point
class ModelCache:
    """Models by structure: everything in the case but the slip parameters k, lambda, chi and
    the sections that do not enter the model (loading, run, output, patches, sweep); the slip
    parameters are set per point. Keeps the two most recent."""

    def __init__(self):
        self.models: dict[str, object] = {}
        self.kernels: dict[str, object] = {}  # scalar specimens by femplast.scalar.specimen
        # .kernel_key: their FE kernel (meshing, factorization, dense columns)

    def scalar(self, pcase):
        """The scalar model of a point's case: on the lattice built anew (an FFT kernel, cheap);
        on a specimen its kernel built once per process for each :func:`kernel_key` (mesh,
        geometry, moduli, backend: a grid key of those sections builds a new one; the two most
        recent kept) and shared by the points that change only the scalar section."""
        if pcase.mesh.kind != "geometry":
            from femplast.scalar.model import model_from_case

            return model_from_case(pcase)
        from femplast.scalar.specimen import kernel_key, model_from_case

        key = kernel_key(pcase)
        base = self.kernels.get(key)
        if base is None:
            self._make_room(self.kernels)
        model = model_from_case(pcase, kernel=base)
        if base is None:
            self.kernels[key] = model
        return model

    @staticmethod
    def _make_room(store: dict) -> None:
        """Before a new model is built: drop the oldest but one, so that at most the two most
        recent are kept (bounded memory; a grid over a model key alternates few values)."""
        if len(store) >= 2:
            store.pop(next(iter(store)))

    @staticmethod
    def key(pcase) -> str:
        d = pcase.to_dict()
        for k in ("loading", "run", "output", "patches", "sweep", "name", "description"):
            d.pop(k, None)
        d["slip"] = {k: v for k, v in d["slip"].items()
                     if k not in ("weibull_k", "weibull_lambda", "chi")}
        return json.dumps(d, sort_keys=True, default=str)

    def get(self, pcase):
        from femplast.analysis.patches import PatchRules
        from femplast.protocols.prepare import build_model, load_initial_state

        key = self.key(pcase)
        if key not in self.models:
            self._make_room(self.models)
            model = build_model(pcase, MPI.COMM_SELF)
            model._sweep_initial = None
            if pcase.initial.state:
                from femplast.config.case import resolve_path

                model._sweep_initial = load_initial_state(
                    resolve_path(pcase, pcase.initial.state), model)
            self.models[key] = model
        model = self.models[key]
        model.params = point_params(pcase, model)
        pa = getattr(model, "_femplast_patch_analysis", None)
        if pa is not None:
            pa.rules = PatchRules.from_model(model)
        return model


def point_params(pcase, model):
    """The model's slip parameters for a point's case (as building the model would set them:
    through femplast.tensorial.variants' options when the variants module is present)."""
    s = pcase.slip
    try:
        from femplast.tensorial.variants import model_options
    except ImportError:
        return dataclasses.replace(model.params, chi=s.chi, weibull_lambda=s.weibull_lambda,
                                   weibull_k=s.weibull_k)
    opts = model_options(pcase, model.box)
    names = {f.name for f in dataclasses.fields(model.params)} - {"N"}
    return dataclasses.replace(model.params, **{k: v for k, v in opts.items() if k in names})


def run_realization_stats(pcase, model, j: int, idle=None) -> dict:
    """One realization of a point through the realization pipeline, in memory: stationary
    external stress per step (resolved on the loading direction; a specimen: its nominal
    stress, ``BoundedElasticity.controlled_stress``, in the columns named sigma_xy), stress
    increments between avalanches and positive stress drops
    (femplast.analysis.calibration.avalanche_samples; the negative drops counted), slip
    events, patch statistics. ``idle`` is called at the pipeline's safe points (rank 0
    serves work requests there)."""
    from femplast.protocols.pipeline import RealizationRun
    from femplast.protocols.stages import resolved_stress, stages_from_case

    ld = pcase.loading
    stages = stages_from_case(pcase)
    run = RealizationRun(pcase, model, j, None, stages, model._sweep_initial,
                         progress=lambda *a, **k: None)
    res = run.run(idle if idle is not None else (lambda: None))
    tabs = res["tables"][stages[0].name]
    steps, av = tabs["steps"], tabs["avalanches"]

    def resolved(stress):  # the box: resolved on alpha_ext; a specimen: its nominal stress
        return resolved_stress(model, stress, ld.alpha_ext)

    s = resolved(steps["stress"])
    stat = steps["gamma_ext"] > ld.stationary_from
    sel = av["gamma_ext"] > ld.stationary_from
    a = C.avalanche_samples(resolved(av["stress_before"]), resolved(av["stress_after"]),
                            av["gamma_ext"],
                            ld.stationary_from)
    return dict(sigma_xy=s[stat], increment_xy=a["increments"],
                drop_xy=a["drops"][~a["negative"]], negative_drops=int(a["negative"].sum()),
                events=int(av["size"][sel].sum()), patches=res.get("patches"))


def realization_unit(case, pt: dict, j: int, models: ModelCache, idle=None) -> dict:
    """Realization ``j`` of a point, one work unit of the scheduler: its samples
    (:func:`run_realization_stats`), the system size and the wall time."""
    t0 = time.perf_counter()
    pc = point_case(case, pt)
    model = models.get(pc)
    r = run_realization_stats(pc, model, j, idle)
    r.update(num_cells=model.num_cells, wall_time=time.perf_counter() - t0)
    return r


def compute_point(case, pt: dict, models: ModelCache, ref: C.Reference | None,
                  idle=None, keep_samples: bool = False) -> dict:
    """Run one point's realizations and reduce them to its statistics and errors."""
    if case.model == "scalar":
        return compute_scalar_point(case, pt, idle, models)
    t0 = time.perf_counter()
    rs = []
    for j in range(realizations_per_point(case)):
        rs.append(realization_unit(case, pt, j, models, idle))
        if idle:
            idle()
    out = reduce_point(case, pt, rs, ref, keep_samples)
    out["wall_time"] = time.perf_counter() - t0
    return out


def reduce_point(case, pt: dict, rs: list[dict], ref: C.Reference | None,
                 keep_samples: bool = False) -> dict:
    """A point's statistics and errors from its realizations ``rs`` (:func:`realization_unit`,
    in realization order: the sums run in that order whichever rank computed each, so the
    result does not depend on the number of ranks). ``wall_time``: the realizations' sum."""
    pc = point_case(case, pt)
    ld = pc.loading
    R = len(rs)
    n_stat = int(round(ld.gamma_max / ld.dgamma_ext)) - int(
        math.floor(ld.stationary_from / ld.dgamma_ext + 1e-9))
    widths = C.rms_widths(n_stat, ld.dgamma_ext, None if ref is None or ref.rms is None
                          else ref.rms["dgamma"])
    rms = C.RmsAccumulator(widths)
    edges = {q: ref.macro[q].edges for q in C.MACRO_QUANTITIES} if ref is not None else {}
    counts = {q: np.zeros(len(e) - 1, np.int64) for q, e in edges.items()}
    totals = dict.fromkeys(C.MACRO_QUANTITIES, 0)
    mom = {q: np.zeros((R, 3)) for q in C.MACRO_QUANTITIES}  # per realization: n, sum, sum2
    events, negative, patch_sums = 0, 0, []
    samples = {q: [] for q in C.MACRO_QUANTITIES}
    for j, r in enumerate(rs):
        for q in C.MACRO_QUANTITIES:
            v = r[q]
            totals[q] += len(v)
            mom[q][j] = (len(v), v.sum(), (v * v).sum())
            if q in counts:
                counts[q] += np.histogram(v, edges[q])[0]
            if keep_samples:
                samples[q].append(v)
        rms.add(r["sigma_xy"])
        events += r["events"]
        negative += r["negative_drops"]
        if r["patches"] is not None:
            patch_sums.append(r["patches"])
    sd, sd_err = C.std_with_jackknife(mom["sigma_xy"][:, 1], mom["sigma_xy"][:, 2],
                                      mom["sigma_xy"][:, 0])
    nd = totals["drop_xy"]
    stats = dict(
        sigma_xy_mean=float(mom["sigma_xy"][:, 1].sum() / max(totals["sigma_xy"], 1)),
        sigma_xy_std=sd, sigma_xy_std_err=sd_err,
        drop_xy_mean=float(mom["drop_xy"][:, 1].sum() / nd) if nd else math.nan,
        avalanches_per_realization=(nd + negative) / R, negative_drops=negative,
        slip_events_per_unit_strain=events / R / (ld.gamma_max - ld.stationary_from),
        samples={q: int(totals[q]) for q in C.MACRO_QUANTITIES},
        moments={q: mom[q].tolist() for q in C.MACRO_QUANTITIES},
        counts={q: c.tolist() for q, c in counts.items()},
        rms=rms.result(ld.dgamma_ext))
    entries = []
    if patch_sums:
        from femplast.analysis.patches import summary_section

        entries = summary_section(pc, patch_sums)["entries"]
    for name, a in (("plus", 0.0), ("minus", 90.0)):
        e = C.local_entry(entries, "stationary", a) if entries else None
        stats[f"tau_c_mean_{name}"] = e["tau_c_mean"] if e else math.nan
        stats[f"delta_tau_c_mean_{name}"] = e["delta_tau_c_mean"] if e else math.nan
    errors = {}
    if ref is not None and pt["kind"] == "grid":
        errors = point_errors(case, counts, totals, entries, ref)
    out = dict(point=pt["point"], kind=pt["kind"], params=pt["params"], seed=pc.run.seed,
               realizations=R, num_cells=rs[0]["num_cells"], L=pc.mesh.L, statistics=stats,
               patches=entries, errors=errors,
               wall_time=float(sum(r["wall_time"] for r in rs)),
               rank=MPI.COMM_WORLD.rank)
    if keep_samples:
        out["samples"] = {q: np.concatenate(v) if v else np.zeros(0) for q, v in samples.items()}
    return out


def compute_scalar_point(case, pt: dict, idle=None, models: ModelCache | None = None) -> dict:
    """One point of a scalar sweep: its realizations (femplast.scalar.realization, in memory)
    reduced to the statistics of :func:`femplast.scalar.model.statistics` (flow and peak
    stress with standard errors, LOC maximum, thresholds, ...), the point's disorder strength
    and age; the same numbers as a plain run of the point's case (summary ``scalar``). On a
    specimen the stresses are its grip force per area (:data:`SPECIMEN_STRESS`) and the
    kernel comes from ``models`` (:meth:`ModelCache.scalar`)."""
    from femplast.scalar.model import CURVE_NAMES, statistics
    from femplast.scalar.realization import ScalarRealization, curve_grid

    t0 = time.perf_counter()
    pc = point_case(case, pt)
    model = (models or ModelCache()).scalar(pc)
    R = pc.run.realizations
    tick = idle if idle is not None else (lambda: None)
    res = []
    for j in range(R):
        res.append(ScalarRealization(pc, model, j, None).run(tick))
        tick()
    curves = {k: np.array([r["curves"][k] for r in res]) for k in CURVE_NAMES}
    st = statistics(curves, curve_grid(pc), pc.loading.stationary_from)
    stats = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
    par = model.parameters()
    stats.update(disorder_strength=par["disorder_strength_s"], age=par["age_r"],
                 slip_events_per_realization=float(np.mean([r["events"] for r in res])))
    return dict(point=pt["point"], kind=pt["kind"], params=pt["params"], seed=pc.run.seed,
                realizations=R, num_cells=model.num_cells, L=pc.mesh.L, statistics=stats,
                parameters=par, patches=[], errors={}, wall_time=time.perf_counter() - t0,
                rank=MPI.COMM_WORLD.rank)


def point_errors(case, counts, totals, entries, ref) -> dict:
    errs = C.macro_errors({q: np.asarray(c) for q, c in counts.items()}, totals, ref)
    if "macro" not in case.sweep.errors:
        for k in ("L_sigma_xy", "L_drop_xy", "L_increment_xy", "L_macro"):
            errs[k] = math.nan
    Lp = Lm = None
    if "meso" in case.sweep.errors:
        m = C.meso_errors(entries, ref)
        errs.update(m)
        Lp, Lm = m["L_meso_plus"], m["L_meso_minus"]
    else:
        errs["L_meso_plus"] = errs["L_meso_minus"] = math.nan
    if "quench" in case.sweep.errors:  # appendix A.3: the quenched glass's patches
        errs.update(C.meso_errors(entries, ref, "initial", "quench"))
    if "macro" in case.sweep.errors:
        errs["L_stat"] = C.stat_error(errs["L_macro"], Lp, Lm)
    elif Lp is not None:
        errs["L_stat"] = 0.5 * (Lp + Lm)
    else:  # quench errors alone: the temperature calibration's score
        errs["L_stat"] = errs.get("L_quench", math.nan)
    return errs


# ============================================================================ scheduling
def work_units(case, todo: list[int]) -> list[tuple[int, int]]:
    """The scheduler's work units of the points ``todo`` (already ordered largest system
    first): ``(point, realization)`` pairs, a point's realizations in order, so that the two
    ranks of a 15-point sweep finish within one realization of each other instead of one
    point; a scalar point is one unit ``(point, -1)`` (its realizations share one model)."""
    if case.model == "scalar":
        return [(i, -1) for i in todo]
    R = realizations_per_point(case)
    return [(i, j) for i in todo for j in range(R)]


def compute_unit(case, points, unit, models: ModelCache, ref, idle=None) -> dict:
    """One work unit: a realization (:func:`realization_unit`) or a whole scalar point."""
    i, j = unit
    if j < 0:
        return compute_point(case, points[i], models, ref, idle)
    return realization_unit(case, points[i], j, models, idle)


class PointCollector:
    """Rank 0: the work units' results as they arrive (any rank, any order); when a point has
    all its realizations they are reduced in realization order (:func:`reduce_point`, the
    serial order: the point does not depend on the number of ranks) and the point file is
    written."""

    def __init__(self, case, points, ref, outdir: Path, log):
        self.case, self.points, self.ref, self.outdir, self.log = case, points, ref, outdir, log
        self.parts: dict[int, dict[int, tuple[dict, int]]] = {}
        self.finished = 0

    def add(self, unit, res: dict, rank: int) -> None:
        from femplast.io.output import write_json

        i, j = unit
        if j >= 0:
            parts = self.parts.setdefault(i, {})
            parts[j] = (res, rank)
            if len(parts) < realizations_per_point(self.case):
                return
            del self.parts[i]
            order = sorted(parts)
            res = reduce_point(self.case, self.points[i], [parts[k][0] for k in order],
                               self.ref)
            res["realization_ranks"] = [parts[k][1] for k in order]
        write_json(point_path(self.outdir, i), res)
        self.finished += 1
        self.log(f"point {i} done in {res['wall_time']:.2f} s")


class Scheduler:
    """Dynamic load balancing: rank 0 owns the queue of work units, computes units itself and
    answers the other ranks' requests (one unit per request) and takes their results whenever
    :meth:`serve` runs (between units and during long ones). The other ranks ask for their
    next unit when they start one, so the answer is waiting when they finish, and send each
    result without waiting for rank 0 to take it."""

    def __init__(self, comm: MPI.Comm, todo: list, log=None, collect=None):
        self.comm, self.todo, self.pos = comm, list(todo), 0
        self.stopped, self.log, self.collect = 0, log, collect
        self.outstanding = 0  # units handed to other ranks whose results are not in
        self._sends: list = []

    def _take(self):
        if self.pos < len(self.todo):
            self.pos += 1
            return self.todo[self.pos - 1]
        return None

    def serve(self, block: bool = False):
        """Rank 0: answer the pending requests, take the arrived results (``block``: wait for
        at least one message)."""
        if self.comm.rank != 0 or self.comm.size == 1:
            return
        st = MPI.Status()
        while block or self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st):
            if block:
                self.comm.Probe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st)
            block = False
            src, tag = st.Get_source(), st.Get_tag()
            if tag == TAG_RESULT:
                unit, res = self.comm.recv(source=src, tag=TAG_RESULT)
                self.outstanding -= 1
                self.collect(tuple(unit), res, src)
                continue
            self.comm.recv(source=src, tag=TAG_REQ)
            u = self._take()
            self.comm.send(u, dest=src, tag=TAG_WORK)
            if u is None:
                self.stopped += 1
                continue
            self.outstanding += 1
            if self.log:
                self.log(f"{unit_name(u)} -> rank {src} ({self.pos}/{len(self.todo)} handed "
                         "out)")

    def units(self):
        """The work units this rank computes, as they are handed out."""
        if self.comm.rank == 0:
            while True:
                self.serve()
                u = self._take()
                if u is None:
                    return
                if self.log:
                    self.log(f"{unit_name(u)} -> rank 0 ({self.pos}/{len(self.todo)} handed "
                             "out)")
                yield u
        else:
            self.comm.send(None, dest=0, tag=TAG_REQ)
            cur = self.comm.recv(source=0, tag=TAG_WORK)
            while cur is not None:
                self.comm.send(None, dest=0, tag=TAG_REQ)  # the next one, ahead
                yield cur
                cur = self.comm.recv(source=0, tag=TAG_WORK)

    def submit(self, unit, res: dict) -> None:
        """A computed unit's result to rank 0's collector (from rank 0: directly)."""
        if self.comm.rank == 0:
            self.collect(unit, res, 0)
            return
        self._sends.append(self.comm.isend((unit, res), dest=0, tag=TAG_RESULT))

    def drain(self):
        """Rank 0: serve until every other rank was told to stop and every unit handed out
        came back; the other ranks: wait until their results were received."""
        if self.comm.rank != 0:
            MPI.Request.waitall(self._sends)
            self._sends = []
            return
        while self.stopped < self.comm.size - 1 or self.outstanding > 0:
            self.serve(block=True)


def unit_name(unit) -> str:
    i, j = unit
    return f"point {i}" if j < 0 else f"point {i} realization {j}"


# ============================================================================ sweep
def point_path(outdir: Path, i: int) -> Path:
    return outdir / "sweep" / "points" / f"p{i:05d}.json"


def read_point(outdir: Path, pt: dict) -> dict | None:
    p = point_path(outdir, pt["point"])
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    same = d.get("point") == pt["point"] and json.dumps(d.get("params"), sort_keys=True) == \
        json.dumps(pt["params"], sort_keys=True)
    return d if same else None


def _plan_doc(case, points) -> dict:
    d = case.to_dict()
    d.pop("name", None)
    d.pop("description", None)
    return dict(case=d, points=points)


def _points_bar(comm, progress, outdir: Path, total: int):
    """The sweep's ``log(msg)`` and, on rank 0, a progress bar of the finished points (any
    rank's finished point is a file in sweep/points) brought up to date at each ``log``.
    Returns ``(finish, log)``: ``finish()`` completes and closes the bar."""
    from femplast.io.output import progress_bar

    log = (lambda m: progress(m, True)) if progress else (lambda m: None)
    if comm.rank != 0:
        return (lambda: None), log
    bar = progress_bar(progress, total, "sweep points", "pt")
    pdir = point_path(outdir, 0).parent

    def logging_bar(msg):
        log(msg)
        bar.set(sum(1 for _ in pdir.glob("*.json")))

    def finish():
        bar.set(total)
        bar.close()

    bar.set(sum(1 for _ in pdir.glob("*.json")))
    return finish, logging_bar


def _compute_units(case, points, todo: list[int], ref, outdir: Path, comm: MPI.Comm,
                   log) -> tuple:
    """This rank's share of the work units (:class:`Scheduler`); rank 0 collects every
    result and writes the point files (:class:`PointCollector`). Returns this rank's
    ``(realizations computed, points written, busy wall s, busy CPU s, start-up CPU s)``."""
    collector = PointCollector(case, points, ref, outdir, log) if comm.rank == 0 else None
    sched = Scheduler(comm, work_units(case, todo), log,
                      collector.add if collector is not None else None)
    models = ModelCache()
    # CPU seconds of this process before its first unit (interpreter, imports, compiled
    # kernels loaded, case): the part of a parallel sweep that does not shrink with ranks
    cpu0 = time.process_time()
    computed, busy, busy_cpu = 0, 0.0, 0.0
    try:
        for unit in sched.units():
            c0, w0 = time.process_time(), time.perf_counter()
            res = compute_unit(case, points, unit, models, ref, idle=sched.serve)
            busy_cpu += time.process_time() - c0
            busy += time.perf_counter() - w0
            computed += 1
            sched.submit(unit, res)
        sched.drain()
    except Interrupted as exc:  # SIGINT/SIGTERM: finished points are saved, --resume goes on
        if comm.size == 1:
            raise  # the command line exits with 130/143
        print(f"femplast: {exc}", file=sys.stderr, flush=True)
        comm.Abort(exc.exit_code)  # the other ranks may wait in the scheduler
    except Exception:  # one failing rank would leave the others waiting forever
        traceback.print_exc()
        comm.Abort(1)
    return computed, collector.finished if collector else 0, busy, busy_cpu, cpu0


def run_sweep(case, outdir: Path, comm: MPI.Comm = MPI.COMM_WORLD, progress=None,
              resume: bool = False) -> dict:
    """Run (or resume) the sweep; returns the summary entries on rank 0 ({} elsewhere)."""
    from femplast.config.case import resolve_path
    from femplast.io.output import write_json

    t0 = time.perf_counter()
    points = plan(case)
    finish_bar, log = _points_bar(comm, progress, outdir, len(points))
    sdir = outdir / "sweep"
    ref = C.read_reference(resolve_path(case, case.sweep.reference)) \
        if case.sweep.reference else None
    err = None
    todo: list[int] = []
    if comm.rank == 0:
        doc = json.loads(json.dumps(_plan_doc(case, points)))
        pf = sdir / "plan.json"
        if pf.is_file():
            old = json.loads(pf.read_text())
            if not resume:
                err = FemplastInputError("--out", str(outdir), "a new directory (it holds a "
                                         "sweep; add --resume to continue it)")
            elif old != doc:
                diff = sorted(k for k in set(old["case"]) | set(doc["case"])
                              if old["case"].get(k) != doc["case"].get(k))
                if old["points"] != doc["points"]:
                    diff.append("points")
                err = FemplastInputError("--resume", str(outdir), "an output directory of the "
                                         f"same sweep (differs in: {', '.join(diff)})")
        if err is None:
            (sdir / "points").mkdir(parents=True, exist_ok=True)
            write_json(pf, doc)
            todo = sorted((p["point"] for p in points if read_point(outdir, p) is None),
                          key=lambda i: -point_cells(case, points[i]))
            log(f"sweep: {len(points)} points x {realizations_per_point(case)} realizations, "
                f"{len(points) - len(todo)} already done, {len(todo)} to run on "
                f"{comm.size} rank(s)")
    err = comm.bcast(None if err is None else (err.key, err.value, err.allowed), root=0)
    if err is not None:
        raise FemplastInputError(*err)
    # PETSc's initialization (first import of petsc4py / dolfinx) is collective on
    # COMM_WORLD: do it on every rank now, not when a rank first builds a model
    import dolfinx  # noqa: F401
    from petsc4py import PETSc  # noqa: F401

    comm.barrier()
    per_rank = _compute_units(case, points, todo, ref, outdir, comm, log)
    finish_bar()
    counts = comm.gather(per_rank, root=0)
    if comm.rank != 0:
        return {}
    results = [read_point(outdir, p) for p in points]
    missing = [p["point"] for p, r in zip(points, results, strict=True) if r is None]
    if missing:
        raise RuntimeError(f"sweep points missing after the run: {missing[:10]}")
    return finish(case, outdir, points, results, ref, wall=time.perf_counter() - t0,
                  per_rank=counts)


# ============================================================================ table + analyses
def table_rows(case, points, results) -> tuple[list[str], list[list]]:
    axes = list(grid_points(case)[0]) if case.sweep.grid else []
    scalar = case.model == "scalar"
    errs = () if scalar else C.ERROR_COLUMNS
    if "quench" in case.sweep.errors and not scalar:  # appendix A.3 calibration
        errs = (*errs, "L_quench_plus", "L_quench_minus", "L_quench")
    stat_cols = SCALAR_STAT_COLUMNS if scalar else STAT_COLUMNS
    cols = ["point", *axes, *errs, *stat_cols]
    rows = []
    for p, r in zip(points, results, strict=True):
        if p["kind"] != "grid":
            continue
        st, er = r["statistics"], r["errors"]
        row = [p["point"], *(p["params"][a] for a in axes)]
        row += [er.get(c, math.nan) for c in errs]
        row += [r["realizations"] if c == "realizations" else st.get(c, math.nan)
                for c in stat_cols]
        rows.append(row)
    return cols, rows


def stress_measure(case) -> tuple[str, str] | None:
    """``(name, meaning)`` of the stresses in a sweep's table when they are not the box's
    external stress: a scalar sweep on a specimen (:data:`SPECIMEN_STRESS`); else None."""
    if case.model == "scalar" and case.mesh.kind == "geometry":
        return SPECIMEN_STRESS
    return None


def write_csv(path: Path, cols, rows, header: list[str]):
    from femplast.io.output import atomic_write_text

    buf = _io.StringIO()
    for h in header:
        buf.write(f"# {h}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([C._fmt(v) if not isinstance(v, (int, str)) else v for v in r])
    atomic_write_text(path, buf.getvalue())


def finish(case, outdir: Path, points, results, ref, wall: float, per_rank) -> dict:
    """Write table.csv / finite_size.csv and build the summary entries."""
    sdir = outdir / "sweep"
    cols, rows = table_rows(case, points, results)
    refnote = "no reference" if ref is None else (
        f"reference {case.sweep.reference}" + (" (SYNTHETIC)" if ref.synthetic else ""))
    header = [f"femplast sweep table of case {case.name}: one row per grid point "
              f"(femplast.app.sweep); {refnote}; errors: {', '.join(case.sweep.errors) or 'none'}"]
    measure = stress_measure(case)
    if measure is not None:
        header.append(f"stresses: {measure[1]}")
    sw = dict(points=len(points), grid_points=len(rows),
              realizations_per_point=realizations_per_point(case), seeds=case.sweep.seeds,
              errors=list(case.sweep.errors), table=str(sdir / "table.csv"),
              wall_time=wall, point_wall_time=float(sum(r["wall_time"] for r in results)),
              ranks=[dict(rank=i, units_computed=u, points_computed=c, busy_time=b,
                          busy_cpu_time=bc, startup_cpu_time=c0)
                     for i, (u, c, b, bc, c0) in enumerate(per_rank)])
    if measure is not None:
        sw["stress_measure"], sw["stress_measure_doc"] = measure
    if rows:
        write_csv(sdir / "table.csv", cols, rows, header)
        table = {c: np.array([r[j] for r in rows], float) for j, c in enumerate(cols)}
        sw["grid"] = {c: sorted(set(table[c].tolist())) for c in grid_points(case)[0]}
        if ref is not None:
            sw["reference"] = dict(path=case.sweep.reference, header=ref.header,
                                   synthetic=ref.synthetic)
            sw.update(optimum(table))
            best = results[int(table["point"][np.nanargmin(table["L_stat"])])] \
                if np.isfinite(table["L_stat"]).any() else None
            if best is not None:
                sw["emergent"] = emergent(best, ref)
    out = dict(sweep=sw)
    fs = [(p, r) for p, r in zip(points, results, strict=True) if p["kind"] == "finite_size"]
    if fs:
        Ls = [r["L"] for _, r in fs]
        sd = [r["statistics"]["sigma_xy_std"] for _, r in fs]
        se = [r["statistics"]["sigma_xy_std_err"] for _, r in fs]
        fit = C.finite_size_fit(Ls, sd, se)
        write_csv(sdir / "finite_size.csv", ("n", "L", "std_sigma_xy", "std_sigma_xy_err",
                                             "sigma_xy_mean", "realizations"),
                  [[p["params"]["mesh.n"], r["L"], r["statistics"]["sigma_xy_std"],
                    r["statistics"]["sigma_xy_std_err"], r["statistics"]["sigma_xy_mean"],
                    r["realizations"]] for p, r in fs],
                  [f"femplast finite-size scaling of case {case.name}: std of the stationary "
                   f"external stress per system size; fit std ~ L^a: a = "
                   f"{fit['exponent']:.4g} +- {fit['exponent_err']:.2g}"])
        out["finite_size"] = dict(n=[p["params"]["mesh.n"] for p, _ in fs], L=Ls,
                                  std_sigma_xy=sd, std_sigma_xy_err=se, **fit)
    return out


def optimum(table: dict[str, np.ndarray]) -> dict:
    """Best row, per-k best rows (by L_stat and by L_macro) and the parabola optimum."""
    out = {}
    ok = np.isfinite(table["L_stat"])
    if not ok.any():
        return out
    i = int(np.nanargmin(table["L_stat"]))
    out["best"] = {c: float(v[i]) for c, v in table.items()}
    if "k" in table:
        others = {c: table[c] for c in ("lambda", "chi") if c in table}
        for by in ("L_stat", "L_macro"):
            if not np.isfinite(table[by]).any():
                continue
            b = C.best_per_k(table, by)
            out[f"best_per_k_{by}"] = [
                {c: float(b[c][j]) for c in ("k", *others, "L_macro", "L_meso_plus",
                                              "L_meso_minus", "L_stat")}
                for j in range(len(b["k"]))]
        b = C.best_per_k(table, "L_stat")
        out["optimum"] = C.parabola_optimum(b["k"], b["L_stat"],
                                            {c: b[c] for c in others})
    return out


def emergent(res: dict, ref: C.Reference) -> dict:
    """Emergent observables of one point next to the reference's (sec. 5)."""
    out = dict(point=res["point"], params=res["params"], rms=res["statistics"]["rms"])
    if ref.rms is not None:
        r = np.asarray(res["statistics"]["rms"]["r"], float)
        if len(r) == len(ref.rms["r"]):
            out["rms_reference"] = dict(dgamma=ref.rms["dgamma"].tolist(),
                                        r=ref.rms["r"].tolist())
            out["rms_relative_deviation"] = float(np.sqrt(np.nanmean(
                (r / ref.rms["r"] - 1.0) ** 2)))
    if res["patches"]:
        out["drop_vs_yield"] = C.drop_vs_yield(res["patches"])
    if ref.local:
        out["drop_vs_yield_reference"] = C.drop_vs_yield(ref.local)
    return out


# ============================================================================ synthetic reference
def make_reference(case, outdir: Path, finite_size=(), note: str = "") -> Path:
    """A SYNTHETIC reference set made by femplast at the case's base parameters (slip section),
    ``run.realizations`` realizations with seeds ``SeedSequence([run.seed, j])``: macro.csv
    (histograms on :func:`femplast.analysis.calibration.default_edges` bins), local.csv (every patch
    state, size and orientation of the case's ``patches:``), rms.csv, and finite_size.csv
    when ``finite_size`` lists mesh.n values. Header lines say it is synthetic."""
    from femplast.config.case import case_from_dict, yaml
    from femplast.version import __version__

    d = case.to_dict()
    d["sweep"] = {"enabled": False}
    base = case_from_dict(d, source=case.source)
    base.name = case.name
    models = ModelCache()
    res = compute_point(base, dict(point=0, kind="grid", params={}), models, None,
                        keep_samples=True)
    m, s, ld, pa = base.mesh, base.slip, base.loading, base.patches
    header = [
        "SYNTHETIC reference data made by femplast (reference/make_synthetic.py), NOT "
        "atomistic data: a stand-in to exercise and test the calibration",
        f"femplast {__version__}; tensorial EPM, {m.kind} mesh {m.n} x {m.n}, "
        f"L = {m.L:g}, l = {m.L / m.n:.4g}, N = {res_N(models, base)}, G = "
        f"{base.elasticity.G:g}, B = {base.elasticity.B:g}",
        f"parameters: k = {s.weibull_k:g}, lambda = {s.weibull_lambda:g}, chi = {s.chi:g}; "
        f"AQS alpha_ext = {ld.alpha_ext:g}, dgamma_ext = {ld.dgamma_ext:g}, gamma_max = "
        f"{ld.gamma_max:g}, stationary gamma_ext > {ld.stationary_from:g}",
        f"{base.run.realizations} realizations, seeds SeedSequence([{base.run.seed}, j])",
    ]
    if pa.enabled:
        header.append(f"patches: {pa.shape} n = {pa.n}, alpha = {pa.alpha}, initial = "
                      f"{pa.initial}, stationary pooled over gamma_ext = {pa.gamma_ext}")
    if note:
        header.append(note)
    macro = {}
    for q in C.MACRO_QUANTITIES:
        v = res["samples"][q]
        e = C.default_edges(q, v)
        macro[q] = C.Histogram(e, C.density(v, e))
    local = None
    if res["patches"]:
        local = [C._flat(e) for e in res["patches"] if e["state"] in ("initial", "stationary")]
        local.sort(key=lambda r: (r["state"], r["R"], r["alpha"]))
    rms = res["statistics"]["rms"]
    fs = None
    if finite_size:
        rows = []
        for n in finite_size:
            pt = dict(point=0, kind="finite_size",
                      params={"mesh.n": n, "mesh.L": float(f"{m.L / m.n * n:.12g}")})
            r = compute_point(base, pt, models, None)
            rows.append((r["L"], r["statistics"]["sigma_xy_std"],
                         r["statistics"]["sigma_xy_std_err"]))
        fs = dict(zip(("L", "std_sigma_xy", "std_sigma_xy_err"),
                      (np.array(c) for c in zip(*rows, strict=True)), strict=True))
    path = C.write_reference(outdir, header, macro, local,
                             dict(dgamma=np.asarray(rms["dgamma"]), r=np.asarray(rms["r"])), fs)
    (path / "resolved_case.yaml").write_text(
        "# SYNTHETIC reference: the femplast case that made this set\n"
        + yaml.safe_dump(base.to_dict(), sort_keys=False))
    return path


def res_N(models: ModelCache, pcase) -> int:
    return models.get(point_case(pcase, dict(point=0, kind="grid", params={}))).params.N
