"""Model variants of the tensorial paper (appendix A.8, section 6) as case options.

The case section ``variant:`` (femplast.config.case.VariantSection) selects a preset ``model`` (C is
the original model of sec. 3) and individual switches that override the preset and combine:

=====  =================================================================================
model  switches it sets
=====  =================================================================================
C      none (original model)
A      ``moduli: weibull`` - quenched per-cell shear modulus G ~ Weibull(<G>, k_G)
B      ``alpha_p: 0.2`` - pressure-sensitive thresholds tau_c + alpha_p (p + <p>)
D      ``kernel: shuffled`` - each slip's stress changes outside its cell are shuffled
E      ``thresholds: fixed`` - one homogeneous, never renewed threshold tau_c
F      ``systems: two_fixed, amplitude: fixed`` - 0/90 deg systems, one shared threshold,
       constant slip amplitude d_gamma_pl
G      F + ``kernel: shuffled``
H      F + ``thresholds: fixed``
I      ``kernel: mean_field`` - each slip changes the other cells by its average change
=====  =================================================================================

Section 6 extras (any model): ``renewal_bias`` (sec. 6 (iii): stress-biased, orientation-
dependent threshold renewal), ``N_fluctuation`` (number of systems per cell fluctuates),
``renewal_correlation_strain`` (renewed thresholds correlated with the old ones),
``structure_strain`` + ``lambda_ss``/``k_ss`` (Weibull lambda and k relax from their quench
values slip.weibull_lambda/k to steady-state values with the cell's accumulated plastic strain;
with ``G_ss`` also the shear modulus, from its quench value to G_ss: evolving moduli, direct
backend only - after every relaxation step that changes a modulus the FE problem is
refactorized, the stresses, load response, load speeds and every cell's ``selfq`` (MUMPS'
selected inversion) are recomputed and the lazy stability check restarts,
:meth:`femplast.tensorial.model.TensorialModel.sync_moduli`,
``femplast.tensorial.aqs.AQSDriver._external``),
``prestress_std`` (a random compatible initial pre-stress: a stand-in for the paper's quenched
pre-stress, the only disorder of model H).

Random numbers: realization i's moduli field comes from its own stream
``SeedSequence([run.seed, i, 1])`` (or ``SeedSequence([variant.G_seed])``, one field for all
realizations), so the realization's generator ``SeedSequence([run.seed, i])`` draws exactly
what it draws in model C: initial systems, then (prestress_std > 0) 2 x cells uniforms for the
pre-stress, then the dynamics (amplitudes of a step in ascending cell order; for the shuffled
kernel one permutation per slip of the step, :class:`femplast.redistribution.backends.
ShuffledRedistribution`; then the renewals, :func:`femplast.tensorial.slip.renew_cell`).
"""

from __future__ import annotations

import math

import numpy as np

from femplast.errors import FemplastInputError

MODELS = ("C", "A", "B", "D", "E", "F", "G", "H", "I")
PRESETS: dict[str, dict] = {
    "C": {},
    "A": dict(moduli="weibull"),
    "B": dict(alpha_p=0.2),
    "D": dict(kernel="shuffled"),
    "E": dict(thresholds="fixed"),
    "F": dict(systems="two_fixed", amplitude="fixed"),
    "G": dict(systems="two_fixed", amplitude="fixed", kernel="shuffled"),
    "H": dict(systems="two_fixed", amplitude="fixed", thresholds="fixed"),
    "I": dict(kernel="mean_field"),
}
DEFAULTS = dict(moduli="uniform", alpha_p=0.0, kernel="eshelby", thresholds="weibull",
                systems="random", amplitude="power_law")
POISSON_TAIL = 1e-6  # fluctuating N: columns up to the 1 - 1e-6 quantile of the group count


def resolve(v) -> dict:
    """Effective switches of a ``variant`` section: explicit keys > preset > defaults."""
    out = dict(DEFAULTS)
    out.update(PRESETS[v.model])
    for k in DEFAULTS:
        if getattr(v, k) is not None:
            out[k] = getattr(v, k)
    return out


