"""The public Python API: load a case, run it, read results, step one realization by hand.

Two levels, in the spirit of GooseEPM's ``System`` classes:

* whole runs, as the command line does them: :func:`load_case`, :func:`run` (into a directory or
  in memory), :func:`load_run`, all returning :class:`Results`;
* one realization of the tensorial model stepped from Python: :class:`Simulation`
  (``advance_to``, ``event_driven_step``, ``relax``, ``apply_slip``, ``quench``, ``copy``,
  ``save_state``).

Equation numbers refer to the tensorial paper (``tensorial-epm-calibration-lj-glass``): slip
tensor ``M(theta)`` (eq. 3), resolved stress ``tau = M : Sigma`` (eq. 4), Weibull thresholds
(eq. 5), the no-negative-dissipation bound ``gamma_max`` (eq. 6) and the slip amplitude law
(eq. 7), the AQS protocol (sec. 3.4), KMC rates (eq. 11) and the quench (appendix A.3).

Example::

    import femplast

    sim = femplast.Simulation(femplast.load_case("cases/quickstart.yaml"))
    sim.advance_to(0.5)           # AQS with avalanches
    branch = sim.copy()
    branch.advance_to(0.4)        # reload backward
    print(sim.mean_stress, branch.mean_stress)
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from femplast.app.cases import case_from_dict
from femplast.app.cases import load_case as _load_case_file
from femplast.config.case import Case, resolve_path
from femplast.errors import FemplastInputError

K_MAX = 1 << 52  # increments of a Simulation's driver: unbounded in practice (stops end it)
NO_BUDGET = 1 << 62  # event budget of one advance: none (the call returns at a stable state)


# ============================================================================ cases and runs
def load_case(path_or_dict, overrides=()) -> Case:
    """A validated case from a YAML file, a dictionary or a :class:`Case`.

    Args:
        path_or_dict: path (``str`` or ``Path``) of a YAML case file, a dictionary with the
            same structure (``docs/case-reference.md``), or a ``Case`` (re-validated with the
            overrides).
        overrides: ``"dotted.key=value"`` strings (as ``--set`` on the command line; values
            are YAML) or a dictionary ``{"loading.gamma_max": 0.5}`` (values as Python
            objects).

    Returns:
        The validated :class:`femplast.config.case.Case`.

    Raises:
        FemplastInputError: unreadable file, unknown key, value out of range, bad override.
    """
    ov = _override_strings(overrides)
    if isinstance(path_or_dict, Case):
        return case_from_dict(path_or_dict.to_dict(), ov, path_or_dict.source)
    if isinstance(path_or_dict, dict):
        return case_from_dict(path_or_dict, ov)
    if isinstance(path_or_dict, (str, Path)):
        return _load_case_file(path_or_dict, ov)
    raise FemplastInputError("case", type(path_or_dict).__name__,
                             "a YAML file path (str or Path), a dict or a Case")


def _override_strings(overrides) -> list[str]:
    if isinstance(overrides, dict):
        out = []
        for k, v in overrides.items():
            v = v.item() if isinstance(v, np.generic) else v
            try:
                text = yaml.safe_dump(v, default_flow_style=True)
            except yaml.YAMLError:
                raise FemplastInputError(str(k), v, "a YAML-representable value") from None
            out.append(f"{k}={text}")
        return out
    if isinstance(overrides, str):
        return [overrides]
    return [str(o) for o in overrides]


class Results:
    """What a run produced: the summary and the per-realization tables.

    A thin view of :class:`femplast.postprocess.data.RunData`.

    Attributes:
        summary: the content of ``summary.json`` (resolved case, seeds, statistics).
        realizations: :class:`femplast.postprocess.data.Realization` per realization file
            (``gamma``, ``stress`` (steps, 3) ``[xx, yy, xy]``, ``steps``, ``avalanches``,
            ``resolved()``, ``curve()``).
        stages: stage name -> realizations (runs with ``stages:``).
        outdir: the output directory, or ``None`` for an in-memory run (:func:`run` without
            ``out``; the arrays are loaded, the temporary directory is gone).
    """

    def __init__(self, data, outdir: Path | None):
        self.summary: dict = data.summary or {}
        self.realizations = data.realizations
        self.stages = data.stages
        self.outdir = outdir

    @property
    def steps(self) -> list[dict]:
        """Per realization, the ``steps/`` datasets (``gamma_ext``, ``stress``, ``eps_pl``,
        ``n_events``: one row per strain increment, after its avalanche)."""
        return [r.steps for r in self.realizations]

    @property
    def avalanches(self) -> list[dict]:
        """Per realization, the ``avalanches/`` datasets (``step``, ``gamma_ext``, ``size``,
        ``stress_before``, ``stress_after``, ``drop_xy``); empty dicts when absent."""
        return [r.avalanches or {} for r in self.realizations]

    @property
    def stationary(self) -> dict | None:
        """Stationary-state statistics of the summary (``gamma_ext > stationary_from``:
        mean and std of ``Sigma_xy``, mean stress drop, avalanches, events per unit strain)."""
        return self.summary.get("stationary")

    TABLES = ("steps", "avalanches")

    def table(self, kind: str = "steps") -> dict[str, np.ndarray]:
        """One flat table (column -> 1-D array) of every realization's ``steps/`` or
        ``avalanches/`` rows, plus ``stage`` and ``realization`` columns; ``(n, 3)`` stresses
        and strains ``[xx, yy, xy]`` become columns ``<name>_xx``, ``_yy``, ``_xy``. Units: the
        ``units`` attribute of the HDF5 datasets (:data:`femplast.io.output.DATASET_UNITS`).

        Raises:
            FemplastInputError: ``kind`` is not one of :attr:`TABLES`.
        """
        if kind not in self.TABLES:
            raise FemplastInputError("kind", kind, f"one of {', '.join(self.TABLES)}")
        groups = [("", self.realizations)] + list(self.stages.items())
        cols: dict[str, list[np.ndarray]] = {}
        n_rows = 0
        for stage, reals in groups:
            for r in reals:
                g = r.steps if kind == "steps" else (r.avalanches or {})
                flat = {}
                for k, v in g.items():
                    v = np.asarray(v)
                    if v.ndim == 2 and v.shape[1] == 3:
                        flat.update({f"{k}_{c}": v[:, j] for j, c in enumerate(("xx", "yy",
                                                                                  "xy"))})
                    elif v.ndim == 1:
                        flat[k] = v
                n = len(next(iter(flat.values()))) if flat else 0
                if n == 0:
                    continue
                flat["stage"] = np.full(n, stage)
                flat["realization"] = np.full(n, int(r.name.lstrip("r") or 0))
                for k in set(cols) | set(flat):  # a column absent somewhere is NaN there
                    cols.setdefault(k, [np.full(n_rows, np.nan)] if n_rows else [])
                    cols[k].append(flat.get(k, np.full(n, np.nan)))
                n_rows += n
        return {k: np.concatenate(v) for k, v in cols.items()}

    def to_pandas(self, kind: str = "steps"):
        """:meth:`table` as a ``pandas.DataFrame`` (needs pandas: ``pip install
        femplast[tables]``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Results.to_pandas needs pandas (pip install pandas, or "
                              "femplast[tables])") from None
        return pd.DataFrame(self.table(kind))

    def __repr__(self) -> str:
        where = self.outdir if self.outdir is not None else "in memory"
        return f"Results({len(self.realizations)} realizations, {where})"


def load_run(outdir) -> Results:
    """:class:`Results` of an output directory written by :func:`run` or the command line.

    Raises:
        FemplastInputError: ``outdir`` holds no femplast run.
    """
    from femplast.postprocess.data import NoRunError
    from femplast.postprocess.data import load_run as read_run

    try:
        return Results(read_run(outdir), Path(outdir))
    except NoRunError as exc:
        raise FemplastInputError("outdir", str(outdir), f"a femplast output directory ({exc})")\
            from None


def run(case, out=None, *, quiet: bool = True, event_log: bool = False, comm=None):
    """Run a case as ``python -m femplast`` does (realizations spread over ``comm``'s ranks).

    Args:
        case: a :class:`Case`, or anything :func:`load_case` accepts.
        out: output directory (new or empty: existing results are never overwritten); ``None``:
            run in a temporary directory, load the tables into memory and remove it (field
            snapshots and quench files are then not kept).
        quiet: no progress output.
        event_log: store every slip event (``events/`` of each realization, ``--event-log``).
        comm: MPI communicator (default ``MPI.COMM_WORLD``).

    Returns:
        :class:`Results` on rank 0, ``None`` on the other ranks.

    Raises:
        FemplastInputError: invalid case or non-empty ``out``.
    """
    from mpi4py import MPI

    from femplast.app.runner import run_case
    from femplast.io.claim import Claim, claim_outdir

    comm = MPI.COMM_WORLD if comm is None else comm
    case = case if isinstance(case, Case) else load_case(case)
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="femplast-")) if comm.rank == 0 else None
        claim = Claim(comm.bcast(tmp, root=0), None)
    else:  # claimed atomically, refusals raised on every rank (femplast.io.claim)
        claim = claim_outdir(comm, str(out), case.name or "case")
    outdir = claim.path
    try:
        with claim:
            run_case(case, outdir, comm, quiet=quiet, event_log=event_log)
        res = load_run(outdir) if comm.rank == 0 else None
    finally:
        comm.barrier()
        if out is None and comm.rank == 0:
            shutil.rmtree(outdir, ignore_errors=True)
    if res is not None and out is None:
        res.outdir = None
    return res


