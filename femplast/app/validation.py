"""The one validation pass of a case: what ``--check`` runs, and what every run runs before it
writes anything.

It collects the problems of every check (the schema's, each feature's, the sweep's and those
below) and reports them together (:class:`femplast.errors.FemplastInputErrors`, one line per
problem). Beyond the schema it checks

- names that become paths (``name``: no directory parts);
- physical sanity: moduli, thresholds and amplitudes in ranges where the numbers of the model
  stay finite, the box size against the cell count (slip systems per cell), thresholds of the
  scalar model >= 0;
- referenced files, opened and read: ``initial.state`` (HDF5 'state' group, shapes, finite),
  ``mesh.file`` (a square periodic gmsh mesh), sweep reference data (by the sweep's check);
- sweep grids element by element (every value of every axis makes a valid case, sanity and
  resources included) and their size;
- an estimate of memory and work, refused with the estimate and the limit (the machine's
  memory, or ``run.max_memory_gb``).
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from femplast.config.case import Case, resolve_path
from femplast.errors import FemplastInputError, FemplastInputErrors

MAX_MODULUS = 1e6  # LJ stress; moduli of LJ glasses are O(10)
MAX_YIELD_STRAIN = 10.0  # weibull_lambda / G: a local yield strain beyond 10 is not small-strain
SHAPE_RANGE = (0.1, 1e3)  # Weibull / gamma shapes: below 0.1 the thresholds span 1e-30..1e30
MAX_CHI = 1e3
MAX_STRAIN_STEPS = 10**8  # strain increments of one realization (AQS work)
MAX_GRID_POINTS = 100000
MIN_SYSTEMS = 2.0  # rho_s l^2 below this: the default N = 4 is not what the density says
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,@ -]{0,199}")


def problem(key: str, value, allowed: str) -> FemplastInputError:
    return FemplastInputError(key, value, allowed)


# ----------------------------------------------------------------------------- checks
def check_name(case: Case) -> list:
    """The case name becomes runs/<name>: a plain file name, no directory parts."""
    name = case.name
    if name is None or (NAME.fullmatch(name) and name.strip(". ") == name.strip()
                        and name not in (".", "..")):
        return []
    return [problem("name", name, "a plain name (letters, digits, ' _.+=,@-', not starting "
                    "with '.' or '-', no '/'): the output goes to runs/<name>")]


def check_sanity(case: Case) -> list:
    """Ranges where the model's numbers stay finite and meaningful."""
    out = []
    el = case.elasticity
    for k in ("G", "B"):
        if getattr(el, k) > MAX_MODULUS:
            out.append(problem(f"elasticity.{k}", getattr(el, k), f"<= {MAX_MODULUS:g} LJ "
                               "stress (moduli of LJ glasses are O(10))"))
    if not out and (el.B / el.G > MAX_MODULUS or el.G / el.B > MAX_MODULUS):
        out.append(problem("elasticity.B", el.B, f"within a factor {MAX_MODULUS:g} of "
                           f"elasticity.G = {el.G:g}"))
    if case.model in ("tensorial", "quench"):
        out += _check_tensorial(case)
    if case.model == "inclusion":
        for k in ("eps0", "gamma_ext"):
            if abs(getattr(case.inclusion, k)) > 1:
                out.append(problem(f"inclusion.{k}", getattr(case.inclusion, k),
                                   "in [-1, 1] (linear elasticity: small strains)"))
    if case.model == "scalar":
        out += _check_scalar(case)
    lo = case.loading
    if case.model != "inclusion" and not case.stages and \
            lo.gamma_max / lo.dgamma_ext > MAX_STRAIN_STEPS:
        out.append(problem("loading.gamma_max", lo.gamma_max, f"<= {MAX_STRAIN_STEPS:.0e} "
                           f"strain increments of loading.dgamma_ext = {lo.dgamma_ext:g} "
                           f"(asked: {lo.gamma_max / lo.dgamma_ext:.3g})"))
    for i, sg in enumerate(case.stages):
        dg = sg.dgamma_ext or lo.dgamma_ext
        if sg.gamma is not None and sg.gamma / dg > MAX_STRAIN_STEPS:
            out.append(problem(f"stages[{i}].gamma", sg.gamma, f"<= {MAX_STRAIN_STEPS:.0e} "
                               f"strain increments of {dg:g}"))
        if sg.stress is not None and abs(sg.stress) > MAX_MODULUS:
            out.append(problem(f"stages[{i}].stress", sg.stress, f"|stress| <= "
                               f"{MAX_MODULUS:g} LJ stress"))
    return out


