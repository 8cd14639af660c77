"""Read what a femplast output directory holds, without importing the solver layers.

Formats read (see ``docs/architecture.md`` and :mod:`femplast.postprocess`):

* ``summary.json`` (optional: a run still being written has none);
* ``realizations/rNNNN.h5``: ``steps/`` (``gamma_ext`` and ``stress`` [xx, yy, xy] or a scalar
  stress; any further 1-D per-step dataset such as ``eps_pl``, ``n_events``, ``LOC``,
  ``plastic_strain_variance``, ``mean_threshold``, ``internal_stress_std``), ``avalanches/``,
  ``state/`` (attrs ``alpha_ext`` in degrees), ``events/`` (``--event-log``);
* ``stages/<stage>/realizations/rNNNN.h5`` (Bauschinger tests), same layout;
* ``patches/rNNNN.h5``: 1-D datasets, one entry per patch test (``state``, ``R``,
  ``alpha_deg``, ``tau_i``, ``tau_c``, ``dtau_c``, ``delta_tau_c``, ``sigma_vm``);
* a calibration sweep table (CSV or HDF5) with columns ``k, lambda, chi, L_macro, L_meso_plus,
  L_meso_minus, L_stat`` (optional ``l``);
* ``fields/*.xdmf`` (+ ``.h5``) cell-field time series.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from femplast.angles import drive_direction_deg

PATCH_QUANTITIES = ("sigma_vm", "tau_i", "tau_c", "dtau_c", "delta_tau_c")
CALIBRATION_COLUMNS = ("k", "lambda", "chi", "L_macro", "L_meso_plus", "L_meso_minus", "L_stat")
SCALAR_OBSERVABLES = ("LOC", "plastic_strain_variance", "mean_threshold", "internal_stress_std")
# other spellings accepted for the same quantities (femplast.scalar.model record names, patches.py)
ALIASES = {"loc": "LOC", "eps_pl_var": "plastic_strain_variance", "tau_c_mean": "mean_threshold",
           "sigma_std": "internal_stress_std", "von_mises": "sigma_vm", "alpha": "alpha_deg"}


class NoRunError(ValueError):
    """The directory holds no femplast output the plotter knows."""


@dataclass
class Realization:
    """One realization file: per-step table, avalanches, event log, loading angle."""

    name: str
    gamma: np.ndarray
    stress: np.ndarray | None  # (n, 3) [xx, yy, xy] or (n,) scalar
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # every steps/ dataset
    avalanches: dict[str, np.ndarray] | None = None
    events: dict[str, np.ndarray] | None = None
    alpha_deg: float = 0.0

    @property
    def uniform_steps(self) -> bool:
        """Fixed strain increments (AQS steps), not one row per avalanche."""
        d = np.diff(self.gamma)
        return len(d) > 0 and bool(np.allclose(d, d[0], rtol=1e-6, atol=1e-12))

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(gamma, resolved stress) for a stress-strain plot; with one row per avalanche and a
        ``stress_before`` column, the loading peaks are interleaved (saw-tooth)."""
        s = self.resolved()
        if "stress_before" not in self.steps:
            return self.gamma, s
        b = self.resolved(self.steps["stress_before"])
        return np.repeat(self.gamma, 2), np.column_stack([b, s]).ravel()

    @property
    def stress_measure(self) -> str | None:
        """What :meth:`resolved` returns on a specimen: ``nominal`` (grip force per grip
        length, one driven grip), ``drive`` (grip force conjugate to gamma_ext per area: the
        tensorial model's ``drive_stress``, the scalar model's ``stress``), None on the box
        (the resolved external stress, Sigma_xy at alpha_ext = 0)."""
        if "nominal_stress" in self.steps:
            return "nominal"
        return "drive" if "drive_stress" in self.steps or "force" in self.steps else None

    @property
    def tensorial(self) -> bool:
        return self.stress is not None and self.stress.ndim == 2

    def resolved(self, stress: np.ndarray | None = None) -> np.ndarray:
        """External stress resolved on the loading direction ``alpha_ext`` (= Sigma_xy for
        alpha_ext = 0): ``sin(2 a) (S_yy - S_xx) / 2 + cos(2 a) S_xy``; a scalar stress as is.
        A specimen driven by its grips: its nominal stress (``steps/nominal_stress``: grip
        force per unit grip length, one driven boundary), else the stress conjugate to the
        drive (``steps/drive_stress``: grip work per unit gamma_ext / area), times the drive
        direction of ``alpha_ext`` (90: driven backward; femplast.protocols.stages
        .resolved_stress): a reversed stage's stress rises as the pipeline controls it."""
        for key in ("nominal_stress", "drive_stress"):
            if stress is None and key in self.steps:
                return (drive_direction_deg(self.alpha_deg or 0.0) or 1) * self.steps[key]
        s = self.stress if stress is None else stress
        if s is None:
            raise ValueError(f"{self.name}: no stress")
        if s.ndim == 1:
            return s
        a = np.deg2rad(2 * self.alpha_deg)
        return np.sin(a) * 0.5 * (s[:, 1] - s[:, 0]) + np.cos(a) * s[:, 2]

    def drops(self) -> np.ndarray:
        """Stress drops of the avalanches (resolved, positive = drop); from the steps table
        (negative per-step increments) when the file has no avalanche table."""
        av = self.avalanches
        if av and "nominal_stress_before" in av:  # a specimen: its nominal stress
            return np.asarray(av["nominal_stress_before"]) - np.asarray(av["nominal_stress_after"])
        if av and "stress_before" in av and len(av["stress_before"]):
            return self.resolved(av["stress_before"]) - self.resolved(av["stress_after"])
        if av and "drop_xy" in av:
            return np.asarray(av["drop_xy"])
        if "stress_before" in self.steps:  # one row per avalanche (scalar model)
            return self.resolved(self.steps["stress_before"]) - self.resolved()
        inc = np.diff(self.resolved())
        return -inc[inc < 0]

    def avalanche_stress(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(gamma_ext, resolved stress before, after) of each avalanche, when recorded (the
        input of femplast.analysis.calibration.avalanche_samples)."""
        av = self.avalanches
        if av and "nominal_stress_before" in av:  # a specimen: its nominal stress
            return (np.asarray(av["gamma_ext"]), np.asarray(av["nominal_stress_before"]),
                    np.asarray(av["nominal_stress_after"]))
        if av and "stress_before" in av and "gamma_ext" in av:
            return (np.asarray(av["gamma_ext"]), self.resolved(av["stress_before"]),
                    self.resolved(av["stress_after"]))
        if "stress_before" in self.steps:  # one row per avalanche (scalar model)
            return self.gamma, self.resolved(self.steps["stress_before"]), self.resolved()
        return None

    def drop_gamma(self) -> np.ndarray:
        av = self.avalanches
        if av and "gamma_ext" in av:
            return np.asarray(av["gamma_ext"])
        if "stress_before" in self.steps:
            return self.gamma
        inc = np.diff(self.resolved())
        return self.gamma[1:][inc < 0]

    def sizes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(gamma_ext, size) of the avalanches, when recorded."""
        av = self.avalanches
        if av and "size" in av and "gamma_ext" in av:
            return np.asarray(av["gamma_ext"]), np.asarray(av["size"])
        if "size" in self.steps:
            return self.gamma, self.steps["size"]
        return None


def _read_group(g) -> dict[str, np.ndarray]:
    import h5py

    return {k: np.asarray(v) for k, v in g.items() if isinstance(v, h5py.Dataset)}


def read_realization(path: Path) -> Realization:
    import h5py

    with h5py.File(path, "r") as f:
        if "steps" not in f:
            raise NoRunError(f"{path}: no 'steps' group")
        steps = _read_group(f["steps"])
        for a, k in ALIASES.items():
            if a in steps and k not in steps:
                steps[k] = steps[a]
        alpha = 0.0
        if "state" in f and "alpha_ext" in f["state"].attrs:
            alpha = float(f["state"].attrs["alpha_ext"])
        elif "alpha_ext" in f.attrs:
            alpha = float(f.attrs["alpha_ext"])
        av = _read_group(f["avalanches"]) if "avalanches" in f else None
        ev = _read_group(f["events"]) if "events" in f else None
    gamma = steps.get("gamma_ext")
    if gamma is None:
        raise NoRunError(f"{path}: steps/ has no gamma_ext")
    return Realization(path.stem, gamma, steps.get("stress"), steps, av, ev, alpha)


def read_realizations(folder: Path) -> list[Realization]:
    return [read_realization(p) for p in sorted(folder.glob("r*.h5"))]


def ensemble(reals: list[Realization], key: str | None = None):
    """(gamma, values[realization, step]) on the common prefix of the step grids; ``key`` is a
    steps dataset (1-D) or None for the resolved stress."""
    rows = []
    for r in reals:
        if key is None:
            if r.stress is None:
                continue
            rows.append((r.gamma, r.resolved()))
        elif key in r.steps and r.steps[key].ndim == 1:
            rows.append((r.gamma, r.steps[key]))
    if not rows:
        return None, None
    n = min(len(v) for _, v in rows)
    g0 = rows[0][0][:n]
    if all(np.allclose(g[:n], g0) for g, _ in rows):
        return g0, np.vstack([v[:n] for _, v in rows])
    # irregular strains (one row per avalanche): interpolate on a common grid
    top = min(float(g[-1]) for g, _ in rows)
    grid = np.linspace(max(float(g[0]) for g, _ in rows), top, 500)
    return grid, np.vstack([np.interp(grid, g, v) for g, v in rows])


def _patch_tables(f, stationary_from: float | None) -> list[dict[str, np.ndarray]]:
    """Rows of the layout femplast.analysis.patches writes: groups ``s<i>`` (attrs ``label``,
    ``gamma_ext``) holding one group per patch size (attr ``R``) with (position, alpha)
    arrays ``tau_i, tau_c, dtau_c, delta_tau_c``, per-position ``von_mises``, ``alpha`` and
    ``complete``. Probes at ``gamma_ext >= stationary_from`` are also pooled as 'stationary'."""
    import h5py

    out = []
    for sg in f.values():
        if not isinstance(sg, h5py.Group):
            continue
        label = sg.attrs.get("label", sg.name.strip("/"))
        label = label.decode() if isinstance(label, bytes) else str(label)
        gx = float(sg.attrs.get("gamma_ext", np.nan))
        labels = [label]
        if stationary_from is not None and label != "initial" and gx >= stationary_from:
            labels.append("stationary")
        for t in sg.values():
            if not (isinstance(t, h5py.Group) and "tau_c" in t and "alpha" in t):
                continue
            alpha = np.asarray(t["alpha"], float)
            tc = np.asarray(t["tau_c"], float)
            P, A = tc.shape
            ok = np.isfinite(tc)
            if "complete" in t:
                ok &= np.asarray(t["complete"], bool)
            ok = ok.ravel()
            rows = {"R": np.full(P * A, float(t.attrs["R"]))[ok],
                    "alpha_deg": np.tile(alpha, P)[ok]}
            for q in ("tau_i", "tau_c", "dtau_c", "delta_tau_c", "von_mises", "sigma_vm"):
                if q in t:
                    v = np.asarray(t[q], float)
                    v = np.repeat(v, A) if v.ndim == 1 else v.ravel()
                    rows[ALIASES.get(q, q)] = v[ok]
            for lab in labels:
                out.append(dict(rows, state=np.full(ok.sum(), lab)))
    return out


def read_patches(folder: Path, stationary_from: float | None = None
                 ) -> dict[str, np.ndarray] | None:
    """Concatenated patch-test rows of every ``patches/r*.h5`` (``state`` as str): 1-D rows
    (documented format) or femplast.analysis.patches' per-state/per-size groups."""
    import h5py

    cols: dict[str, list[np.ndarray]] = {}
    for p in sorted(folder.glob("*.h5")):
        with h5py.File(p, "r") as f:
            g = f["patches"] if "patches" in f else f
            data = _read_group(g)
            if "R" not in data:
                for t in _patch_tables(g, stationary_from):
                    for k, v in t.items():
                        cols.setdefault(k, []).append(v)
                continue
        for a, k in ALIASES.items():
            if a in data and k not in data:
                data[k] = data[a]
        n = len(data.get("R", []))
        for k, v in data.items():
            if v.ndim == 1 and len(v) == n:
                cols.setdefault(k, []).append(v)
    if not cols or "R" not in cols:
        return None
    out = {k: np.concatenate(v) for k, v in cols.items()}
    if "state" in out:
        out["state"] = np.array([s.decode() if isinstance(s, bytes) else str(s)
                                 for s in out["state"]])
    else:
        out["state"] = np.full(len(out["R"]), "all")
    if "alpha_deg" not in out:
        out["alpha_deg"] = np.zeros(len(out["R"]))
    return out


def patch_summary_rows(summary: dict) -> list[dict]:
    """``summary["patches"]`` rows normalized to ``{state, R, alpha_deg, <q>_mean, <q>_std}``;
    accepts flat keys (``tau_c_mean``) or nested ones (``{"mean": {"tau_c": ..}}`` or
    ``{"tau_c": {"mean": ..}}``)."""
    rows = []
    entries = summary.get("patches") or []
    if isinstance(entries, dict):  # e.g. {"entries": [...]} or {state: [...]}
        entries = entries.get("entries") or [e for v in entries.values() if isinstance(v, list)
                                             for e in v]
    for r in entries:
        if not isinstance(r, dict) or "R" not in r:
            continue
        r = {ALIASES.get(k, k) if ALIASES.get(k, k) not in r else k: v for k, v in r.items()}
        row = dict(state=str(r.get("state", "all")), R=float(r["R"]),
                   alpha_deg=float(r.get("alpha_deg", 0.0)))
        for q in PATCH_QUANTITIES:
            for s in ("mean", "std"):
                v = r.get(f"{q}_{s}")
                if v is None and isinstance(r.get(s), dict):
                    v = r[s].get(q)
                if v is None and isinstance(r.get(q), dict):
                    v = r[q].get(s)
                if v is not None:
                    row[f"{q}_{s}"] = float(v)
        rows.append(row)
    return rows


def _table_from_csv(path: Path) -> dict[str, np.ndarray] | None:
    with open(path, newline="") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.DictReader(lines))
    if not rows:
        return None
    out = {}
    for k in rows[0]:
        try:
            out[k.strip()] = np.array([float(r[k]) for r in rows])
        except (TypeError, ValueError):
            continue
    return out


