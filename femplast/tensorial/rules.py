"""The slip rule of the tensorial model: what happens when a slip system yields (sec. 3.3).

One rule, one place. A slip of system ``n`` of cell ``c`` (every driver: AQS avalanches, KMC
thermal events, avalanches inside patch tests) goes through the same three steps:

1. **amplitude** ``d_gamma`` from the cell's driving resolved stress ``tau`` and its
   self-response ``den = (C:(S - I):M):M`` (< 0): ``gamma_max = -2 tau / den`` (eq. 6) bounds
   the slip that keeps the dissipation non-negative, and an :class:`AmplitudeRule` turns it
   into ``d_gamma`` (eq. 7, or a fixed amplitude, capped or not);
2. **eigenstrain increment** ``Delta eps_pl = d_gamma M(theta) / 2`` (:func:`add_slip`);
3. after the stresses are redistributed, **renewal** of the cell's systems: new angles and
   Weibull thresholds (eq. 5), modified by the variants' :class:`RenewalMode` s (two fixed
   systems, a fluctuating number of systems, correlated thresholds, evolving structure,
   stress-biased renewal), which
   combine into the parameter vector of the compiled renewal (:mod:`femplast.tensorial.slip`).
   A new renewal mode needs a slot there and its compiled branch in ``renew_cell``.

The drivers' compiled loops receive the rule as one bundle (:class:`RuleArgs`, built by
:meth:`SlipRule.args`). An amplitude rule is a compiled C callback of the fixed signature
:data:`AMPLITUDE` (``numba.cfunc``), so one compiled event loop serves every rule, and numba's
cache keeps it between runs. A new rule is one subclass and one registration line::

    @register
    class HalfMax(AmplitudeRule):
        name = "half_max"
        draws = False

        @staticmethod
        @cfunc(AMPLITUDE, cache=True)
        def amplitude(u, gamma_max, p0, p1, p2):
            return 0.5 * gamma_max if gamma_max > 0.0 else 0.0

Random numbers: a rule with ``draws = True`` gets one uniform double ``u`` from the
realization's stream per slip, drawn only when ``gamma_max > 0`` (so the stream is the one of
the original inverse-CDF draw); a rule with ``draws = False`` consumes none.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import cfunc, njit, types

from femplast.errors import FemplastInputError
from femplast.tensorial.slip import (
    SYSTEMS_TWO_FIXED,
    THRESHOLD_WEIBULL,
    V_BIAS,
    V_BIAS_2ALPHA,
    V_CAP,
    V_CORR_STRAIN,
    V_K_SS,
    V_KEEP_GROUPS,
    V_LAMBDA_SS,
    V_NGROUPS_MEAN,
    V_STRUCT_STRAIN,
    V_SYSTEMS,
    keeps_groups_only,
    renew_cell,
    renew_cell_pcg,
    renew_cell_pcg_kept,
    variant_vector,
)

_f8 = types.float64
AMPLITUDE = _f8(_f8, _f8, _f8, _f8, _f8)
"""Signature of an amplitude rule: ``d_gamma = amplitude(u, gamma_max, p0, p1, p2)``."""

RuleArgs = namedtuple("RuleArgs", "amplitude draws par renew threshold_kind weibull_lambda "
                                  "weibull_k vpar temperature")
"""The slip rule as the compiled loops receive it: the amplitude callback, whether it draws,
its three parameters, whether slipped cells are renewed, the threshold law (kind, Weibull
lambda and k, or the fixed threshold in ``weibull_lambda``), the variant vector ``vpar``
(renewal modes, :func:`femplast.tensorial.slip.variant_vector`; None: the original renewal)
and ``temperature``: kB T added to the threshold of every slip (thermal amplitude rule
``mepls`` while T > 0, :func:`driving_stress`); 0: the paper's rule."""

THERMAL_AMPLITUDE_RULES = ("paper", "mepls")
"""How slips at T > 0 take gamma_max (:func:`driving_stress`): ``paper`` (appendix A.3) or
``mepls`` (the paper's own code, MEPLS gallery/espci/espci.h)."""


class AmplitudeRule:
    """How large a slip is, given ``gamma_max`` (eq. 6). Subclasses set ``name``, ``draws``
    and a compiled ``amplitude`` (signature :data:`AMPLITUDE`); ``params`` fills p0..p2."""

    name: ClassVar[str] = ""
    draws: ClassVar[bool] = True
    amplitude: ClassVar = None

    def params(self) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0)

    @classmethod
    def from_params(cls, p) -> AmplitudeRule:
        """The rule with the parameters of :class:`femplast.tensorial.model.ModelParams`
        ``p`` (a rule selected by name); default: no parameters."""
        return cls()