def _check_tensorial(case: Case) -> list:
    out = []
    el, sl, v = case.elasticity, case.slip, case.variant
    G = v.G_mean if v.moduli == "weibull" or v.model == "A" else el.G
    if sl.weibull_lambda / G > MAX_YIELD_STRAIN:
        out.append(problem("slip.weibull_lambda", sl.weibull_lambda, f"<= {MAX_YIELD_STRAIN:g} "
                           f"G = {MAX_YIELD_STRAIN * G:g} (a local yield strain "
                           f"weibull_lambda / G of at most {MAX_YIELD_STRAIN:g})"))
    shapes = [("slip.weibull_k", sl.weibull_k), ("variant.G_shape", v.G_shape),
              ("variant.k_ss", v.k_ss)]
    for k, x in shapes:
        if x is not None and not SHAPE_RANGE[0] <= x <= SHAPE_RANGE[1]:
            out.append(problem(k, x, f"in [{SHAPE_RANGE[0]:g}, {SHAPE_RANGE[1]:g}] (a Weibull "
                               "shape outside spans thresholds over tens of decades)"))
    if sl.chi > MAX_CHI:
        out.append(problem("slip.chi", sl.chi, f"<= {MAX_CHI:g}"))
    for k in ("G_mean", "G_ss", "lambda_ss", "tau_c", "p_mean"):
        x = getattr(v, k)
        if x is not None and abs(x) > MAX_MODULUS:
            out.append(problem(f"variant.{k}", x, f"|value| <= {MAX_MODULUS:g} LJ stress"))
    if v.d_gamma_pl > 1:
        out.append(problem("variant.d_gamma_pl", v.d_gamma_pl, "<= 1 (small strains)"))
    m = case.mesh
    if m.kind != "gmsh" and sl.N is None:
        l2 = (m.L / m.n) ** 2
        if sl.rho_s * l2 < MIN_SYSTEMS:
            out.append(problem("mesh.L", m.L, f"a cell size l = L / n with rho_s l^2 >= "
                               f"{MIN_SYSTEMS:g} slip systems (here l = {m.L / m.n:.3g}, "
                               f"rho_s l^2 = {sl.rho_s * l2:.3g}); or give slip.N"))
    if m.kind == "gmsh" and m.size is not None and m.size > m.L:
        out.append(problem("mesh.size", m.size, f"<= mesh.L = {m.L:g}"))
    if case.kmc.enabled or case.model == "quench":
        if case.kmc.Va / case.kmc.temperature > 1e4:
            out.append(problem("kmc.temperature", case.kmc.temperature, f">= kmc.Va / 1e4 = "
                               f"{case.kmc.Va / 1e4:g} (rates exp(-dtau_c Va / kB T) "
                               "underflow)"))
    return out


def _check_scalar(case: Case) -> list:
    """Thresholds of the scalar model are >= 0 (the stress to reach is a distance)."""
    from femplast.scalar.distributions import TABLE, UNIFORM
    from femplast.scalar.model import distributions_from_case

    out = []
    try:
        dists = distributions_from_case(case)
    except FemplastInputError:
        return []  # reported by the scalar model's own check
    for key, d in zip(("scalar.thresholds", "scalar.renewal"), dists, strict=True):
        if d is None:
            continue
        low = float(d.tx[0]) if d.kind == TABLE else float(d.par[0]) if d.kind == UNIFORM \
            else 0.0
        if low < 0:
            out.append(problem(key, d.name, f"thresholds >= 0 (lowest here: {low:g})"))
    return out


def check_files(case: Case) -> list:
    """Referenced files exist, open and hold what the run will read."""
    out = []
    if case.initial.state is not None and case.model in ("tensorial", "quench"):
        out += _check_state_file(case)
    if case.mesh.kind == "gmsh" and case.mesh.file is not None:
        out += _check_msh(case)
    return out