def _table_from_h5(path: Path) -> dict[str, np.ndarray] | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            groups = [f] + [f[k] for k in f if isinstance(f[k], h5py.Group)]
            for g in groups:
                if "k" in g and "L_stat" in g:
                    return {k: np.asarray(v, float) for k, v in _read_group(g).items()
                            if v.ndim == 1}
                for v in g.values():  # one compound dataset
                    if isinstance(v, h5py.Dataset) and v.dtype.names and \
                            {"k", "L_stat"} <= set(v.dtype.names):
                        a = np.asarray(v)
                        return {n: a[n].astype(float) for n in a.dtype.names}
    except OSError:
        return None
    return None


def find_calibration(outdir: Path) -> tuple[dict[str, np.ndarray], Path] | None:
    """The first CSV/HDF5 table with at least columns ``k`` and ``L_stat`` in ``outdir``,
    ``outdir/calibration`` or ``outdir/sweep``, or a sweep's own ``sweep/table.csv``
    (femplast.app.sweep: any grid keys, e.g. a scalar sweep's ``scalar.c0``)."""
    for d in (outdir / "calibration", outdir / "sweep", outdir):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.suffix == ".csv":
                t = _table_from_csv(p)
            elif p.suffix in (".h5", ".hdf5") and p.parent.name != "realizations":
                t = _table_from_h5(p)
            else:
                continue
            if t and "k" in t and "L_stat" in t and len(t["k"]):
                return t, p
            if t and d.name == "sweep" and p.name == "table.csv" and len(t.get("point", ())):
                return t, p
    return None


