"""Kinetic Monte Carlo (KMC) preparation of glasses and their quench (tensorial paper, A.3).

An equilibrated super-cooled liquid at temperature ``T`` is modelled as a sequence of thermally
activated slip events at fixed external strain: system ``n`` (over every slip system of the
sample) fires with rate ``nu_n = exp(-dtau_c,n Va / kB T)`` (eq. 11), one event is chosen with
probability ``nu_n / nu_tot``, its amplitude is drawn from eq. 7 with ``gamma_max(tau_c)`` (the
local stress must have reached the threshold), stresses are redistributed, the cell is renewed and
the athermal avalanche this may trigger runs at fixed strain (:mod:`femplast.tensorial.aqs`, same
rules and random stream). Temperatures are ``kB T`` in LJ energy, ``Va`` in LJ area, so
``beta = Va / kB T`` multiplies stresses.

Selection without a linear scan (exact, by thinning). Each cell ``c`` keeps an *upper bound*
``U_c = F r_c(ref_c)`` of its rate sum ``r_c = sum_n nu_n``, with ``r_c(ref_c)`` evaluated at the
stress ``ref_c`` of its last refresh and ``F = 2``. Since ``(sin 2theta, cos 2theta)`` is a unit
vector, a stress drift ``|Delta(d, s)| <= delta = ln F / beta`` (minus ``alpha_p |Delta p|`` with
pressure-dependent thresholds) changes every ``dtau_c`` by at most ``delta``, so
``r_c <= U_c`` as long as the drift stays below ``delta``. The ``U_c`` live in a Fenwick tree
(O(log cells) pick and update). A pick draws one uniform ``x`` in ``[0, sum U)``, descends the
tree to the cell ``c`` with residual ``x_c`` in ``[0, U_c)``, evaluates the cell's ``N`` true
rates at the current stress and accepts when ``x_c < r_c`` (the system is then the one whose
cumulative rate passes ``x_c``); otherwise it draws again. Accepted picks are exactly
distributed as ``nu_n / nu_tot``; the mean number of tries is ``sum U / nu_tot``, between 1
and ``F^2 = 4`` (``r_c >= r_c(ref_c) / F``), about 2 measured.

Per event the stress of every cell changes (long-range redistribution): this costs one O(cells)
pass for the stress add (the event loop's own kernel) and one O(cells) drift pass without any
exponential; only cells whose drift used up ``delta`` or whose systems were renewed have their
``N`` rates re-evaluated (O(N log cells) each). With ``F = 2`` the measured share of refreshed
cells per event is a few percent on 15 x 15 samples at ``T = 0.25`` (see ``KMC.stats``). The
tree is rebuilt from the ``U_c`` every ``cells`` updates so that the round-off of incremental
updates does not accumulate; everything is deterministic given the random stream, so a run
resumed from a checkpoint (:meth:`KMC.checkpoint`) is bit-identical to an uninterrupted one.

Stationarity: every ``window`` thermal events the window means of two observables are taken,
sampled ten times per window: the mean threshold ``<tau_c>`` over all systems and the standard
deviation of the deviatoric stress over cells ``sqrt(var d + var s)``. The liquid is declared
stationary at the end of the window after which both have changed by less than ``tolerance``
(relative) over two successive window pairs. The detection (event count) is reported.

Quench (:func:`quench`): ``T = 0`` athermal relaxation at fixed strain, then the stress field
becomes the pre-stress ``Sigma0`` of the athermal solid, the plastic (hence elastic) strain is
reset to zero and the slip systems are kept; :func:`write_quench` saves it as an HDF5 ``state``
group that ``initial.state`` reads.
"""

from __future__ import annotations

import json
import math
from collections import namedtuple

import numpy as np
from numba import njit

from femplast.errors import FemplastInputError
from femplast.tensorial.aqs import (
    RC_STOP,
    S_EVBASE,
    S_EVENTS,
    S_K,
    S_NREC,
    AQSDriver,
    Systems,
    _pressure_shift,
    _redistribute,
    aqs_advance,
    trigger_slip,
)