# ============================================================================ one realization
class Simulation:
    """One realization of a tensorial case, stepped from Python.

    The state holds the cells' internal stress, plastic strain and slip systems (angles
    ``theta``, thresholds ``tau_c``, eq. 3-5); the total stress is the internal stress plus the
    elastic response ``gamma_ext R(alpha_ext)`` to the pure shear ``gamma_ext M(alpha_ext)``
    (eq. 3) of the case's ``loading.alpha_ext``. ``gamma_ext`` moves by increments of at most
    ``loading.dgamma_ext`` (AQS, sec. 3.4); every call ends at a stable state.

    Reloading backward uses ``M(alpha + pi/2) = -M(alpha)`` (appendix A.4): the load reached
    so far is folded into the internal stress (:func:`femplast.protocols.stages.fold`) and
    the sample is driven along ``alpha_ext + 90 deg``. Such a change of direction (and a
    target off the current strain grid, an event-driven step, an explicit slip, a copy)
    starts a new strain grid at the current ``gamma_ext``; forward loading from the start on
    the grid ``k dgamma_ext`` reproduces :func:`run` bit for bit.

    Stages, patch tests and output snapshots of the case are not used here; ``kmc`` settings
    are used by :meth:`quench`, ``initial.state`` by the constructor.

    Args:
        case: a tensorial :class:`Case` (or anything :func:`load_case` accepts).
        realization: the realization index: its random stream is that of realization
            ``realization`` of a run (``femplast.streams.realization_rng(run.seed, index)``),
            so the initial state is the same.

    Attributes:
        case: the case.
        realization: the realization index.
        dgamma: the largest strain increment (``loading.dgamma_ext``).
        num_events: slip events so far (avalanches and explicit slips; the thermal events of
            :meth:`quench` and their avalanches are not counted).
    """

    def __init__(self, case, realization: int = 0):
        from mpi4py import MPI

        from femplast.protocols.prepare import build_model, load_initial_state
        from femplast.protocols.stages import bind, init_protocol_state
        from femplast.streams import realization_rng

        case = case if isinstance(case, Case) else load_case(case)
        if case.model not in ("tensorial", "quench"):
            raise FemplastInputError("model", case.model, "tensorial (or quench): Simulation "
                                     "steps the tensorial model")
        self.case, self.realization = case, int(realization)
        self._model = build_model(case, MPI.COMM_SELF, self.realization)
        initial = None
        if case.initial.state:
            initial = load_initial_state(resolve_path(case, case.initial.state), self._model)
        sigma0, systems = (None, None) if initial is None else (initial[0], initial[1:])
        rng = realization_rng(case.run.seed, self.realization)
        self._state = self._model.new_state(rng, sigma0, systems)
        init_protocol_state(self._model, self._state, case.loading.alpha_ext)
        bind(self._model, self._state)
        self.dgamma = float(case.loading.dgamma_ext)
        self.num_events = 0
        self._origin, self._sign = 0.0, 1
        self._drv = self._driver(1, self.dgamma)
        self._stale = False  # the driver's lazy stability data no longer match the state

    # ------------------------------------------------------------------ state
    @property
    def model(self):
        """The :class:`femplast.tensorial.model.TensorialModel` (shared by copies)."""
        return self._model

    @property
    def state(self):
        """The :class:`femplast.tensorial.model.State` (internal stress ``sig`` as
        ``(d, s, p)`` rows, ``eps_pl``, ``theta``, ``tauc``, ``rng``); the folded load is part
        of ``sig`` and ``sigma0`` (``sig_fold``)."""
        return self._state

    @property
    def gamma_ext(self) -> float:
        """External shear strain along the case's ``alpha_ext``."""
        return self._origin + self._sign * self._drv.gamma_ext

    @property
    def stress(self) -> np.ndarray:
        """Total stress per cell at ``gamma_ext``, shape (cells, 3) ``[xx, yy, xy]``."""
        self._bind()
        return self._model.total_stress(self._state, self._drv.gamma_ext, self._drv.alpha_ext)

    @property
    def mean_stress(self) -> np.ndarray:
        """Box-average total stress ``[xx, yy, xy]`` (cell-area weights), shape (3,)."""
        return self._model.weights @ self.stress

    @property
    def resolved_stress(self) -> float:
        """Box-average stress resolved on the loading direction, ``M(alpha_ext) : Sigma``
        (eq. 3-4): ``sin(2 alpha) (Sigma_yy - Sigma_xx) / 2 + cos(2 alpha) Sigma_xy``, i.e.
        ``Sigma_xy`` for ``alpha_ext = 0``."""
        a = 2 * math.radians(self.case.loading.alpha_ext)
        s = self.mean_stress
        return float(math.sin(a) * 0.5 * (s[1] - s[0]) + math.cos(a) * s[2])

    @property
    def eps_pl(self) -> np.ndarray:
        """Plastic strain per cell, (cells, 3) ``[xx, yy, xy]`` tensorial (read-only view)."""
        return _readonly(self._state.eps_pl)

    @property
    def tau_c(self) -> np.ndarray:
        """Slip thresholds per cell and system, (cells, N) (eq. 5; read-only view)."""
        return _readonly(self._state.tauc)

    @property
    def theta(self) -> np.ndarray:
        """Slip-system angles per cell and system, (cells, N) (eq. 3; read-only view)."""
        return _readonly(self._state.theta)

    def distance_to_threshold(self) -> np.ndarray:
        """``min_n (tau_c,n - tau_n)`` per cell at ``gamma_ext`` (< 0: unstable), (cells,)."""
        self._bind()
        return self._model.distance_to_threshold(self._state, self._drv.gamma_ext,
                                                  self._drv.alpha_ext)

    # ------------------------------------------------------------------ dynamics
    def advance_to(self, gamma_ext: float) -> int:
        """Athermal quasistatic loading (sec. 3.4) to ``gamma_ext``, forward or backward.

        The strain moves by increments of at most ``loading.dgamma_ext`` along ``alpha_ext``
        (or along ``alpha_ext + 90 deg`` when ``gamma_ext`` is below the current strain); at
        each increment where a system is active (``dtau_c < 0``, eq. 4) the avalanche runs at
        fixed strain until no system is active. Ends at a stable state at ``gamma_ext`` (to
        round-off). When ``gamma_ext`` is on the current strain grid (forward loading from the
        start: ``k dgamma_ext``) the grid goes on, so the trajectory is that of :func:`run`;
        otherwise a new grid of ``ceil(|delta| / dgamma_ext)`` equal increments starts here.

        Returns:
            The number of slip events on the way.
        """
        target = float(gamma_ext)
        delta = target - self.gamma_ext
        if delta == 0.0:
            return 0
        sign = 1 if delta > 0 else -1
        dg = self._drv.dgamma
        x = sign * (target - self._origin) / dg
        if (self._stale or sign != self._sign or abs(x - round(x)) > 1e-9
                or dg > self.dgamma * (1 + 1e-12)):
            n = max(1, math.ceil(abs(delta) / self.dgamma - 1e-6))
            self._rebase(sign, abs(delta) / n)
            return self._advance(n)
        return self._advance(max(int(round(x)), self._drv.k))

    def event_driven_step(self, direction: int = 1) -> int:
        """Load exactly to the next instability and run the avalanche it triggers.

        From the current (stable) state the load grows along ``alpha_ext`` (``direction`` +1)
        or ``alpha_ext + 90 deg`` (-1) by the smallest strain at which a system becomes active:
        ``min_n a_n / r_n`` over the systems whose distance to threshold
        ``dtau_c,n(gamma) = a_n - r_n gamma`` decreases, settled upward by a few ulps until
        the exact activity test of the event loop holds. If the state is unstable, it only
        relaxes (:meth:`relax`).

        Returns:
            The avalanche size (slip events).
        """
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, not {direction!r}")
        if self.distance_to_threshold().min() < 0.0:
            return self.relax()
        self._rebase(direction, self.dgamma)
        self._model.refresh(self._state)
        g = self._drv.next_unstable_strain(0.0)
        if not math.isfinite(g):
            raise RuntimeError("no system becomes active along this direction")
        self._drv = self._driver(direction, g)
        return self._advance(1)

    def relax(self) -> int:
        """Relax an unstable state at fixed ``gamma_ext`` (one avalanche, sec. 3.4).

        Returns:
            The number of slip events (0 when the state is stable).
        """
        from femplast.tensorial.kmc import relax

        self._bind()
        if self._stale:
            self._rebase(self._sign, self._drv.dgamma)
        n = relax(self._drv)
        self.num_events += n
        return n

    def apply_slip(self, cell: int, system: int, d_gamma: float | None = None) -> float:
        """One slip of system ``system`` of cell ``cell``, as the event loop performs it.

        The plastic strain of the cell grows by ``d_gamma M(theta)`` (eq. 1, 3), its stress
        is redistributed by the model's backend, the cell's accumulated slip grows, and the
        cell's slip systems and thresholds are renewed (sec. 3.3, when ``slip.renew``) from
        the realization's random stream. No avalanche follows: call :meth:`relax`.

        Args:
            cell: canonical cell index.
            system: slip-system index in ``0 .. N-1``.
            d_gamma: the amplitude; ``None``: drawn as the AQS loop does, from eq. 7 below
                ``gamma_max = -2 tau / ((C:(S-I):M):M)`` (eq. 6) with ``tau`` the system's
                resolved stress at ``gamma_ext`` (0 when ``tau <= 0``), or the fixed amplitude
                of model F (``slip.fixed_dgamma``, capped at ``gamma_max`` when the variant
                asks for it).

        Returns:
            The amplitude applied.
        """
        from femplast.tensorial.aqs import apply_slips
        from femplast.tensorial.rules import renew

        s, m, p = self._state, self._model, self._model.params
        c, n = int(cell), int(system)
        if not (0 <= c < m.num_cells and 0 <= n < p.N):
            raise IndexError(f"cell {c} / system {n} out of range ({m.num_cells} cells, "
                             f"N = {p.N})")
        self._bind()
        dg = self._amplitude(c, n) if d_gamma is None else float(d_gamma)
        apply_slips(m, s, [c], [s.theta[c, n]], [dg])
        s.eacc[c] += dg
        renew(s.rng, m.rule.args(), s.theta, s.sin2, s.cos2, s.tauc, c, dg, s.eacc[c])
        self.num_events += 1
        self._stale = True
        return dg

    def quench(self, max_events: int | None = None) -> dict:
        """KMC preparation and T = 0 quench of the case's ``kmc`` section (appendix A.3).

        Thermally activated events with rates ``exp(-dtau_c Va / kB T)`` (eq. 11) at fixed
        strain until the thresholds and the stress are stationary (``kmc.stop``) or
        ``max_events``; then an athermal relaxation. The quenched stress becomes the pre-stress
        ``Sigma0``, the plastic strain is reset to 0, the slip systems are kept, and the sample
        is the new reference (``gamma_ext = 0``, no folded load), as a run with
        ``kmc.enabled`` does before loading.

        Args:
            max_events: cap on the thermal events (default ``kmc.max_events``).

        Returns:
            ``stopped_by``, ``events`` and the quenched sample's observables (mean |stress|,
            mean smallest ``dtau_c``, mean ``tau_c``, stress std).
        """
        from femplast.tensorial.aqs import AQSDriver
        from femplast.tensorial.kmc import KMC, quench

        if self.gamma_ext != 0.0:
            raise ValueError(f"quench at gamma_ext = 0 only (now {self.gamma_ext})")
        k, m, s = self.case.kmc, self._model, self._state
        self._rebase(1, self.dgamma)
        drv = AQSDriver(m, s, 0.0, 1.0, 1)
        kmc = KMC(drv, k.temperature, k.Va, window=int(round(k.window * m.num_cells)),
                  tolerance=k.tolerance)
        why = kmc.run(k.max_events if max_events is None else int(max_events),
                      until_stationary=k.stop == "stationary")
        obs = quench(m, s, drv)
        s.sig_fold[:] = 0.0
        s.E_macro[:] = 0.0
        self._origin, self._sign = 0.0, 1
        self._drv, self._stale = self._driver(1, self.dgamma), False
        return dict(stopped_by=why, events=kmc.events, **obs)

    # ------------------------------------------------------------------ branches and files
    def copy(self) -> Simulation:
        """An independent branch: copied state and random stream, the same model.

        The branch starts a new strain grid at the current ``gamma_ext`` (its load is folded
        into its own state); the original is not changed. Two copies stepped alike stay
        identical bit for bit.
        """
        from femplast.protocols.stages import fold

        new = Simulation.__new__(Simulation)
        new.__dict__.update(self.__dict__)
        new._state = self._state.copy()
        # fold with the original's load response; only the copy's arrays change
        fold(self._model, new._state, self._drv.gamma_ext, self._alpha_deg(self._sign))
        if self._model.evolving_moduli:  # moduli follow the state: a model of its own
            from mpi4py import MPI

            from femplast.protocols.prepare import build_model

            new._model = build_model(self.case, MPI.COMM_SELF, self.realization)
        new._origin = self.gamma_ext
        new._drv = new._driver(self._sign, self.dgamma)
        new._stale = False
        return new

    def save_state(self, path) -> Path:
        """Write the state as an HDF5 file usable as a case's ``initial.state``.

        Group ``state`` as in run outputs: ``stress`` (total stress at ``gamma_ext``, (cells,
        3) ``[xx, yy, xy]``: a run started from the file takes it as its pre-stress ``Sigma0``
        at its ``gamma_ext = 0``), ``sigma0`` (the pre-stress without the folded load),
        ``eps_pl``, ``theta``, ``tau_c``; attributes ``gamma_ext``, ``alpha_ext`` (deg),
        ``E_macro`` and ``rng_state``.

        Returns:
            The path written.
        """
        from femplast.io.output import H5Writer, write_group
        from femplast.redistribution.backends import from_dsp
        from femplast.version import __version__

        s, path = self._state, Path(path)
        E = s.E_macro + self._drv.gamma_ext * _m_vector(self._drv.alpha_ext)
        with H5Writer(path) as f:
            f.attrs.update(dict(realization=self.realization, seed=self.case.run.seed,
                                femplast_version=__version__, backend=self._model.backend,
                                num_events=self.num_events))
            write_group(f, "state", dict(stress=self.stress,
                                         sigma0=from_dsp(s.sigma0 - s.sig_fold),
                                         eps_pl=s.eps_pl, theta=s.theta, tau_c=s.tauc),
                        dict(gamma_ext=self.gamma_ext, alpha_ext=self.case.loading.alpha_ext,
                             E_macro=E, rng_state=json.dumps(s.rng.bit_generator.state)))
        return path

    # ------------------------------------------------------------------ internals
    def _alpha_deg(self, sign: int) -> float:
        a = self.case.loading.alpha_ext
        return a if sign > 0 else a + 90.0

    def _bind(self) -> None:
        from femplast.protocols.stages import bind

        bind(self._model, self._state)  # the direct backend reads the state's sigma0

    def _driver(self, sign: int, dgamma: float):
        from femplast.tensorial.aqs import AQSDriver

        self._bind()
        return AQSDriver(self._model, self._state, math.radians(self._alpha_deg(sign)), dgamma,
                         K_MAX)

    def _rebase(self, sign: int, dgamma: float) -> None:
        """Fold the current load into the state; a new driver along ``sign`` from here."""
        from femplast.protocols.stages import fold

        g = self.gamma_ext
        self._bind()
        fold(self._model, self._state, self._drv.gamma_ext, self._alpha_deg(self._sign))
        self._origin, self._sign = g, sign
        self._drv, self._stale = self._driver(sign, dgamma), False

    def _advance(self, k: int) -> int:
        self._bind()
        n0 = self._drv.num_events
        self._drv.advance(k, NO_BUDGET)
        self._model.refresh(self._state)
        n = self._drv.num_events - n0
        self.num_events += n
        return n

    def _amplitude(self, c: int, n: int) -> float:
        """Amplitude of a slip of system n of cell c: the model's slip rule (eq. 6-7,
        femplast.tensorial.rules) at the system's resolved stress."""
        from femplast.tensorial.rules import self_response, slip_amplitude

        s, m = self._state, self._model
        g, R = self._drv.gamma_ext, self._drv.R
        s2, c2 = s.sin2[c, n], s.cos2[c, n]
        tau = s2 * (s.sig[0, c] + g * R[0, c]) + c2 * (s.sig[1, c] + g * R[1, c])
        den = self_response(c, s2, c2, m.redist.selfq)
        return float(slip_amplitude(s.rng, m.rule.args(), tau, den))

    def __repr__(self) -> str:
        return (f"Simulation({self.case.name or 'case'}, realization {self.realization}, "
                f"gamma_ext = {self.gamma_ext:.6g}, {self.num_events} events)")


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _m_vector(alpha: float) -> np.ndarray:
    from femplast.fe.elasticity import M_vector

    return M_vector(alpha)
