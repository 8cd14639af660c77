"""The tensorial slip-system elasto-plastic model (tensorial paper, sec. 3, appendix A.2, A.7).

:class:`TensorialModel` holds what realizations share (mesh, factorized elasticity,
redistribution backend, parameters); :class:`State` what each realization owns (stresses,
plastic strain, slip systems, random generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from femplast.fe.elasticity import PeriodicElasticity
from femplast.fe.mesh import BoxMesh
from femplast.redistribution.backends import from_dsp, make_redistribution, to_dsp
from femplast.tensorial.prestress import random_prestress
from femplast.tensorial.rules import SlipRule, SystemsPerArea
from femplast.tensorial.slip import (
    THRESHOLD_WEIBULL,
    V_NGROUPS_MEAN,
    V_STRUCT_STRAIN,
    V_SYSTEMS,
    groups_per_area,
    renew_all,
    systems_per_cell,
    variant_vector,
)


@dataclass
class ModelParams:
    """Parameters of the slip dynamics (names follow the paper)."""

    N: int = 36
    chi: float = 2.25  # exponent of the amplitude law (eq. 7)
    threshold_kind: int = THRESHOLD_WEIBULL
    weibull_lambda: float = 2.05  # Weibull lambda (eq. 5), or the fixed threshold (model E)
    weibull_k: float = 2.18  # Weibull k (eq. 5)
    alpha_p: float = 0.0  # pressure sensitivity (model B)
    p_offset: float = 0.0  # hydrostatic offset <p> (model B)
    fixed_dgamma: float = 0.0  # constant slip amplitude (model F) when > 0
    renew: bool = True
    # model variants (tensorial.variants): renewal modes etc., slip.variant_vector; None: none
    vpar: np.ndarray | None = None
    prestress_std: float = 0.0  # std of Sigma_xy of a random compatible initial pre-stress
    # evolving moduli (sec. 6): steady-state shear modulus (> 0, with vpar's structure strain);
    # 0: G does not evolve. Needs the direct backend (auto -> direct).
    G_ss: float = 0.0
    # the slip amplitude rule (femplast.tensorial.rules): an AmplitudeRule, a registered name,
    # or None: eq. 7 with chi, or fixed_dgamma when > 0
    amplitude: object = None
    # how slips at T > 0 take gamma_max: paper (A.3) or mepls (femplast.tensorial.rules)
    thermal_amplitude: str = "paper"
    # systems per area (slip.reference_area): N systems per reference_area, each cell its own
    # count (slip.groups_per_area), kept by the renewals; None: N in every cell
    reference_area: float | None = None


class State:
    """One realization: internal stress (d, s, p) incl. pre-stress, plastic strain, systems."""

    def __init__(self, num_cells: int, N: int, rng: np.random.Generator):
        self.rng = rng
        self.sig = np.zeros((3, num_cells))
        self.sigma0 = np.zeros((3, num_cells))
        self.eps_pl = np.zeros((num_cells, 3))
        self.theta = np.zeros((num_cells, N))
        self.sin2 = np.zeros((num_cells, N))
        self.cos2 = np.ones((num_cells, N))
        self.tauc = np.zeros((num_cells, N))
        self.eacc = np.zeros(num_cells)  # accumulated plastic strain (sum of d_gamma) per cell

    def copy(self) -> State:
        new = State.__new__(State)
        for k, v in self.__dict__.items():
            if isinstance(v, np.ndarray):
                setattr(new, k, v.copy())
        new.rng = np.random.Generator(type(self.rng.bit_generator)())
        new.rng.bit_generator.state = self.rng.bit_generator.state
        return new


class TensorialModel:
    """Mesh + elasticity + redistribution + slip parameters, shared by realizations."""

    def __init__(self, box: BoxMesh, G, B, params: ModelParams, backend: str = "auto",
                 dense_memory_mb: float | None = None,
                 elasticity: PeriodicElasticity | None = None):
        self.box, self.params = box, params
        self.G, self.B = G, B  # quench moduli (the current ones are the backend's)
        if params.reference_area is not None:
            params.vpar = _systems_per_area(params)
        if self.evolving_moduli:
            if backend == "auto":
                backend = "direct"
            if backend != "direct":
                from femplast.errors import FemplastInputError

                raise FemplastInputError("redistribution.backend", backend, "direct (or auto) "
                                         "with evolving moduli (variant.G_ss)")
        self.redist = make_redistribution(box, G, B, backend, dense_memory_mb, elasticity)
        self.num_cells = box.num_cells
        self.nx = box.n if box.n else 0
        self.weights = self.redist.weights
        self._load_cache: dict[float, np.ndarray] = {}

    @classmethod
    def build(cls, box: BoxMesh, G=13.2, B=59.0, N: int | None = None, rho_s: float = 0.8,
              backend: str = "auto", dense_memory_mb: float | None = None, **params):
        if N is None:
            N = systems_per_cell(np.sqrt(box.mean_cell_area), rho_s)
        return cls(box, G, B, ModelParams(N=N, **params), backend, dense_memory_mb)

    @property
    def rule(self) -> SlipRule:
        """The slip rule of the parameters (amplitude, eigenstrain, renewal; one for every
        driver: AQS, KMC, patch tests)."""
        return SlipRule.from_params(self.params)

    @property
    def el(self) -> PeriodicElasticity:
        """The factorized FE problem (built on first use; the propagator does not need it)."""
        return self.redist.el

    @property
    def backend(self) -> str:
        return self.redist.kind

    @property
    def ncomp_dynamic(self) -> int:
        """Stress components the event loop updates: (d, s), plus p when the dynamics need it.

        With the propagator and pressure-independent thresholds the pressure is not updated
        per event (a third less memory traffic); :meth:`refresh` recomputes it exactly.
        """
        return 3 if (self.params.alpha_p or self.redist.kind != "propagator") else 2

    def refresh(self, state: State) -> None:
        """Bring the pressure component of ``state.sig`` up to date (see ncomp_dynamic)."""
        if self.ncomp_dynamic == 2:
            state.sig[2] = state.sigma0[2] + self.redist.pressure_from_plastic(state.eps_pl)

    @property
    def evolving_moduli(self) -> bool:
        """Whether the shear moduli evolve with the accumulated plastic strain (sec. 6)."""
        p = self.params
        return bool(p.G_ss) and p.vpar is not None and p.vpar[V_STRUCT_STRAIN] > 0

    def moduli(self, eacc: np.ndarray) -> np.ndarray:
        """Shear modulus per cell (canonical) for accumulated plastic strains ``eacc``:
        ``G_ss + (G_q - G_ss) exp(-e / structure_strain)``, exactly ``G_q`` where ``e = 0``."""
        p = self.params
        Gq = np.broadcast_to(np.asarray(self.G, float), (self.num_cells,))
        e = np.asarray(eacc, float)
        return np.where(e > 0, p.G_ss + (Gq - p.G_ss) * np.exp(-e / p.vpar[V_STRUCT_STRAIN]),
                        Gq)

    def sync_moduli(self, state: State) -> bool:
        """Set the backend's moduli to those of ``state.eacc`` (evolving moduli; collective).

        Returns whether they changed. After a change the FE problem is refactorized and
        ``selfq`` recomputed (:meth:`femplast.redistribution.backends.DirectRedistribution.
        update_moduli`: selected inversion of the new factor), load responses are recomputed
        on request; the caller brings the stresses up to date
        (:class:`femplast.tensorial.aqs.AQSDriver`).
        """
        G = self.moduli(state.eacc)
        if np.array_equal(G, np.broadcast_to(np.asarray(self.redist.G, float), G.shape)):
            return False
        self.redist.update_moduli(G, self.B)
        self._load_cache.clear()
        return True

    def load_response(self, alpha: float) -> np.ndarray:
        key = float(alpha)
        if key not in self._load_cache:
            self._load_cache[key] = self.redist.load_response(alpha)
        return self._load_cache[key]

    def new_state(self, rng: np.random.Generator, sigma0_xyz: np.ndarray | None = None,
                  systems: tuple[np.ndarray, np.ndarray] | None = None) -> State:
        """Stress-free (or pre-stressed) state with freshly drawn slip systems.

        ``systems = (theta, tau_c)`` replaces the drawn systems (a state read from a file); the
        draws still happen, so the realization's random stream is the same either way.
        """
        p = self.params
        st = State(self.num_cells, p.N, rng)
        if self.evolving_moduli:  # a model reused by realizations: back to the quench moduli
            self.sync_moduli(st)
        if p.vpar is None:
            renew_all(rng, st.theta, st.sin2, st.cos2, st.tauc, p.threshold_kind,
                      p.weibull_lambda, p.weibull_k)
        elif p.reference_area is not None:
            renew_all(rng, st.theta, st.sin2, st.cos2, st.tauc, p.threshold_kind,
                      p.weibull_lambda, p.weibull_k, p.vpar, self.cell_systems() // 4)
        else:
            renew_all(rng, st.theta, st.sin2, st.cos2, st.tauc, p.threshold_kind,
                      p.weibull_lambda, p.weibull_k, p.vpar)
        if sigma0_xyz is None and p.prestress_std > 0:
            sigma0_xyz = random_prestress(self, rng, p.prestress_std)  # after the systems
        if sigma0_xyz is not None:
            st.sigma0 = to_dsp(sigma0_xyz)
            st.sig[:] = st.sigma0
        if systems is not None:
            st.theta[:], st.tauc[:] = systems
            st.sin2[:] = np.sin(2 * st.theta)
            st.cos2[:] = np.cos(2 * st.theta)
        if self.redist.kind == "direct":
            self.redist.sigma0 = st.sigma0
        return st

    def cell_areas(self) -> np.ndarray:
        """Area of each cell (canonical order)."""
        if self.box.structured:
            return np.full(self.num_cells, self.box.mean_cell_area)
        el = self.el
        return el.gather(el.area)

    def cell_systems(self) -> np.ndarray:
        """Slip systems per cell drawn by :meth:`new_state`: N everywhere, or with
        ``reference_area`` ``4 clip(round(N/4 A_c / reference_area), 1, N/4)``
        (:func:`femplast.tensorial.slip.groups_per_area`); renewals keep them."""
        p = self.params
        if p.reference_area is None:
            return np.full(self.num_cells, p.N, dtype=np.int64)
        return 4 * groups_per_area(self.cell_areas(), p.N, p.reference_area)

    def total_stress(self, state: State, gamma_ext: float, alpha_ext: float) -> np.ndarray:
        """Cell stress ``[xx, yy, xy]`` at external strain gamma_ext; shape (num_cells, 3)."""
        self.refresh(state)
        return from_dsp(state.sig + gamma_ext * self.load_response(alpha_ext))

    def fe_stress(self, state: State, gamma_ext: float, alpha_ext: float) -> np.ndarray:
        """The same stress from a fresh FE solve of the state's plastic strain (reference)."""
        el = self.el
        sig = el.stress(state.eps_pl[el.cells], el.external(gamma_ext, alpha_ext))
        return el.gather(sig) + from_dsp(state.sigma0)

    def distance_to_threshold(self, state: State, gamma_ext: float, alpha_ext: float):
        """Smallest dtau_c per cell (num_cells,) at the given external strain."""
        tot = state.sig + gamma_ext * self.load_response(alpha_ext)
        tau = state.sin2 * tot[0][:, None] + state.cos2 * tot[1][:, None]
        shift = 0.0
        if self.params.alpha_p:
            shift = self.params.alpha_p * (self.params.p_offset - tot[2])[:, None]
        return (state.tauc + shift - tau).min(axis=1)


def _systems_per_area(p: ModelParams) -> np.ndarray:
    """The variant vector of ``p`` with :class:`SystemsPerArea`; refuses what it cannot
    compose with (two fixed systems, a fluctuating number of groups, N not in groups of four,
    a reference area <= 0)."""
    from femplast.errors import FemplastInputError

    if not p.reference_area > 0:
        raise FemplastInputError("slip.reference_area", p.reference_area, "null or > 0")
    v = variant_vector() if p.vpar is None else p.vpar.copy()
    if v[V_SYSTEMS] != 0 or v[V_NGROUPS_MEAN] > 0:
        raise FemplastInputError("slip.reference_area", p.reference_area, "null with "
                                 "variant.systems: two_fixed or variant.N_fluctuation (the "
                                 "number of systems per cell is then the variant's)")
    if p.N % 4:
        raise FemplastInputError("slip.N", p.N, "a multiple of 4 with slip.reference_area "
                                 "(the counts are groups of four)")
    SystemsPerArea().apply(v)
    return v


__all__ = ["TensorialModel", "State", "ModelParams"]