def expected_cells(case: Case) -> int | None:
    m = case.mesh
    return m.n * m.n if m.kind == "quad" else 2 * m.n * m.n if m.kind == "tri" else None


def _check_state_file(case: Case) -> list:
    import h5py

    key, path = "initial.state", resolve_path(case, case.initial.state)
    want = "an HDF5 file femplast wrote with a 'state' group (stress, theta, tau_c)"
    try:
        with h5py.File(path, "r") as f:
            g = f["state"]
            arrays = {k: np.asarray(g[k], float) for k in ("stress", "theta", "tau_c")}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return [problem(key, str(path), f"{want} ({' '.join(str(exc).split())[:120]})")]
    sig, theta, tauc = arrays["stress"], arrays["theta"], arrays["tau_c"]
    if sig.ndim != 2 or sig.shape[1] != 3 or theta.ndim != 2 or theta.shape != tauc.shape \
            or theta.shape[0] != sig.shape[0]:
        return [problem(key, str(path), f"{want}: stress (cells, 3), theta and tau_c "
                        f"(cells, N); found {sig.shape}, {theta.shape}, {tauc.shape}")]
    nc = expected_cells(case)
    if nc is not None and sig.shape[0] != nc:
        return [problem(key, str(path), f"a state of {nc} cells (mesh.n = {case.mesh.n}, "
                        f"{case.mesh.kind}); the file has {sig.shape[0]}")]
    if case.slip.N is not None and theta.shape[1] != case.slip.N:
        return [problem(key, str(path), f"a state with slip.N = {case.slip.N} systems per "
                        f"cell; the file has {theta.shape[1]}")]
    # tau_c = +inf: a column that is no system (fewer systems in a cell: slip.reference_area,
    # variant.N_fluctuation); every cell needs at least one finite threshold
    if not (np.isfinite(sig).all() and np.isfinite(theta).all()) or np.isnan(tauc).any() \
            or (tauc <= 0).any() or not np.isfinite(tauc).any(axis=1).all():
        return [problem(key, str(path), "finite stresses and angles and thresholds tau_c > 0 "
                        "(+inf: an unused system; at least one finite per cell; the file has "
                        "NaN/inf or non-positive thresholds)")]
    return []


def _check_msh(case: Case) -> list:
    """The gmsh file opens, is 2D, square, and its boundary nodes come in periodic pairs."""
    key, path = "mesh.file", resolve_path(case, case.mesh.file)
    try:
        x = _msh_nodes(path)
    except Exception as exc:  # gmsh raises plain Exception on unreadable files
        return [problem(key, str(path), f"a gmsh .msh file gmsh can read "
                        f"({' '.join(str(exc).split())[:120]})")]
    if x is None:
        return [problem(key, str(path), "a gmsh mesh with a 2D physical group (femplast "
                        "reads the cells of physical groups; see femplast.fe.mesh)")]
    if x.shape[0] < 3:
        return [problem(key, str(path), "a 2D gmsh mesh of triangles (no nodes found)")]
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = hi - lo
    if abs(hi[2] - lo[2]) > 0 or np.any(np.abs(lo[:2]) > 1e-8 * span.max()):
        return [problem(key, str(path), "a 2D mesh of the square [0, L]^2 (z = 0, corner at "
                        f"the origin); found bounds {lo.tolist()} .. {hi.tolist()}")]
    if abs(span[0] - span[1]) > 1e-8 * span.max():
        return [problem(key, str(path), f"a square box; found {span[0]:g} x {span[1]:g}")]
    missing = periodic_twins_missing(x[:, :2], float(span[0]))
    if missing:
        return [problem(key, str(path), f"a periodic mesh of the square [0, L]^2: {missing} "
                        "boundary nodes have no periodic twin (build it with gmsh "
                        "setPeriodic)")]
    return []


def _msh_nodes(path) -> np.ndarray:
    from femplast.fe.mesh import gmsh_session  # gmsh and MPI only: no dolfinx, no numba

    with gmsh_session() as gmsh:
        gmsh.model.add("femplast_check")
        gmsh.merge(str(path))
        _, coords, _ = gmsh.model.mesh.getNodes()
        if len(gmsh.model.mesh.getElementTypes(2)) == 0:
            raise ValueError("no 2D elements")
        if not gmsh.model.getPhysicalGroups(2):
            return None
        return np.asarray(coords, float).reshape(-1, 3)