AMPLITUDE_RULES: dict[str, type[AmplitudeRule]] = {}


def register(cls: type[AmplitudeRule]) -> type[AmplitudeRule]:
    """Make an amplitude rule known by its ``name`` (model parameters may name it)."""
    if not cls.name or cls.amplitude is None:
        raise TypeError(f"{cls.__name__}: an amplitude rule needs a name and an amplitude")
    AMPLITUDE_RULES[cls.name] = cls
    return cls


@register
@dataclass(frozen=True)
class PowerLaw(AmplitudeRule):
    """Eq. 7: ``P(d_gamma) = chi / gamma_max (1 - d_gamma / gamma_max)^(chi - 1)`` on
    ``[0, gamma_max]``, drawn by inverse CDF; no slip when ``gamma_max <= 0``."""

    chi: float = 2.25
    name: ClassVar[str] = "power_law"
    draws: ClassVar[bool] = True

    @staticmethod
    @cfunc(AMPLITUDE, cache=True)
    def amplitude(u, gamma_max, chi, p1, p2):
        if gamma_max <= 0.0:
            return 0.0
        return gamma_max * (1.0 - (1.0 - u) ** (1.0 / chi))

    def params(self):
        return (float(self.chi), 0.0, 0.0)

    @classmethod
    def from_params(cls, p):
        return cls(p.chi)


@register
@dataclass(frozen=True)
class Fixed(AmplitudeRule):
    """A constant amplitude ``d_gamma`` (model F, appendix A.8), whatever gamma_max."""

    d_gamma: float = 0.01
    name: ClassVar[str] = "fixed"
    draws: ClassVar[bool] = False

    @staticmethod
    @cfunc(AMPLITUDE, cache=True)
    def amplitude(u, gamma_max, d_gamma, p1, p2):
        return d_gamma

    def params(self):
        return (float(self.d_gamma), 0.0, 0.0)

    @classmethod
    def from_params(cls, p):
        return cls(p.fixed_dgamma)


@register
@dataclass(frozen=True)
class FixedCapped(AmplitudeRule):
    """A constant amplitude capped at ``gamma_max`` (no negative dissipation; 0 when
    ``gamma_max <= 0``)."""

    d_gamma: float = 0.01
    name: ClassVar[str] = "fixed_capped"
    draws: ClassVar[bool] = False

    @staticmethod
    @cfunc(AMPLITUDE, cache=True)
    def amplitude(u, gamma_max, d_gamma, p1, p2):
        if gamma_max <= 0.0:
            return 0.0
        return min(d_gamma, gamma_max)

    def params(self):
        return (float(self.d_gamma), 0.0, 0.0)

    @classmethod
    def from_params(cls, p):
        return cls(p.fixed_dgamma)


# ============================================================================ renewal modes
class RenewalMode:
    """A renewal mode of the model variants (appendix A.8, sec. 6). The compiled renewal
    (:func:`femplast.tensorial.slip.renew_cell`) reads the modes from one parameter vector;
    each mode writes its slots (:meth:`apply`), and modes combine."""

    def apply(self, v: np.ndarray) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class TwoFixedSystems(RenewalMode):
    """Two systems at 0 and 90 deg sharing one threshold (model I): only thresholds renew."""

    def apply(self, v):
        v[V_SYSTEMS] = SYSTEMS_TWO_FIXED


@dataclass(frozen=True)
class FluctuatingSystems(RenewalMode):
    """A fluctuating number of systems, ``4 (1 + Poisson(n_groups_mean - 1))`` per renewal."""

    n_groups_mean: float

    def apply(self, v):
        v[V_NGROUPS_MEAN] = self.n_groups_mean


@dataclass(frozen=True)
class CorrelatedThresholds(RenewalMode):
    """Renewed thresholds correlated with the old ones (Gaussian copula,
    ``rho = exp(-d_gamma / strain)``), the Weibull marginal kept."""

    strain: float

    def apply(self, v):
        v[V_CORR_STRAIN] = self.strain