Rates = namedtuple("Rates", "beta factor delta alpha_p p_off")
"""Rate law ``nu_n = exp(-beta dtau_c,n)`` (eq. 11) with ``beta = Va / kB T``; bounds
``U_c = factor r_c`` valid while a cell's drift stays below ``delta``; pressure sensitivity."""
Tree = namedtuple("Tree", "U tree kref th0 tc0 counters work")
"""Selection state: per-cell rate bounds, their Fenwick tree, the stress and first system
(angle, threshold) at each cell's last refresh, the update counter, a per-system buffer."""

SLACK_FACTOR = 2.0
# kmc_pick gives up after this many rejections (or at once when every rate underflows to 0)
# and returns cell -1: at low temperature the acceptance can collapse, and a compiled loop
# that never returns can neither report it nor see SIGINT/SIGTERM
MAX_TRIES = 1 << 20
STALL_TRIES = 1 << 24  # tries for one event after which the KMC reports a collapse (seconds)
SAMPLES_PER_WINDOW = 10


# ============================================================================ compiled parts
@njit(cache=True)
def cell_rate(c, gam, sig, R, sin2, cos2, tauc, beta, alpha_p, p_off):
    """Sum over the systems of cell ``c`` of exp(-beta dtau_c) at external strain ``gam``."""
    d = sig[0, c] + gam * R[0, c]
    s = sig[1, c] + gam * R[1, c]
    shift = _pressure_shift(c, gam, sig, R, alpha_p, p_off)
    tot = 0.0
    for n in range(sin2.shape[1]):
        tot += math.exp(-beta * (tauc[c, n] + shift - (sin2[c, n] * d + cos2[c, n] * s)))
    return tot


@njit(cache=True)
def system_rates(c, gam, sig, R, sin2, cos2, tauc, beta, alpha_p, p_off, out):
    d = sig[0, c] + gam * R[0, c]
    s = sig[1, c] + gam * R[1, c]
    shift = _pressure_shift(c, gam, sig, R, alpha_p, p_off)
    for n in range(sin2.shape[1]):
        out[n] = math.exp(-beta * (tauc[c, n] + shift - (sin2[c, n] * d + cos2[c, n] * s)))


@njit(cache=True)
def fen_build(U, tree):
    n = U.shape[0]
    tree[0] = 0.0
    for i in range(n):
        tree[i + 1] = U[i]
    for i in range(1, n + 1):
        j = i + (i & -i)
        if j <= n:
            tree[j] += tree[i]


@njit(cache=True)
def fen_add(tree, i, delta):
    n = tree.shape[0] - 1
    i += 1
    while i <= n:
        tree[i] += delta
        i += i & -i


@njit(cache=True)
def fen_total(tree):
    n = tree.shape[0] - 1
    tot = 0.0
    i = n
    while i > 0:
        tot += tree[i]
        i -= i & -i
    return tot


@njit(cache=True)
def fen_find(tree, x):
    """(cell, residual): the first cell whose prefix sum exceeds x, and x minus the sums before."""
    n = tree.shape[0] - 1
    step = 1
    while step * 2 <= n:
        step *= 2
    pos = 0
    while step > 0:
        q = pos + step
        if q <= n and tree[q] <= x:
            pos = q
            x -= tree[q]
        step //= 2
    return pos, x


@njit(cache=True)
def _refresh_cell(c, gam, sig, R, sy, rt, tr):
    tr.U[c] = rt.factor * cell_rate(c, gam, sig, R, sy.sin2, sy.cos2, sy.tauc, rt.beta,
                                    rt.alpha_p, rt.p_off)
    tr.kref[0, c] = sig[0, c]
    tr.kref[1, c] = sig[1, c]
    tr.kref[2, c] = sig[2, c]
    tr.th0[c] = sy.theta[c, 0]
    tr.tc0[c] = sy.tauc[c, 0]