@dataclass
class RunData:
    """Everything plottable in an output directory (absent families are None/empty)."""

    outdir: Path
    summary: dict | None
    realizations: list[Realization]
    stages: dict[str, list[Realization]]
    patches: dict[str, np.ndarray] | None
    patch_rows: list[dict]
    calibration: dict[str, np.ndarray] | None
    calibration_path: Path | None
    finite_size: dict | None
    xdmf: list[Path]
    reference_path: Path | None = None  # reference data to overlay (see :func:`find_reference`)
    quench: list[dict] = field(default_factory=list)  # per realization: the KMC's 'kmc' group

    @property
    def reference(self):
        """The reference set (:class:`femplast.analysis.calibration.Reference`) to overlay, or
        None; read once."""
        if self.reference_path is None:
            return None
        if not hasattr(self, "_reference"):
            from femplast.analysis.calibration import read_reference

            self._reference = read_reference(self.reference_path)
        return self._reference

    @property
    def stationary_from(self) -> float | None:
        try:
            return float(self.summary["case"]["loading"]["stationary_from"])
        except (TypeError, KeyError):
            return None

    @property
    def name(self) -> str:
        try:
            return str(self.summary["case"]["name"])
        except (TypeError, KeyError):
            return self.outdir.name

    def families(self) -> list[str]:
        out = []
        if self.realizations:
            out.append("realizations")
        if self.stages:
            out.append("stages")
        if self.patches is not None or self.patch_rows:
            out.append("patches")
        if self.calibration is not None:
            out.append("calibration")
        if self.finite_size:
            out.append("finite_size")
        if self.xdmf:
            out.append("fields")
        if self.quench:
            out.append("quench")
        return out