@dataclass(frozen=True)
class EvolvingStructure(RenewalMode):
    """Weibull parameters relaxing with the cell's accumulated slip ``e`` towards
    ``(lambda_ss, k_ss)`` on the strain scale ``strain`` (sec. 6)."""

    lambda_ss: float
    k_ss: float
    strain: float

    def apply(self, v):
        v[V_LAMBDA_SS], v[V_K_SS], v[V_STRUCT_STRAIN] = self.lambda_ss, self.k_ss, self.strain


@dataclass(frozen=True)
class StressBiased(RenewalMode):
    """Orientation-dependent, stress-biased threshold renewal (tensorial paper, sec. 6 (iii):
    "an explicit built-in anisotropy in the slip thresholds as a function of orientation,
    understood as a bias in the structural renewal process induced by external stress"): a
    threshold renewed after a slip is ``tau_c^W (1 - bias cos 2(theta - alpha))``, ``alpha``
    the external loading orientation; the initial draw is unbiased. ``|bias| < 1``."""

    bias: float
    alpha_deg: float = 0.0

    def apply(self, v):
        v[V_BIAS], v[V_BIAS_2ALPHA] = self.bias, 2.0 * math.radians(self.alpha_deg)


@dataclass(frozen=True)
class SystemsPerArea(RenewalMode):
    """A fixed density of slip systems (case key ``slip.reference_area``): each cell has its
    own number of groups of four (:func:`femplast.tensorial.slip.groups_per_area`, drawn
    first by :meth:`femplast.tensorial.model.TensorialModel.new_state`), and a renewal keeps
    it (the count is the row's finite thresholds, so every driver and every copy of the
    arrays keeps it with no per-cell array of its own)."""

    def apply(self, v):
        v[V_KEEP_GROUPS] = 1.0


def renewal_vector(modes=(), cap: bool = False) -> np.ndarray | None:
    """The parameter vector of the compiled renewal for ``modes`` (None: the original renewal
    of sec. 3.3, when there is no mode and no capped amplitude)."""
    if not modes and not cap:
        return None
    v = variant_vector(cap=cap)
    for mode in modes:
        mode.apply(v)
    return v


@dataclass
class SlipRule:
    """The whole slip rule of a model: amplitude, eigenstrain increment, renewal.

    Args:
        amplitude: the :class:`AmplitudeRule`.
        renew: renew the systems of a cell after it slips (sec. 3.3).
        threshold_kind: THRESHOLD_WEIBULL (eq. 5) or THRESHOLD_FIXED (model E).
        weibull_lambda, weibull_k: the Weibull threshold law (weibull_lambda is the threshold
            itself with THRESHOLD_FIXED).
        vpar: the variant vector of the renewal modes (None: the original renewal).
    """

    amplitude: AmplitudeRule
    renew: bool = True
    threshold_kind: int = THRESHOLD_WEIBULL
    weibull_lambda: float = 2.05
    weibull_k: float = 2.18
    vpar: np.ndarray | None = None
    thermal_amplitude: str = "paper"

    @classmethod
    def from_params(cls, p) -> SlipRule:
        """The rule of :class:`femplast.tensorial.model.ModelParams` ``p``: ``p.amplitude``
        (an AmplitudeRule or a registered name) when given, else eq. 7 with ``p.chi``, or the
        fixed ``p.fixed_dgamma`` (capped when the variant vector says so)."""
        amp = getattr(p, "amplitude", None)
        if isinstance(amp, str):
            if amp not in AMPLITUDE_RULES:
                raise FemplastInputError("slip amplitude rule", amp,
                                         f"one of {', '.join(sorted(AMPLITUDE_RULES))}")
            amp = AMPLITUDE_RULES[amp].from_params(p)
        if amp is None:
            if p.fixed_dgamma > 0.0:
                capped = p.vpar is not None and p.vpar[V_CAP] != 0.0
                amp = (FixedCapped if capped else Fixed)(p.fixed_dgamma)
            else:
                amp = PowerLaw(p.chi)
        thermal = getattr(p, "thermal_amplitude", "paper")
        if thermal not in THERMAL_AMPLITUDE_RULES:
            raise FemplastInputError("kmc.amplitude_rule", thermal,
                                     f"one of {', '.join(THERMAL_AMPLITUDE_RULES)}")
        return cls(amp, bool(p.renew), int(p.threshold_kind), float(p.weibull_lambda),
                   float(p.weibull_k), p.vpar, thermal)

    def args(self, temperature: float = 0.0) -> RuleArgs:
        """The bundle the compiled loops take; ``temperature``: kB T of the slips it drives
        (thermal events and the avalanches they trigger; used by the ``mepls`` rule only)."""
        a = self.amplitude
        T = float(temperature) if self.thermal_amplitude == "mepls" else 0.0
        return RuleArgs(a.amplitude, bool(a.draws), np.array(a.params(), float), self.renew,
                        self.threshold_kind, self.weibull_lambda, self.weibull_k, self.vpar,
                        max(T, 0.0))