@njit(cache=True)
def kmc_refresh(full, gam, sig, R, sy, rt, tr):
    """Refresh the bounds of drifted or renewed cells (all when ``full``); returns how many.

    ``tr.counters[0]`` counts incremental tree updates since the last rebuild.
    """
    nc = sig.shape[1]
    nref = 0
    if full:
        for c in range(nc):
            _refresh_cell(c, gam, sig, R, sy, rt, tr)
        fen_build(tr.U, tr.tree)
        tr.counters[0] = 0
        return nc
    kref = tr.kref
    for c in range(nc):
        dd = sig[0, c] - kref[0, c]
        ds = sig[1, c] - kref[1, c]
        m = rt.delta
        if rt.alpha_p != 0.0:
            m -= rt.alpha_p * abs(sig[2, c] - kref[2, c])
        if m <= 0.0 or dd * dd + ds * ds >= m * m or sy.theta[c, 0] != tr.th0[c] \
                or sy.tauc[c, 0] != tr.tc0[c]:
            u0 = tr.U[c]
            _refresh_cell(c, gam, sig, R, sy, rt, tr)
            fen_add(tr.tree, c, tr.U[c] - u0)
            nref += 1
    tr.counters[0] += nref
    if tr.counters[0] >= nc:
        fen_build(tr.U, tr.tree)
        tr.counters[0] = 0
    return nref


@njit(cache=True)
def kmc_pick(rng, gam, sig, R, sy, rt, tr):
    """Draw one thermally activated system (cell, system, tries) with probability nu_n/nu_tot;
    cell -1 when no system is accepted within MAX_TRIES tries (or no rate is > 0)."""
    nc = sig.shape[1]
    N = sy.sin2.shape[1]
    tot = fen_total(tr.tree)
    tries = 0
    if not tot > 0.0 or not math.isfinite(tot):
        return -1, -1, 0
    while tries < MAX_TRIES:
        tries += 1
        x = rng.random() * tot
        c, xc = fen_find(tr.tree, x)
        if c >= nc:  # round-off at the very top of the range
            continue
        system_rates(c, gam, sig, R, sy.sin2, sy.cos2, sy.tauc, rt.beta, rt.alpha_p, rt.p_off,
                     tr.work)
        acc = 0.0
        for n in range(N):
            acc += tr.work[n]
            if xc < acc:
                return c, n, tries
    return -1, -1, tries


# returns of kmc_events: why it handed back to Python
K_DONE, K_RECFULL, K_EXTERNAL, K_AVALANCHE, K_NOPICK = 0, 1, 2, 3, 4


@njit(cache=True, _nrt=False)
def kmc_events(rng, st, ctl, f, sy, lz, kb, wk, rule, rt, tr, todo):
    """Up to ``todo`` thermal events with their avalanches, in one compiled loop: the steps of
    :meth:`KMC.step` (pick, :func:`trigger_slip`, redistribution, the avalanche by
    :func:`aqs_advance` with ``ctl`` stopping at the current increment, bound refresh) with
    nothing left to Python per event. Returns (events done, tries, refreshed cells, code):
    K_DONE, or why Python must take over (full record buffer before an event; a redistribution
    done outside, or an avalanche that needs one, after the event's slip: Python finishes that
    event, see :meth:`KMC._finish_event`)."""
    gam = st[S_K] * ctl.dgamma
    done = 0
    tries = 0
    refreshed = 0
    while done < todo:
        if st[S_NREC] >= wk.rec.shape[0]:
            return done, tries, refreshed, K_RECFULL
        c, n, t = kmc_pick(rng, gam, f.sig, f.R, sy, rt, tr)
        tries += t
        if c < 0:  # no acceptance within MAX_TRIES: Python's pick goes on or reports a collapse
            return done, tries, refreshed, K_NOPICK
        tc = sy.tauc[c, n] + _pressure_shift(c, gam, f.sig, f.R, rt.alpha_p, rt.p_off)
        trigger_slip(rng, st, ctl, f, sy, kb, wk, rule, c, n, tc)
        if _redistribute(st, f, sy, lz, kb, wk, ctl):
            return done, tries, refreshed, K_EXTERNAL
        st[S_EVBASE] = st[S_EVENTS]
        if aqs_advance(rng, st, ctl, f, sy, lz, kb, wk, rule) != RC_STOP:
            return done, tries, refreshed, K_AVALANCHE
        refreshed += kmc_refresh(False, gam, f.sig, f.R, sy, rt, tr)
        done += 1
    return done, tries, refreshed, K_DONE