def periodic_twins_missing(x: np.ndarray, L: float) -> int:
    """Boundary nodes on the right/top side without a twin on the left/bottom side (the
    same rule as femplast.fe.mesh.check_periodic_nodes, on raw node coordinates)."""
    from scipy.spatial import cKDTree

    tol = 1e-8 * L
    bad = 0
    for side, shift in ((0, (L, 0.0)), (1, (0.0, L))):
        twins = x[np.abs(x[:, side]) < tol]
        pts = x[np.abs(x[:, side] - L) < tol] - np.array(shift)
        if len(pts) and len(twins):
            d, _ = cKDTree(twins).query(pts)
            bad += int(np.sum(d > 1e-6 * L))
        else:
            bad += max(len(pts), 1)
    return bad


# ----------------------------------------------------------------------------- resources
def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def estimate(case: Case) -> dict:
    """Peak memory of one process in bytes, by contribution ``{key: bytes}`` (an upper
    estimate: state arrays, the FE problem, the redistribution operator, the records)."""
    from femplast.redistribution.backends import DenseRedistribution, dense_budget_mb

    m = case.mesh
    if m.kind == "gmsh":
        size = m.size if m.size is not None else (m.L / m.n if m.file is None else None)
        nc = 2.4 * (m.L / size) ** 2 if size else 0.0  # ~2.3 triangles per size^2
        l2 = m.L * m.L / nc if nc else 1.0
    elif m.kind == "geometry":  # a specimen (femplast.fe.geometry): its bounding box
        g = case.geometry
        per = 1.0 if g.element == "quad" else 0.43  # measured cell area / size^2
        nc = 0.0 if g.shape == "file" else g.width * g.height / (per * g.size ** 2)
        l2 = per * g.size ** 2
    else:
        nc = float(expected_cells(case))
        l2 = (m.L / m.n) ** 2 / (2 if m.kind == "tri" else 1)
    if case.model == "scalar":
        N = 1
    else:
        N = case.slip.N or max(4, 4 * round(case.slip.rho_s * l2 / 4))
    # per cell: the FE problem and caches (~4 kB) and 8 arrays over the slip systems
    cells_key = "slip.N" if case.slip.N is not None and N * 64 > 4096 else \
        "mesh.size" if m.kind == "gmsh" else "geometry.size" if m.kind == "geometry" \
        else "mesh.n"
    est = {cells_key: nc * (4096.0 + N * 64.0)}
    be = case.redistribution.backend
    dense = DenseRedistribution.memory_bytes(int(nc)) if nc < 1e9 else math.inf
    if case.model == "scalar":  # one resolved component of the six (femplast.scalar.specimen)
        dense /= 6
    if be == "dense" or (be == "auto" and (m.kind != "quad" or _per_cell_moduli(case))
                         and dense <= dense_budget_mb(case.redistribution.dense_memory_mb)[0]
                         * 2**20):
        est["redistribution.backend"] = float(dense)
    if case.model != "inclusion" and not case.stages:  # the steps table: 16 numbers a step
        est["loading.gamma_max"] = case.loading.gamma_max / case.loading.dgamma_ext * 128.0
    for i, sg in enumerate(case.stages):
        est[f"stages[{i}].gamma"] = (sg.gamma or 1.0) / (sg.dgamma_ext or
                                                         case.loading.dgamma_ext) * 128.0
    if case.model in ("tensorial", "quench") and (case.kmc.enabled or case.model == "quench"):
        est["kmc.max_events"] = case.kmc.max_events * 8 * 8.0
    return est


def _per_cell_moduli(case: Case) -> bool:
    """Whether the case's tensorial variant draws per-cell moduli (auto takes dense then)."""
    if case.model != "tensorial":
        return False
    from femplast.tensorial.variants import resolve

    return resolve(case.variant)["moduli"] == "weibull"