# ============================================================================ compiled steps
@njit(cache=True, inline="always")
def driving_stress(rule, tau, tau_c, thermal):
    """The resolved stress at which a slip takes ``gamma_max`` (eq. 6).

    ``paper`` (tensorial paper, appendix A.3): a thermally activated slip is driven by its
    (pressure-shifted) threshold ``tau_c`` (activation brought its stress there), an athermal
    one by its resolved stress ``tau``. ``mepls`` (the paper's code, MEPLS
    gallery/espci/espci.h ``Oriented::get_local_shear_stress_variation``): while T > 0
    (``rule.temperature``) every slip, thermal or athermal (the avalanche slips a thermal
    event triggers included), is driven by ``tau + barrier + T = tau_c + T``; at T = 0 it is
    the athermal rule.
    """
    if rule.temperature > 0.0:
        return tau_c + rule.temperature
    return tau_c if thermal else tau


@njit(cache=True, inline="always")
def slip_amplitude(rng, rule, tau, den):
    """``d_gamma`` of a slip driven by the resolved stress ``tau`` in a cell of self-response
    ``den``: ``gamma_max = -2 tau / den`` (eq. 6), then the rule's amplitude (eq. 7)."""
    gmax = -2.0 * tau / den
    u = 0.0
    if rule.draws and gmax > 0.0:
        u = rng.random()
    return rule.amplitude(u, gmax, rule.par[0], rule.par[1], rule.par[2])


@njit(cache=True, inline="always")
def self_response(c, s2, c2, selfq):
    """``(C:(S - I):M):M`` of cell ``c`` for a system with (sin 2theta, cos 2theta)."""
    return s2 * s2 * selfq[c, 0] + s2 * c2 * selfq[c, 1] + c2 * c2 * selfq[c, 2]


@njit(cache=True, inline="always")
def add_slip(eps_pl, c, s2, c2, d_gamma):
    """The eigenstrain increment ``d_gamma M(theta) / 2`` of a slip, ``[xx, yy, xy]``
    tensorial: ``M = [-sin 2theta, sin 2theta, cos 2theta]``."""
    eps_pl[c, 0] -= 0.5 * s2 * d_gamma
    eps_pl[c, 1] += 0.5 * s2 * d_gamma
    eps_pl[c, 2] += 0.5 * c2 * d_gamma


@njit(cache=True, inline="always")
def renew(rng, rule, theta, sin2, cos2, tauc, c, d_gamma, e, pcg=None):
    """Renew the systems of cell ``c`` after a slip of ``d_gamma`` (``e``: the cell's
    accumulated plastic strain), as the rule says (no-op when renewal is off). ``pcg``: the
    view of ``rng``'s PCG64 state (:func:`femplast.streams.pcg64_view`; empty: another bit
    generator): the original renewal then draws its 45 uniforms inline (same numbers)."""
    if not rule.renew:
        return
    if rule.vpar is None:
        if pcg is not None:  # pruned at compile time when the caller passes none
            if pcg.shape[0] == 4:
                renew_cell_pcg(pcg, c, theta, sin2, cos2, tauc, rule.threshold_kind,
                               rule.weibull_lambda, rule.weibull_k)
                return
        renew_cell(rng, c, theta, sin2, cos2, tauc, rule.threshold_kind, rule.weibull_lambda,
                   rule.weibull_k)
    else:
        if pcg is not None:
            if pcg.shape[0] == 4 and keeps_groups_only(rule.vpar):  # systems per area
                renew_cell_pcg_kept(pcg, c, theta, sin2, cos2, tauc, rule.threshold_kind,
                                    rule.weibull_lambda, rule.weibull_k)
                return
        renew_cell(rng, c, theta, sin2, cos2, tauc, rule.threshold_kind, rule.weibull_lambda,
                   rule.weibull_k, rule.vpar, d_gamma, e)