@njit(cache=True)
def stress_observables(sig, R, gam, tauc, w):
    """(mean tau_c over the systems, sqrt(var d + var s) over cells) (cell weights w; per cell
    the mean of its systems: columns with tau_c = inf are none, slip.reference_area)."""
    nc = sig.shape[1]
    md = 0.0
    ms = 0.0
    for c in range(nc):
        md += w[c] * (sig[0, c] + gam * R[0, c])
        ms += w[c] * (sig[1, c] + gam * R[1, c])
    v = 0.0
    mt = 0.0
    for c in range(nc):
        a = sig[0, c] + gam * R[0, c] - md
        b = sig[1, c] + gam * R[1, c] - ms
        v += w[c] * (a * a + b * b)
        t = 0.0
        used = 0
        for n in range(tauc.shape[1]):
            if tauc[c, n] < np.inf:
                t += tauc[c, n]
                used += 1
        mt += w[c] * t / used
    return mt, math.sqrt(v)


# ============================================================================ Python driver
class KMC:
    """Thermally activated dynamics of one state at fixed external strain.

    Args:
        driver: the :class:`femplast.tensorial.aqs.AQSDriver` of the state, in a stable state (phase
            PH_LOAD) at its current strain ``driver.gamma_ext``; avalanches triggered by thermal
            events run through it (same rules, same random stream) and are recorded in its
            avalanche table (size includes the thermal event).
        temperature: kB T (LJ energy), > 0.
        Va: activation volume (LJ area).
        window: thermal events per stationarity window.
        tolerance: relative change of the window means below which the state is stationary.
    """

    def __init__(self, driver: AQSDriver, temperature: float, Va: float = 1.0,
                 window: int = 1000, tolerance: float = 0.01):
        if temperature <= 0:
            raise ValueError("KMC needs a temperature > 0")
        self.drv = driver
        self.model, self.state = driver.model, driver.state
        self.temperature = float(temperature)
        self.beta = float(Va) / float(temperature)
        self.factor = SLACK_FACTOR
        self.delta = math.log(self.factor) / self.beta
        nc, N = self.model.num_cells, self.model.params.N
        self.U = np.zeros(nc)
        self.tree = np.zeros(nc + 1)
        self.kref = np.zeros((3, nc))
        self.th0 = np.zeros(nc)
        self.tc0 = np.zeros(nc)
        self.counters = np.zeros(1, np.int64)
        self.work = np.zeros(N)
        self.window = max(int(window), SAMPLES_PER_WINDOW)
        self.tolerance = float(tolerance)
        # scalar progress (checkpointed)
        self.events = 0  # thermal events
        self.tries = 0
        self.refreshed = 0
        self.stationary_at: int | None = None
        self.samples: list[tuple[int, float, float]] = []  # (event, <tau_c>, std stress)
        self.windows: list[tuple[int, float, float]] = []  # window-end event, means
        self._initialized = False

    @property
    def gam(self) -> float:
        return self.drv.gamma_ext

    def _bundles(self):
        s, p = self.state, self.model.params
        sy = Systems(s.theta, s.sin2, s.cos2, s.tauc)
        rt = Rates(self.beta, self.factor, self.delta, p.alpha_p, p.p_offset)
        tr = Tree(self.U, self.tree, self.kref, self.th0, self.tc0, self.counters, self.work)
        return self.gam, s.sig, self.drv.R, sy, rt, tr

    def refresh(self, full: bool = False) -> int:
        return int(kmc_refresh(full, *self._bundles()))

    def pick(self) -> tuple[int, int, int]:
        """Draw (cell, system, tries) without changing the state (except the random stream)."""
        if not self._initialized:
            self.refresh(full=True)
            self._initialized = True
        total = 0
        while True:  # kmc_pick returns every MAX_TRIES rejections (see MAX_TRIES)
            c, n, t = kmc_pick(self.state.rng, *self._bundles())
            total += int(t)
            if c >= 0:
                return int(c), int(n), total
            if t == 0 or total >= STALL_TRIES:
                rate = "every rate underflows to 0" if t == 0 else \
                    f"no event accepted in {total} tries"
                raise FemplastInputError(
                    "temperature", 1.0 / self.beta, f"a temperature kB T / Va at which "
                    f"thermal activation happens (KMC acceptance collapsed: {rate}; raise "
                    "kmc.temperature or the hold stage's temperature)")

    def rates(self) -> np.ndarray:
        """All rates nu_n at the current stress, shape (cells, N) (reference, O(cells N))."""
        s, p = self.state, self.model.params
        out = np.empty_like(s.tauc)
        for c in range(s.tauc.shape[0]):
            system_rates(c, self.gam, s.sig, self.drv.R, s.sin2, s.cos2, s.tauc, self.beta,
                         p.alpha_p, p.p_offset, out[c])
        return out

    def step(self) -> int:
        """One thermal event and the avalanche it triggers; returns the avalanche size.

        The event's amplitude is the slip rule's (:mod:`femplast.tensorial.rules`) with
        ``gamma_max`` taken at the system's (pressure-shifted) threshold, since its local
        stress has reached the threshold by activation (appendix A.3; ``kmc.amplitude_rule:
        mepls``: at threshold + kB T, for the avalanche it triggers too,
        :func:`femplast.tensorial.rules.driving_stress`); it opens its avalanche as relaxation
        step 0 of the event log.
        """
        c, n, t = self.pick()
        self.tries += t
        s, p, drv = self.state, self.model.params, self.drv
        tc = s.tauc[c, n] + _pressure_shift(c, self.gam, s.sig, drv.R, p.alpha_p, p.p_offset)
        size = drv.trigger(c, n, tc, self.temperature)
        self.events += 1
        self.refreshed += self.refresh()
        return size

    def steps(self, count: int) -> None:
        """``count`` thermal events (the same as ``count`` calls of :meth:`step`), run by the
        compiled :func:`kmc_events`; Python takes over only for what the loop hands back."""
        drv = self.drv
        if drv.event_log:  # the event log's buffer is managed per event by the driver
            for _ in range(count):
                self.step()
            return
        if not self._initialized:
            self.refresh(full=True)
            self._initialized = True
        drv.max_events = 1 << 40  # as AQSDriver.trigger's avalanche: no event budget
        athermal = drv.rule
        if self.model.params.thermal_amplitude != "paper":  # every slip at T (rules)
            drv.rule = drv._thermal_rule(self.temperature)
        try:
            self._steps(int(count))
        finally:
            drv.rule = athermal
        drv._flush()

    def _steps(self, left: int) -> None:
        drv = self.drv
        while left > 0:
            gam, sig, R, sy, rt, tr = self._bundles()
            ctl, f, sy, lz, kb, wk, rule = drv._bundles(drv.k)
            done, tries, nref, code = kmc_events(self.state.rng, drv.st, ctl, f, sy, lz, kb, wk,
                                                 rule, rt, tr, left)
            self.events += int(done)
            self.tries += int(tries)
            self.refreshed += int(nref)
            left -= int(done)
            if code == K_RECFULL:
                drv._flush()
            elif code == K_NOPICK:  # KMC.step's pick retries, or stops on a collapse
                self.step()
                left -= 1
            elif code != K_DONE:
                self._finish_event(code)
                left -= 1

    def _finish_event(self, code: int) -> None:
        """The rest of an event :func:`kmc_events` handed back after its slip (as
        :meth:`AQSDriver.trigger` and :meth:`step` do it)."""
        drv = self.drv
        if code == K_EXTERNAL:
            drv._external()
        # K_AVALANCHE: the avalanche stopped for a redistribution outside; the driver's
        # stepping does it and goes on
        drv._finish_avalanche()
        self.events += 1
        self.refreshed += self.refresh()

    def observe(self) -> tuple[float, float]:
        s = self.state
        self.model.refresh(s)
        return stress_observables(s.sig, self.drv.R, self.gam, s.tauc, self.model.weights)

    def _sample(self):
        mt, ss = self.observe()
        self.samples.append((self.events, mt, ss))
        if self.events % self.window == 0 and self.events > 0:
            last = [x for x in self.samples if x[0] > self.events - self.window]
            self.windows.append((self.events, float(np.mean([x[1] for x in last])),
                                 float(np.mean([x[2] for x in last]))))
            w = self.windows
            if self.stationary_at is None and len(w) >= 3:
                ok = True
                for a, b in ((w[-3], w[-2]), (w[-2], w[-1])):
                    for j in (1, 2):
                        if abs(b[j] - a[j]) > self.tolerance * abs(b[j]):
                            ok = False
                if ok:
                    self.stationary_at = self.events

    def run(self, max_events: int, until_stationary: bool = True, on_budget=None,
            budget: int = 500) -> str:
        """Run thermal events until stationary (when asked) or ``max_events``.

        ``on_budget(self)`` is called every ``budget`` events (progress, checkpoints,
        interruption: it may raise). Returns 'stationary' or 'max_events'.
        """
        every = max(1, self.window // SAMPLES_PER_WINDOW)
        if not self.samples:
            self._sample()
        while self.events < max_events:
            if until_stationary and self.stationary_at is not None:
                break
            # every event up to the next sample, budget call or the end in one compiled run
            nxt = min(max_events, (self.events // every + 1) * every)
            if on_budget is not None:
                nxt = min(nxt, (self.events // budget + 1) * budget)
            self.steps(nxt - self.events)
            if self.events % every == 0:
                self._sample()
            if on_budget is not None and self.events % budget == 0:
                on_budget(self)
        return "stationary" if (until_stationary and self.stationary_at is not None) \
            else "max_events"

    @property
    def stats(self) -> dict:
        nc = self.model.num_cells
        return dict(events=self.events, stationary_at=self.stationary_at,
                    mean_tries=self.tries / max(self.events, 1),
                    refreshed_cells_per_event=self.refreshed / max(self.events, 1),
                    refreshed_fraction=self.refreshed / max(self.events, 1) / nc,
                    avalanche_events=self.drv.num_events)

    # ------------------------------------------------------------------ checkpoint
    ARRAYS = ("U", "tree", "kref", "th0", "tc0", "counters")

    def checkpoint(self) -> dict:
        d = {k: getattr(self, k).copy() for k in self.ARRAYS}
        d.update(events=self.events, tries=self.tries, refreshed=self.refreshed,
                 stationary_at=-1 if self.stationary_at is None else self.stationary_at,
                 initialized=int(self._initialized),
                 samples=np.array(self.samples, float).reshape(-1, 3),
                 windows=np.array(self.windows, float).reshape(-1, 3))
        return d

    def restore(self, d: dict) -> None:
        for k in self.ARRAYS:
            getattr(self, k)[...] = d[k]
        self.events, self.tries = int(d["events"]), int(d["tries"])
        self.refreshed = int(d["refreshed"])
        sa = int(d["stationary_at"])
        self.stationary_at = None if sa < 0 else sa
        self._initialized = bool(int(d["initialized"]))
        self.samples = [(int(a), float(b), float(c)) for a, b, c in np.asarray(d["samples"])]
        self.windows = [(int(a), float(b), float(c)) for a, b, c in np.asarray(d["windows"])]


# ============================================================================ quench
def relax(driver: AQSDriver) -> int:
    """Athermal avalanche at the driver's current strain (:meth:`AQSDriver.relax`)."""
    return driver.relax()


def quench(model, state, driver: AQSDriver | None = None) -> dict:
    """T = 0 quench at gamma_ext = 0: athermal relaxation, then stress -> Sigma0, eps_pl -> 0.

    The relaxation is an AQS avalanche at fixed strain (none after a KMC run, which always ends
    in a stable state). Afterwards ``state.sigma0`` is the total stress, ``state.sig`` equals
    it, the plastic strain is zero and the slip systems are kept. Returns observables of the
    quenched sample: mean |stress| (von Mises-like sqrt(d^2 + s^2)), mean smallest distance to
    threshold, mean tau_c, std of the stress.
    """
    if driver is None:
        driver = AQSDriver(model, state, 0.0, 1.0, 1)
    if driver.gamma_ext != 0.0:
        raise ValueError("quench is defined at gamma_ext = 0")
    relax(driver)
    model.refresh(state)
    state.sigma0[...] = state.sig
    state.eps_pl[:] = 0.0
    if model.redist.kind == "direct":
        model.redist.sigma0 = state.sigma0
    return sample_observables(model, state)


def sample_observables(model, state, gamma_ext: float = 0.0, alpha_ext: float = 0.0) -> dict:
    """Mean |deviatoric stress|, mean min dtau_c, mean tau_c, stress std of a state."""
    model.refresh(state)
    R = model.load_response(alpha_ext)
    tot = state.sig + gamma_ext * R
    w = model.weights
    mag = np.hypot(tot[0], tot[1])
    mt, ss = stress_observables(state.sig, R, gamma_ext, state.tauc, w)
    return dict(mean_abs_stress=float(w @ mag),
                mean_dtau_c_min=float(w @ model.distance_to_threshold(state, gamma_ext,
                                                                      alpha_ext)),
                mean_tau_c=float(mt), stress_std=float(ss))


def write_quench(path, model, state, info: dict) -> None:
    """Save a quenched sample: HDF5 ``state`` group (stress, sigma0, eps_pl, theta, tau_c) read
    by ``initial.state``, plus the KMC history (``kmc`` group)."""
    from femplast.io.output import H5Writer, write_group
    from femplast.redistribution.backends import from_dsp
    from femplast.version import __version__

    sig = from_dsp(state.sigma0)
    with H5Writer(path) as f:
        f.attrs.update(dict(femplast_version=__version__, backend=model.backend))
        write_group(f, "state", dict(stress=sig, sigma0=sig, eps_pl=state.eps_pl,
                                     theta=state.theta, tau_c=state.tauc),
                    dict(gamma_ext=0.0, alpha_ext=0.0,
                         rng_state=json.dumps(state.rng.bit_generator.state),
                         doc="quenched sample: stress = pre-stress Sigma0 [xx,yy,xy], zero "
                             "plastic strain, slip systems kept"))
        hist = np.asarray(info.pop("windows", np.zeros((0, 3))), float).reshape(-1, 3)
        samp = np.asarray(info.pop("samples", np.zeros((0, 3))), float).reshape(-1, 3)
        write_group(f, "kmc", dict(window_event=hist[:, 0].astype(np.int64),
                                   window_mean_tau_c=hist[:, 1], window_stress_std=hist[:, 2],
                                   sample_event=samp[:, 0].astype(np.int64),
                                   sample_mean_tau_c=samp[:, 1], sample_stress_std=samp[:, 2]),
                    {k: (json.dumps(v) if isinstance(v, (dict, list)) or v is None else v)
                     for k, v in info.items()})


__all__ = ["KMC", "quench", "sample_observables", "write_quench", "kmc_pick", "fen_find"]