def find_reference(outdir: Path, summary: dict | None) -> Path | None:
    """The reference directory of the run's case (``sweep.reference``), looked up as given,
    next to the output directory, from the working directory and next to the shipped cases
    (paths in a case are relative to the case file, which summary.json does not record)."""
    try:
        p = (summary or {})["case"]["sweep"]["reference"]
    except (TypeError, KeyError):
        return None
    if not p:
        return None
    q = Path(p)
    shipped = Path(__file__).resolve().parents[2] / "cases"
    for c in ([q] if q.is_absolute() else [outdir / q, outdir.parent / q, Path.cwd() / q,
                                           shipped / q]):
        if (c / "macro.csv").is_file():
            return c
    return None


def read_quench(qdir: Path) -> list[dict]:
    """The KMC preparation records of a quench run (``quench/rNNNN.h5``, group ``kmc``: the
    sampled mean threshold and stress spread against thermal events), one dict per
    realization in order; [] when there are none."""
    import h5py

    out = []
    for p in sorted(qdir.glob("r*.h5")) if qdir.is_dir() else []:
        with h5py.File(p, "r") as f:
            if "kmc" in f:
                out.append({k: f["kmc"][k][()] for k in f["kmc"]})
    return out


def load_run(outdir: str | Path, reference: str | Path | None = None) -> RunData:
    """Read an output directory; :class:`NoRunError` if it holds nothing femplast wrote.

    ``reference``: a reference directory (``macro.csv`` ...) to overlay on the figures;
    default: the case's ``sweep.reference`` when it can be found (:func:`find_reference`)."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise NoRunError(f"{outdir}: no such directory")
    summary = None
    if (outdir / "summary.json").is_file():
        summary = json.loads((outdir / "summary.json").read_text())
    reals = read_realizations(outdir / "realizations")
    stages = {}
    if (outdir / "stages").is_dir():
        for d in sorted(p for p in (outdir / "stages").iterdir() if p.is_dir()):
            rs = read_realizations(d / "realizations")
            if rs:
                stages[d.name] = rs
    try:
        g0 = float(summary["case"]["loading"]["stationary_from"])
    except (TypeError, KeyError):
        g0 = None
    patches = read_patches(outdir / "patches", g0) if (outdir / "patches").is_dir() else None
    rows = patch_summary_rows(summary) if summary else []
    cal = find_calibration(outdir)
    fs = (summary or {}).get("finite_size")
    if fs and not ({"L", "std_sigma_xy"} <= set(fs) and len(fs["L"])):
        fs = None
    xdmf = [p for d in ("fields", "quench/fields") if (outdir / d).is_dir()
            for p in sorted((outdir / d).glob("*.xdmf"))]
    ref = Path(reference) if reference is not None else find_reference(outdir, summary)
    if ref is not None and not (ref / "macro.csv").is_file():
        raise NoRunError(f"--reference {ref}: not a reference directory (no macro.csv)")
    run = RunData(outdir, summary, reals, stages, patches, rows,
                  cal[0] if cal else None, cal[1] if cal else None, fs, xdmf, ref,
                  read_quench(outdir / "quench"))
    if not run.families():
        what = "summary.json only" if summary else "nothing femplast writes"
        raise NoRunError(
            f"{outdir} holds no femplast run ({what}): expected realizations/rNNNN.h5, "
            "stages/<stage>/realizations/, patches/, sweep/table.csv, a calibration table "
            "(CSV/HDF5 with columns k and L_stat), summary.json 'finite_size', quench/rNNNN.h5 "
            "or fields/*.xdmf. Run 'femplast run CASE.yaml --out DIR' first.")
    return run