def weibull_moduli(n: int, mean: float, shape: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` shear moduli ~ Weibull with the given mean and shape (scale = mean / Gamma(1 +
    1/shape)), by inverse CDF from ``n`` uniform doubles."""
    scale = mean / math.gamma(1.0 + 1.0 / shape)
    return scale * (-np.log1p(-rng.random(n))) ** (1.0 / shape)


def moduli_rng(case, index: int) -> np.random.Generator:
    v = case.variant
    if v.G_seed is not None:
        return np.random.default_rng(np.random.SeedSequence([int(v.G_seed)]))
    return np.random.default_rng(np.random.SeedSequence([int(case.run.seed), int(index), 1]))


def pressure_offset(case, index: int) -> float:
    """Model B's hydrostatic offset <p> of realization ``index`` (appendix A.8: the atomistic
    samples' mean pressure 1.95 varies from sample to sample with std 0.22):
    ``p_mean + p_std z``, z standard normal from SeedSequence([run.seed, index, 2])."""
    v = case.variant
    if not v.p_std:
        return float(v.p_mean)
    rng = np.random.default_rng(np.random.SeedSequence([int(case.run.seed), int(index), 2]))
    return float(v.p_mean + v.p_std * rng.standard_normal())


def per_realization_model(case) -> bool:
    """Whether each realization needs its own model (its own moduli field)."""
    return resolve(case.variant)["moduli"] == "weibull" and case.variant.G_seed is None


def n_columns(N: int) -> tuple[int, float]:
    """Fluctuating N: (columns, mean number of groups of four) for a nominal N."""
    from scipy.stats import poisson

    m = N / 4.0
    extra = int(poisson.ppf(1.0 - POISSON_TAIL, m - 1.0)) if m > 1 else 0
    return 4 * (1 + extra), m


def model_options(case, box, index: int = 0) -> dict:
    """Keyword arguments of :meth:`femplast.tensorial.model.TensorialModel.build` for a case."""
    from femplast.tensorial.rules import renewal_vector
    from femplast.tensorial.slip import THRESHOLD_FIXED, THRESHOLD_WEIBULL, systems_per_cell

    s, v = case.slip, case.variant
    sw = resolve(v)
    G = case.elasticity.G
    if sw["moduli"] == "weibull":
        G = weibull_moduli(box.num_cells, v.G_mean, v.G_shape, moduli_rng(case, index))
    # as TensorialModel.build: rho_s times the mean cell area
    N = s.N if s.N is not None else systems_per_cell(math.sqrt(box.mean_cell_area), s.rho_s)
    ngm = 0.0
    if sw["systems"] == "two_fixed":
        N = 2
    elif v.N_fluctuation:
        N, ngm = n_columns(N)
    fixed_thr = sw["thresholds"] == "fixed"
    fixed_amp = sw["amplitude"] == "fixed"
    opts = dict(G=G, N=N, chi=s.chi,
                threshold_kind=THRESHOLD_FIXED if fixed_thr else THRESHOLD_WEIBULL,
                weibull_lambda=v.tau_c if fixed_thr else s.weibull_lambda, weibull_k=s.weibull_k,
                alpha_p=float(sw["alpha_p"]), p_offset=v.p_mean if sw["alpha_p"] else 0.0,
                fixed_dgamma=v.d_gamma_pl if fixed_amp else 0.0, prestress_std=v.prestress_std,
                G_ss=float(v.G_ss or 0.0), amplitude=s.amplitude,
                thermal_amplitude=case.kmc.amplitude_rule)
    opts["vpar"] = renewal_vector(renewal_modes(v, sw, ngm, s, case.loading.alpha_ext),
                                  cap=bool(fixed_amp and v.d_gamma_cap))
    opts["reference_area"] = s.reference_area  # the model adds its renewal mode
    return opts


def renewal_modes(v, sw, n_groups_mean: float, s, alpha_ext: float = 0.0) -> list:
    """The renewal modes of a variant section (femplast.tensorial.rules); ``alpha_ext``: the
    loading orientation (deg) of the stress-biased renewal."""
    from femplast.tensorial.rules import (
        CorrelatedThresholds,
        EvolvingStructure,
        FluctuatingSystems,
        StressBiased,
        TwoFixedSystems,
    )

    modes = []
    if sw["systems"] == "two_fixed":
        modes.append(TwoFixedSystems())
    if n_groups_mean:
        modes.append(FluctuatingSystems(n_groups_mean))
    if v.renewal_correlation_strain:
        modes.append(CorrelatedThresholds(v.renewal_correlation_strain))
    if v.structure_strain:
        modes.append(EvolvingStructure(
            v.lambda_ss if v.lambda_ss is not None else s.weibull_lambda,
            v.k_ss if v.k_ss is not None else s.weibull_k, v.structure_strain))
    if v.renewal_bias:
        modes.append(StressBiased(v.renewal_bias, alpha_ext))
    return modes


def wrap_kernel(model, kernel: str):
    """Replace the model's redistribution by the shuffled or mean-field kernel on top of it."""
    from femplast.redistribution.backends import MeanFieldRedistribution, ShuffledRedistribution

    if kernel == "shuffled":
        model.redist = ShuffledRedistribution(model.redist)
    elif kernel == "mean_field":
        model.redist = MeanFieldRedistribution(model.redist)
    return model


def build_model(case, box, index: int = 0):
    """The model of a tensorial case on ``box``, variant included (``index``: the realization
    whose moduli field is drawn, when each realization has its own)."""
    from femplast.tensorial.model import TensorialModel

    opts = model_options(case, box, index)
    model = TensorialModel.build(box, B=case.elasticity.B, rho_s=case.slip.rho_s,
                                 backend=case.redistribution.backend,
                                 dense_memory_mb=case.redistribution.dense_memory_mb, **opts)
    return wrap_kernel(model, resolve(case.variant)["kernel"])


# ----------------------------------------------------------------------------- validation
def check(case) -> None:
    """Consistency of the variant section with the rest of the case (FemplastInputError)."""
    v = case.variant
    sw = resolve(v)
    _check_amplitude_rule(case, sw)
    _check_reference_area(case, sw)
    touched = v.model != "C" or any(getattr(v, k) is not None for k in DEFAULTS) or \
        v.N_fluctuation or v.renewal_correlation_strain or v.structure_strain or \
        v.prestress_std or v.G_ss is not None or v.renewal_bias or v.p_std
    if not touched:
        return
    if case.model not in ("tensorial", "quench"):
        raise FemplastInputError("variant.model", v.model, "C (no variant) with model: "
                                 f"{case.model} (variants are options of the tensorial model)")
    be = case.redistribution.backend
    if sw["kernel"] != "eshelby":
        if be == "direct" or case.run.parallel == "sample":
            raise FemplastInputError("redistribution.backend", be, "auto, propagator or dense "
                                     f"with variant.kernel: {sw['kernel']} (it needs the "
                                     "per-cell response columns; not run.parallel: sample)")
    if sw["moduli"] == "weibull":
        if be == "propagator":
            raise FemplastInputError("redistribution.backend", be, "auto, dense or direct "
                                     "with variant.moduli: weibull (heterogeneous moduli)")
        shared_only = (getattr(getattr(case, "kmc", None), "enabled", False)
                       or bool(getattr(case, "stages", None))
                       or getattr(getattr(case, "sweep", None), "enabled", False)
                       or case.model == "quench")
        if shared_only and v.G_seed is None:
            raise FemplastInputError("variant.G_seed", None, "an integer (one moduli field "
                                     "shared by all realizations) with kmc, stages or sweep")
    if sw["systems"] == "two_fixed":
        if case.slip.N is not None:
            raise FemplastInputError("slip.N", case.slip.N, "null with variant.systems: "
                                     "two_fixed (two systems per cell)")
        if v.N_fluctuation:
            raise FemplastInputError("variant.N_fluctuation", True, "false with "
                                     "variant.systems: two_fixed")
        if v.renewal_bias:
            raise FemplastInputError("variant.renewal_bias", v.renewal_bias, "0 with "
                                     "variant.systems: two_fixed (one threshold shared by "
                                     "both orientations)")
    if v.p_std and not sw["alpha_p"]:
        raise FemplastInputError("variant.p_std", v.p_std, "0 without pressure-sensitive "
                                 "thresholds (variant.alpha_p > 0, model B)")
    if sw["thresholds"] == "fixed":
        for k in ("renewal_correlation_strain", "structure_strain"):
            if getattr(v, k):
                raise FemplastInputError(f"variant.{k}", getattr(v, k), "0 with "
                                         "variant.thresholds: fixed (no threshold disorder)")
    if v.structure_strain:
        for k in ("lambda_ss", "k_ss"):
            if getattr(v, k) is None:
                raise FemplastInputError(f"variant.{k}", None, "a steady-state value (> 0) "
                                         "with variant.structure_strain > 0")
    if v.G_ss is not None:
        if not v.structure_strain:
            raise FemplastInputError("variant.G_ss", v.G_ss, "null without variant."
                                     "structure_strain > 0 (the strain scale of evolving moduli)")
        if be not in ("auto", "direct"):
            raise FemplastInputError("redistribution.backend", be, "direct (or auto) with "
                                     "variant.G_ss (evolving moduli)")
        if sw["kernel"] != "eshelby":
            raise FemplastInputError("variant.G_ss", v.G_ss, f"null with variant.kernel: "
                                     f"{sw['kernel']} (evolving moduli need the direct backend)")
        protocol = (case.model == "quench" or getattr(getattr(case, "kmc", None), "enabled",
                                                      False)
                    or bool(getattr(case, "stages", None)) or case.run.checkpoint_interval > 0
                    or getattr(getattr(case, "sweep", None), "enabled", False)
                    or case.patches.enabled or case.run.parallel == "sample")
        if protocol:
            raise FemplastInputError("variant.G_ss", v.G_ss, "null with kmc, stages, "
                                     "checkpoints, sweeps, patches or run.parallel: sample "
                                     "(evolving moduli are implemented for plain runs)")


def _check_reference_area(case, sw) -> None:
    """slip.reference_area (systems per area) only where each cell's count is its own: the
    tensorial model with groups of four, no variant that sets the number of systems."""
    a = case.slip.reference_area
    if a is None:
        return
    if case.model not in ("tensorial", "quench"):
        raise FemplastInputError("slip.reference_area", a, f"null with model: {case.model} "
                                 "(slip systems per area are the tensorial model's)")
    if sw["systems"] == "two_fixed":
        raise FemplastInputError("slip.reference_area", a, "null with variant.systems: "
                                 "two_fixed (two systems per cell)")
    if case.variant.N_fluctuation:
        raise FemplastInputError("slip.reference_area", a, "null with variant.N_fluctuation "
                                 "(the number of systems is then redrawn at every renewal)")


def _check_amplitude_rule(case, sw) -> None:
    """slip.amplitude names a registered rule; the fixed ones need a fixed amplitude."""
    name = case.slip.amplitude
    if name is None:
        return
    from femplast.tensorial.rules import AMPLITUDE_RULES  # compiled rules: only when named

    if name not in AMPLITUDE_RULES:
        raise FemplastInputError("slip.amplitude", name, "a registered amplitude rule: "
                                 f"{', '.join(sorted(AMPLITUDE_RULES))} (or null)")
    if name in ("fixed", "fixed_capped") and sw["amplitude"] != "fixed":
        raise FemplastInputError("slip.amplitude", name, "power_law (or null) unless the "
                                 "variant has a fixed amplitude (variant.d_gamma_pl)")