def check_resources(case: Case) -> list:
    """Refuse a case whose memory estimate exceeds the limit."""
    dense = case.redistribution.backend == "dense"
    out = []
    est = estimate(case)
    if dense:
        from femplast.redistribution.backends import dense_budget_mb

        need = est.get("redistribution.backend", 0.0) / 2**20
        budget, why = dense_budget_mb(case.redistribution.dense_memory_mb)
        if need > budget:
            mb = case.redistribution.dense_memory_mb
            out.append(problem("redistribution.dense_memory_mb", "null" if mb is None else mb,
                               f">= {need:.0f} MiB for the dense operator of this mesh "
                               f"(budget: {why}; or redistribution.backend: auto)"))
            return out  # the total would only repeat it
    total = sum(est.values())
    limit = (case.run.max_memory_gb * 2**30 if case.run.max_memory_gb is not None
             else machine_memory_bytes())
    if total > limit:
        worst = max(est, key=est.get)
        src = ("run.max_memory_gb" if case.run.max_memory_gb is not None
               else "this machine's memory; raise it with run.max_memory_gb")
        out.append(problem(worst, _value_of(case, worst), f"a case that fits in memory: "
                           f"estimated {total / 2**30:.3g} GiB (mostly {worst}) > limit "
                           f"{limit / 2**30:.3g} GiB ({src})"))
    return out


def _value_of(case: Case, dotted: str):
    obj = case
    for p in dotted.split("."):
        name, _, idx = p.partition("[")
        obj = getattr(obj, name)
        if idx:
            obj = obj[int(idx.rstrip("]"))]
    return obj


# ----------------------------------------------------------------------------- sweeps
def check_grid(case: Case) -> list:
    """Grid size and every value of every axis (the sweep's own check tries the ends)."""
    from femplast.app import sweep

    sw = case.sweep
    if not sw.enabled or not (sw.grid or sw.finite_size):
        return []
    try:
        axes = {sweep.column(k): sweep.axis_values(spec, str(k)) for k, spec in sw.grid.items()}
    except FemplastInputError as exc:
        return [exc]
    total = math.prod(len(v) for v in axes.values()) if axes else 0
    if total + len(sw.finite_size) > MAX_GRID_POINTS:
        return [problem("sweep.grid", f"{total} points", f"at most {MAX_GRID_POINTS} points "
                        "(the product of the axis lengths)")]
    out = []
    first = {a: v[0] for a, v in axes.items()}
    trials = [(f"sweep.grid.{a}", x, dict(point=0, kind="grid", params=dict(first, **{a: x})))
              for a, vals in axes.items() for x in dict.fromkeys(vals)]
    trials += [("sweep.finite_size", p["params"]["mesh.n"], p) for p in sweep.plan(case)
               if p["kind"] == "finite_size"]
    for key, value, pt in trials:
        try:
            pc = sweep.point_case(case, pt)
            errs = check_sanity(pc) or check_resources(pc)
        except FemplastInputError as exc:
            errs = FemplastInputErrors.flatten(exc)
        for e in errs:
            if e.key.startswith("sweep."):
                out.append(e)
            else:  # name the grid value that makes the point invalid
                out.append(problem(key, value, f"a value making {e.key} valid: {e.allowed}"))
        if len(out) >= 10:  # enough to fix; the grid may be long
            break
    return out


# ----------------------------------------------------------------------------- the pass
CHECKS = (check_name, check_sanity, check_files, check_resources, check_grid)


def validate(case: Case, feature_checks=()) -> Case:
    """Run ``feature_checks`` (each raising on its first problem) and the checks above
    (collecting all theirs); raise every problem at once."""
    problems: list[FemplastInputError] = []
    for check in feature_checks:
        try:
            check(case)
        except FemplastInputError as exc:
            problems += FemplastInputErrors.flatten(exc)
    for check in CHECKS:
        if check is check_grid and any(p.key.startswith("sweep.") for p in problems):
            continue  # the grid's own problems come first
        if check is check_resources and problems:
            continue  # an estimate of an invalid case means nothing
        try:
            problems += check(case)
        except FemplastInputError as exc:
            problems += FemplastInputErrors.flatten(exc)
        except (ArithmeticError, ValueError, TypeError):
            if not problems:  # a bug unless an earlier problem explains it
                raise
    if problems:
        unique = list({str(p): p for p in problems}.values())
        raise FemplastInputErrors(unique)
    return case
