"""Case files: YAML -> validated dataclasses.

Every key is declared once here with its type, default, unit, allowed range and meaning; the
same declarations validate case files and generate the reference page (docs/case-reference.md,
``femplast reference``). A bad case raises :class:`femplast.FemplastInputError`
naming the dotted key, the value and what is allowed, before any computation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml  # noqa: F401  (femplast.config.case.yaml: the dumper of resolved cases)

from femplast.config import yamlsafe
from femplast.errors import FemplastInputError, FemplastInputErrors


def key(default, doc: str, unit: str = "-", *, choices=None, min=None, max=None,
        min_open: bool = False, max_open: bool = False):
    """Declare a case key: default, meaning, unit and allowed values."""
    meta = dict(doc=doc, unit=unit, choices=choices, min=min, max=max,
                min_open=min_open, max_open=max_open)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- sections
@dataclass
class MeshSection:
    """The periodic square box and its cells (femplast.fe.mesh)."""

    kind: str = key("quad", "cell shape: structured quadrilaterals, structured triangles (two per "
                    "square) or an unstructured periodic gmsh mesh; geometry: a specimen with "
                    "boundaries (section geometry)",
                    choices=("quad", "tri", "gmsh", "geometry"))
    n: int = key(15, "cells per box side (structured meshes; gmsh: sets size = L/n unless size "
                 "or file is given)", min=1)
    L: float = key(98.8045, "box side", "LJ length", min=0, min_open=True)
    file: str | None = key(None, "gmsh .msh file of a periodic box (kind: gmsh); relative paths "
                           "are relative to the case file")
    size: float | None = key(None, "target cell size of a generated gmsh mesh", "LJ length",
                             min=0, min_open=True)


@dataclass
class GeometrySection:
    """A specimen with boundary conditions (mesh.kind: geometry; femplast.fe.geometry,
    femplast.fe.boundary). The loading parameter gamma_ext drives the displaced boundaries."""

    shape: str = key("strip", "strip (W x H rectangle: boundaries bottom, top, left, right), "
                     "notched_strip (+ notch, cut into the left side at mid-height), hole "
                     "(+ hole, centred), pillar (a column), file (a gmsh .geo/.msh with "
                     "physical curve groups as boundaries)",
                     choices=("strip", "notched_strip", "hole", "pillar", "file"))
    width: float = key(200.0, "width W (x)", "LJ length", min=0, min_open=True)
    height: float = key(100.0, "height H (y)", "LJ length", min=0, min_open=True)
    size: float = key(6.6, "target cell size", "LJ length", min=0, min_open=True)
    size_min: float | None = key(None, "cell size at the notch / hole (graded to size over "
                                 "4 size); null: size", "LJ length", min=0, min_open=True)
    element: str = key("tri", "cell shape: triangles or quadrilaterals (gmsh full-quad "
                       "recombination)", choices=("tri", "quad"))
    periodic: str = key("none", "periodic sides: none, x (left/right glued: a strip sheared "
                        "between walls) or y; both directions: mesh.kind gmsh",
                        choices=("none", "x", "y"))
    notch_kind: str = key("U", "V (rounded tip) or U (slot with a semicircular end)",
                          choices=("V", "U"))
    notch_depth: float = key(20.0, "notch depth from the left side", "LJ length", min=0,
                             min_open=True)
    notch_radius: float = key(6.6, "notch tip radius (U: half the slot width)", "LJ length",
                              min=0, min_open=True)
    notch_angle: float = key(30.0, "V notch: angle between a flank and the x axis", "deg",
                             min=5, max=80)
    hole_radius: float = key(20.0, "radius of the hole", "LJ length", min=0, min_open=True)
    file: str | None = key(None, "gmsh .geo or .msh file (shape: file), relative to the case "
                           "file")
    boundaries: dict = key({}, "condition per boundary name: free (default), clamped, roller "
                           "(normal component 0) or {displacement: [ux, uy]}: u = gamma_ext H "
                           "(ux, uy), a null component free; e.g. tension: {bottom: clamped, "
                           "top: {displacement: [0, 1]}}; shear between walls: top "
                           "{displacement: [1, 0]}")


@dataclass
class ElasticitySection:
    """Linear isotropic elasticity (femplast.fe.elasticity)."""

    G: float = key(13.2, "shear modulus (uniform)", "LJ stress", min=0, min_open=True)
    B: float = key(59.0, "2D bulk modulus (uniform)", "LJ stress", min=0, min_open=True)


@dataclass
class SlipSection:
    """Slip systems of each cell (tensorial paper sec. 3.1-3.3; femplast.tensorial.slip)."""

    N: int | None = key(None, "slip systems per cell, a multiple of 4; default: rho_s l^2 "
                        "rounded to the nearest multiple of 4 (at least 4), l^2 the cell "
                        "area", min=4)
    rho_s: float = key(0.8, "density of slip systems (used when N is not given)", "1/LJ area",
                       min=0, min_open=True)
    weibull_lambda: float = key(2.05, "scale lambda of the Weibull threshold distribution (eq. 5)",
                                "LJ stress", min=0, min_open=True)
    weibull_k: float = key(2.18, "shape k of the Weibull threshold distribution (eq. 5)",
                           min=0, min_open=True)
    chi: float = key(2.25, "shape chi of the bounded power-law slip amplitude (eq. 7)",
                     min=0, min_open=True)
    amplitude: str | None = key(None, "slip amplitude rule by its registered name "
                                "(femplast.tensorial.rules): power_law (eq. 7 with chi), fixed "
                                "or fixed_capped (variant.d_gamma_pl), or a rule registered by "
                                "user code; null: eq. 7, or the variant's fixed amplitude")
    reference_area: float | None = key(None, "systems per area: N systems per reference_area, "
                                       "cell c gets 4 clip(round(N/4 A_c / reference_area), 1, "
                                       "N/4), kept by its renewals (cells larger than "
                                       "reference_area keep N). Makes the weakest-link law of "
                                       "the first slip follow the area, not the mesh (a "
                                       "specimen refined at a notch); e.g. l^2 = 43.56 for the "
                                       "paper's N = 36. null: N in every cell. Tensorial model; "
                                       "not with variant.systems: two_fixed or N_fluctuation",
                                       "LJ area", min=0, min_open=True)


@dataclass
class LoadingSection:
    """Athermal quasistatic driving (sec. 3.4; femplast.tensorial.aqs)."""

    alpha_ext: float = key(0.0, "loading orientation alpha_ext of the pure shear "
                           "gamma_ext M(alpha_ext): 0 forward simple shear, 90 reverse", "deg",
                           min=-180, max=180)
    dgamma_ext: float = key(1e-4, "external strain increment d(gamma_ext)", "-",
                            min=0, min_open=True, max=1)
    gamma_max: float = key(2.0, "final external strain gamma_ext", "-", min=0, min_open=True)
    stationary_from: float = key(0.5, "gamma_ext above which stationary-state statistics are "
                                 "taken", "-", min=0)


@dataclass
class InitialSection:
    """Initial state."""

    state: str | None = key(None, "state file written by femplast (HDF5 'state' group): its "
                            "stress becomes the pre-stress Sigma0, its slip systems are kept; "
                            "null: stress-free with fresh slip systems")


@dataclass
class RedistributionSection:
    """How slip events redistribute stress (femplast.redistribution.backends)."""

    backend: str = key("auto", "propagator: translation-invariant FE propagator (structured "
                       "quads, uniform moduli); dense: precomputed Green operator; direct: FE "
                       "solve per relaxation step; auto: fastest valid",
                       choices=("auto", "propagator", "dense", "direct"))
    dense_memory_mb: float | None = key(
        None, "memory budget of the dense Green operator; null: 70 % of the memory available "
        "when the run starts (Linux MemAvailable; 1024 MiB elsewhere), divided among the MPI "
        "ranks on the machine", "MiB", min=0)


@dataclass
class OutputSection:
    """What is written to the output directory (femplast.io.output)."""

    snapshots: list[float] = key([], "gamma_ext at which cell fields are written (XDMF for "
                                 "ParaView, OUTDIR/fields/); values beyond loading.gamma_max "
                                 "are dropped with a warning; runs with stages: empty (use "
                                 "stages[i].snapshots)", "-")
    fields: bool = key(True, "write cell fields: the snapshots, the final state of every "
                             "stage (runs with stages) and the quenched state (KMC runs, "
                             "OUTDIR/quench/fields/); false: none")


@dataclass
class LocalizationSection:
    """Localization observables of the plastic strain: windowed LOC (scalar paper eq. 13), its
    post-yield maximum, shear bands and their persistence, in summary.json ``localization``
    (femplast.analysis.localization; scalar runs and the load of tensorial runs without
    stages, on structured meshes and on specimens: area-weighted LOC, bands by a line scan
    with their angle and whether they pass through the notch root,
    femplast.analysis.specimen)."""

    enabled: bool = key(True, "snapshot the plastic strain field every window and compute the "
                        "localization observables")
    window: float = key(0.05, "strain window: LOC and bands of the plastic strain accumulated "
                        "between gamma_ext = k window and (k + 1) window (snapshots of the "
                        "stable states; they do not change the trajectory); window = "
                        "loading.gamma_max: one window from gamma_ext = 0", "-", min=0,
                        min_open=True)
    stride: float | None = key(None, "sliding windows: snapshots every stride (window must be "
                               "a multiple of it), one window starting at each; band "
                               "persistence still compares disjoint successive windows; null: "
                               "stride = window", "-", min=0, min_open=True)
    yield_rate: float = key(0.5, "post-yield windows start at the first window whose plastic "
                            "rate 2 d<eps_p>/d(gamma_ext) (share of the imposed shear carried "
                            "plastically: 0 elastic, 1 steady flow) reaches this; the LOC "
                            "maximum, band width and persistence are taken over post-yield "
                            "windows (earlier ones recorded per realization, not summarised)",
                            "-", min=0, min_open=True)


@dataclass
class RunSection:
    """Ensemble and reproducibility."""

    realizations: int = key(1, "number of independent realizations", min=1)
    seed: int = key(0, "base seed; realization i uses numpy SeedSequence([seed, i])", min=0,
                    max=2**63 - 1)
    parallel: str = key("realizations", "under mpirun: 'realizations' spreads realizations over "
                        "ranks (one sample per rank); 'sample' distributes each sample's mesh "
                        "over all ranks (FE solve with the direct backend; for samples too big "
                        "for one core)", choices=("realizations", "sample"))
    checkpoint_interval: float = key(0.0, "wall-clock time between checkpoints (full state and "
                                     "random streams, OUTDIR/checkpoint/) of tensorial runs; "
                                     "'python -m femplast CASE --out OUTDIR --resume' continues "
                                     "bit-identically. 0: checkpoints only on SIGINT/SIGTERM "
                                     "(runs with stages or kmc) and plain runs take the classic "
                                     "path without checkpoints", "s", min=0)
    max_memory_gb: float | None = key(None, "memory limit of the estimate checked before a run "
                                      "starts (mesh, slip systems, redistribution operator, "
                                      "records; per process); null: the machine's memory",
                                      "GiB", min=0, min_open=True)


@dataclass
class KmcSection:
    """Glass preparation by kinetic Monte Carlo and quench (tensorial paper A.3;
    femplast.tensorial.kmc)."""

    enabled: bool = key(False, "prepare every realization as a super-cooled liquid by KMC at "
                        "temperature, then quench it (T = 0 relaxation; its stress becomes the "
                        "pre-stress Sigma0, plastic strain 0, slip systems kept) before loading; "
                        "implied by model: quench")
    temperature: float = key(0.25, "equilibration temperature kB T of the liquid (rates "
                             "exp(-dtau_c Va / kB T), eq. 11; paper optimum 0.25 at Va = 1)",
                             "LJ energy", min=0, min_open=True)
    Va: float = key(1.0, "activation volume Va", "LJ area", min=0, min_open=True)
    stop: str = key("stationary", "stationary: stop when the mean threshold and the stress std "
                    "are stationary (or at max_events); max_events: run max_events events",
                    choices=("stationary", "max_events"))
    max_events: int = key(200000, "cap on the thermally activated events (events of the "
                          "avalanches they trigger not counted)", min=1)
    window: float = key(2.0, "thermal events per stationarity window, per cell", min=0,
                        min_open=True)
    tolerance: float = key(0.05, "stationary when the window means of <tau_c> and of the "
                           "stress std change by less than this (relative) over two successive "
                           "window pairs", min=0, min_open=True)
    save: bool = key(True, "write the quenched sample of realization i to "
                     "OUTDIR/quench/rNNNN.h5 (usable as initial.state)")
    amplitude_rule: str = key("paper", "slip amplitude at T > 0 (KMC preparation, hold "
                              "stages): paper: gamma_max(tau_c) for thermal slips, the "
                              "athermal rule for the avalanches they trigger (appendix A.3); "
                              "mepls: the paper's own code (MEPLS gallery/espci/espci.h): "
                              "every slip while T > 0, thermal or athermal, takes gamma_max "
                              "(eq. 6-7) at tau_c + kB T", choices=("paper", "mepls"))


@dataclass
class StageSection:
    """One stage of a loading protocol (femplast.protocols); stages run in the listed order."""

    name: str = key("", "stage name (letters, digits, '-', '_'): outputs in "
                    "OUTDIR/stages/<name>/realizations/")
    kind: str = key("load", "load: along alpha_ext to the strain gamma (strain control) or to "
                    "the resolved stress 'stress' (stress control); unload: stress control "
                    "along the previous alpha_ext + 90 deg until the external stress resolved on "
                    "the previous alpha_ext is 0; hold: fixed strain, with thermally activated "
                    "events (KMC) when temperature > 0", choices=("load", "unload", "hold"))
    start: str | None = key(None, "name of an earlier stage whose final state this stage starts "
                            "from (branches, e.g. the two reloadings of a Bauschinger test); "
                            "null: the previous stage")
    alpha_ext: float = key(0.0, "loading orientation of a load stage: 0 forward simple shear, "
                           "90 reverse; a specimen (mesh.kind: geometry): 0 drives its "
                           "boundaries forward, 90 backward (no other value)", "deg", min=-180,
                           max=180)
    gamma: float | None = key(None, "load: external strain of the stage (strain control); with "
                              "stress or for unload: a cap on the stage's strain (default 1)",
                              "-", min=0, min_open=True)
    stress: float | None = key(None, "load: target external stress resolved on alpha_ext "
                               "(stress control); a specimen: its nominal stress (force on "
                               "the driven grip per unit grip length; F_drive / A when several "
                               "boundaries are driven): force control of grips moved as an "
                               "affine field; unload targets zero force", "LJ stress")
    dgamma_ext: float | None = key(None, "strain increment of strain control; null: "
                                   "loading.dgamma_ext", "-", min=0, min_open=True, max=1)
    temperature: float = key(0.0, "hold: kB T of thermally activated events", "LJ energy", min=0)
    events: int = key(0, "hold: number of thermally activated events", min=0)
    snapshots: list[float] = key([], "strain-controlled load: gamma_ext of the stage (from its "
                                 "own 0; values beyond gamma are dropped with a warning) at "
                                 "which cell fields are written. With output.fields every "
                                 "stage writes OUTDIR/stages/<name>/fields/rNNNN.xdmf with "
                                 "these and its final state", "-")


@dataclass
class PatchesSection:
    """Local yield-stress (patch) tests on submeshes (tensorial paper sec. 3.5; patches.py)."""

    enabled: bool = key(False, "run patch tests on the probed states of every realization")
    shape: str = key("square", "square: n x n cells (structured meshes, R = l n / sqrt(pi); "
                     "specimens: the cells whose barycentre lies in a square of side n h, h = "
                     "sqrt(mean cell area)); disk: cells whose barycentre lies within radius "
                     "(periodic distance, any mesh; disks crossing the periodic seam are "
                     "unwrapped into one patch). Specimens (mesh.kind: geometry): positions "
                     "whose patch would leave the body or touch its boundary are skipped and "
                     "counted (summary.json patches.positions)",
                     choices=("square", "disk"))
    n: list[int] = key([1, 2, 3, 4, 5, 6, 7, 8], "patch sizes, cells per side (shape: square)",
                       min=1)
    radius: list[float] = key([], "patch radii (shape: disk), each < mesh.L / 2 (specimens: < "
                              "min(geometry.width, geometry.height) / 2)", "LJ length",
                              min=0, min_open=True)
    spacing: float | None = key(None, "spacing of the regular grid of patch centres (snapped to "
                                "the cell lattice on structured meshes); null: every lattice "
                                "position (gmsh, specimens: the cell size)", "LJ length", min=0,
                                min_open=True)
    alpha: list[float] = key([float(a) for a in range(0, 180, 10)], "test orientations alpha "
                             "of the boundary pure shear M(alpha): 0 forward, 90 backward",
                             "deg", min=-180, max=180)
    initial: bool = key(True, "probe the initial state before loading (gamma_ext = 0: fresh, "
                        "initial.state, or the KMC-quenched glass of kmc.enabled)")
    gamma_ext: list[float] = key([], "also probe the state after the avalanche at these "
                                 "gamma_ext of the loading (with stages: of the stage named "
                                 "by patches.stage); those >= loading.stationary_from are also "
                                 "pooled as 'stationary'", "-", min=0)
    stage: str | None = key(None, "with stages: the strain-controlled load stage whose "
                            "gamma_ext the patches.gamma_ext values are (null: the first "
                            "one)")
    after: list[str] = key([], "with stages: also probe the final state of each of these "
                           "stages (e.g. after unloading in a Bauschinger test); labelled "
                           "'after:<stage>'")
    self_response: str = key("patch", "self-response used for the slip amplitude bound "
                             "gamma_max (eq. 6) inside a patch: patch (frozen boundary) or "
                             "model (periodic sample)", choices=("patch", "model"))


@dataclass
class SweepSection:
    """Parameter sweep with calibration errors against reference data (femplast.app.sweep)."""

    enabled: bool = key(False, "run a parameter sweep instead of one run: every grid point "
                        "runs sweep.realizations realizations of this case with the point's "
                        "values, in memory (mpirun -n P spreads the points' realizations "
                        "dynamically over the ranks); results in OUTDIR/sweep/ (table.csv, "
                        "points/, finite_size.csv); --resume continues a killed sweep")
    grid: dict = key({}, "grid axes 'key: spec' (points = their product, the last axis "
                     "fastest); key k, lambda, chi (slip.weibull_k, slip.weibull_lambda, "
                     "slip.chi) or a dotted numeric key of mesh, elasticity, slip, loading, "
                     "redistribution; model: scalar: a dotted numeric key of scalar (also "
                     "scalar.thresholds.* and scalar.renewal.*, e.g. scalar.c0, "
                     "scalar.thresholds.scale), mesh, elasticity, loading (a specimen, "
                     "mesh.kind: geometry: also geometry, e.g. geometry.width; its FE kernel "
                     "is built once per geometry and moduli); spec {start, stop, step} (stop "
                     "included), a list or a number")
    realizations: int | None = key(None, "realizations per point; null: run.realizations",
                                   min=1)
    seeds: str = key("common", "common: realization j of every point uses "
                     "SeedSequence([run.seed, j]) (common random numbers: a smoother error "
                     "landscape); per_point: point i uses the seed drawn from "
                     "SeedSequence([run.seed, i]). Either way independent of the ranks",
                     choices=("common", "per_point"))
    reference: str | None = key(None, "reference data directory (macro.csv, optional "
                                "local.csv, rms.csv, finite_size.csv; format in "
                                "femplast.analysis.calibration), relative to the case file; null: "
                                "statistics only, no errors")
    errors: list[str] = key(["macro", "meso"], "errors against the reference: macro "
                            "(L_macro = mean L[P] of the stationary sigma_xy, drops and "
                            "increments, eq. 8), meso (L_meso_plus / L_meso_minus = mean L[F] "
                            "of the 8 stationary patch statistics at alpha 0 / 90 and the "
                            "largest patch size, eq. 9; needs patches.enabled). L_stat = "
                            "(L_macro + (L+ + L-)/2)/2, or L_macro without meso. "
                            "model: scalar: [] (the table has the scalar statistics); "
                            "quench (appendix A.3 temperature calibration, e.g. a grid over "
                            "kmc.temperature): L_quench = mean L[F] of the 8 patch statistics "
                            "of the KMC-quenched glass (patches.initial) at alpha 0 and 90 "
                            "against the reference's initial rows; L_stat = L_quench when "
                            "alone", choices=("macro", "meso", "quench"))
    finite_size: list[int] = key([], "also run the base parameters at these mesh.n (same "
                                 "cell size: mesh.L scales with n), sweep.realizations each, "
                                 "and fit std(Sigma_xy) ~ L^a (summary.json 'finite_size', "
                                 "sweep/finite_size.csv); lattices only (mesh.kind quad or "
                                 "tri)", min=1)


@dataclass
class VariantSection:
    """Model variants of the tensorial paper (appendix A.8, sec. 6; femplast.tensorial.variants)."""

    model: str = key("C", "preset: C original model; A quenched Weibull shear moduli; B "
                     "pressure-sensitive thresholds; D shuffled kernel; E fixed homogeneous "
                     "thresholds; F two systems at 0/90 deg with one shared threshold and fixed "
                     "amplitudes; G F + shuffled kernel; H F + fixed thresholds; I mean-field "
                     "kernel. It sets the switches below; explicit switches override it",
                     choices=("C", "A", "B", "D", "E", "F", "G", "H", "I"))
    moduli: str | None = key(None, "uniform (elasticity.G) or weibull: quenched per-cell G ~ "
                             "Weibull with mean G_mean and shape G_shape (not evolving; "
                             "redistribution dense or direct; Eshelby tensor and gamma_max per "
                             "cell from its moduli); null: from the preset",
                             choices=("uniform", "weibull"))
    G_mean: float = key(18.4, "mean <G> of the Weibull shear moduli (scale = <G> / Gamma(1 + "
                        "1/G_shape))", "LJ stress", min=0, min_open=True)
    G_shape: float = key(1.3, "shape k_G of the Weibull shear moduli", min=0, min_open=True)
    G_seed: int | None = key(None, "null: realization i draws its own moduli field from "
                             "SeedSequence([run.seed, i, 1]) (one model per realization); an "
                             "integer: one field from SeedSequence([G_seed]) shared by all "
                             "realizations (required with kmc, stages or sweep)", min=0,
                             max=2**63 - 1)
    alpha_p: float | None = key(None, "pressure sensitivity: thresholds tau_c + alpha_p (p + "
                                "p_mean), p = -(S_xx + S_yy)/2 the cell pressure "
                                "(Drucker-Prager-like, model B: 0.2); null: from the preset "
                                "(0 except B)", min=0)
    p_mean: float = key(1.95, "hydrostatic pressure offset <p> added to the cell pressure "
                        "(with alpha_p > 0)", "LJ stress")
    p_std: float = key(0.0, "sample-to-sample spread of <p> (model B, appendix A.8: 0.22): "
                       "realization i uses p_mean + p_std z, z standard normal from "
                       "SeedSequence([run.seed, i, 2]); 0: p_mean for all", "LJ stress", min=0)
    kernel: str | None = key(None, "eshelby: FE interaction; shuffled: each slip's stress "
                             "changes outside the yielding cell randomly permuted among the "
                             "other cells (models D, G); mean_field: the other cells all get "
                             "the average of those changes (model I); the yielding cell keeps "
                             "its own change. shuffled/mean_field need redistribution "
                             "propagator or dense; null: from the preset",
                             choices=("eshelby", "shuffled", "mean_field"))
    thresholds: str | None = key(None, "weibull (slip.weibull_lambda, slip.weibull_k, renewed "
                                 "after each slip) or fixed: every threshold is tau_c, forever "
                                 "(angles still renewed); null: from the preset",
                                 choices=("weibull", "fixed"))
    tau_c: float = key(0.925, "the homogeneous threshold of thresholds: fixed (model E "
                       "optimum)", "LJ stress", min=0, min_open=True)
    systems: str | None = key(None, "random: slip.N systems in groups of four random angles; "
                              "two_fixed: two systems at 0 and 90 deg sharing one threshold "
                              "(models F-H); null: from the preset",
                              choices=("random", "two_fixed"))
    amplitude: str | None = key(None, "power_law: eq. 7 with slip.chi; fixed: every slip is "
                                "d_gamma_pl; null: from the preset",
                                choices=("power_law", "fixed"))
    d_gamma_pl: float = key(0.022, "the slip amplitude of amplitude: fixed (model F optimum)",
                            "-", min=0, min_open=True)
    d_gamma_cap: bool = key(True, "amplitude: fixed: cap d_gamma_pl at gamma_max (eq. 6) so "
                            "that no slip dissipates negatively (the paper does not say "
                            "whether its models F-H did)")
    N_fluctuation: bool = key(False, "fluctuating number of systems: 4 (1 + Poisson(N/4 - 1)) "
                              "per cell, redrawn at every renewal (mean N = slip.N or rho_s "
                              "l^2; truncated at the 1 - 1e-6 quantile; not with systems: "
                              "two_fixed)")
    renewal_correlation_strain: float = key(0.0, "> 0: a renewed threshold is correlated with "
                                            "the old one (Gaussian copula, coefficient rho = "
                                            "exp(-d_gamma / this), d_gamma the triggering "
                                            "slip; Weibull marginal kept); 0: independent",
                                            "-", min=0)
    renewal_bias: float = key(0.0, "sec. 6 (iii) stress-biased renewal: a threshold renewed "
                              "after a slip is tau_c (1 - renewal_bias cos 2(theta - "
                              "loading.alpha_ext)): systems aligned with the external load "
                              "come back weaker (> 0) or stronger (< 0); 0: unbiased", "-",
                              min=-1, max=1, min_open=True, max_open=True)
    structure_strain: float = key(0.0, "> 0: evolving structure - a cell's Weibull lambda and k "
                                  "relax from slip.weibull_lambda/k (quench) to lambda_ss/k_ss "
                                  "as exp(-e / structure_strain), e its accumulated plastic "
                                  "strain (sum of its d_gamma); applied at renewals. With G_ss "
                                  "also the shear moduli", "-", min=0)
    lambda_ss: float | None = key(None, "steady-state Weibull lambda (structure_strain > 0)",
                                  "LJ stress", min=0, min_open=True)
    k_ss: float | None = key(None, "steady-state Weibull k (structure_strain > 0)", min=0,
                             min_open=True)
    G_ss: float | None = key(None, "evolving moduli (structure_strain > 0): a cell's shear "
                             "modulus relaxes from its quench value (elasticity.G or the "
                             "Weibull field) as G_ss + (G_q - G_ss) exp(-e / structure_strain)"
                             "; stresses, load response and self-responses follow after every "
                             "relaxation step that changes a modulus (FE refactorization + "
                             "selected inversion). Needs redistribution direct (auto -> direct) "
                             "and a plain run (no kmc, stages, checkpoints, sweep, patches, "
                             "run.parallel: sample); null: G does not evolve", "LJ stress",
                             min=0, min_open=True)
    prestress_std: float = key(0.0, "> 0: initial pre-stress Sigma0 = the FE stress of a "
                               "random pure-shear eigenstrain field (zero mean), scaled to "
                               "this std of Sigma_xy (a stand-in for the paper's KMC-quenched "
                               "pre-stress, the only disorder of model H); ignored with "
                               "initial.state", "LJ stress", min=0)


@dataclass
class Case:
    """A femplast case file."""

    model: str = key("tensorial", "tensorial: slip-system EPM under AQS; inclusion: elastic "
                     "field of one sheared inclusion; scalar: scalar EPM with renewal "
                     "(rejuvenation) under synchronous extremal dynamics (section scalar); "
                     "quench: only the KMC preparation and quench of section kmc",
                     choices=("tensorial", "inclusion", "scalar", "quench"))
    name: str | None = key(None, "case name (default: the file name)")
    description: str = key("", "free text")
    mesh: MeshSection = field(default_factory=MeshSection)
    geometry: GeometrySection = field(default_factory=GeometrySection)
    elasticity: ElasticitySection = field(default_factory=ElasticitySection)
    slip: SlipSection = field(default_factory=SlipSection)
    loading: LoadingSection = field(default_factory=LoadingSection)
    initial: InitialSection = field(default_factory=InitialSection)
    redistribution: RedistributionSection = field(default_factory=RedistributionSection)
    output: OutputSection = field(default_factory=OutputSection)
    localization: LocalizationSection = field(default_factory=LocalizationSection)
    run: RunSection = field(default_factory=RunSection)
    inclusion: InclusionSection = field(default_factory=lambda: InclusionSection())
    patches: PatchesSection = field(default_factory=PatchesSection)
    variant: VariantSection = field(default_factory=VariantSection)
    scalar: ScalarSection = field(default_factory=lambda: ScalarSection())
    sweep: SweepSection = field(default_factory=SweepSection)
    kmc: KmcSection = field(default_factory=KmcSection)
    stages: list[StageSection] = key([], "loading protocol: a list of stages (section "
                                     "stages[]); empty: one strain-controlled stage from "
                                     "section loading, outputs in OUTDIR/realizations/")

    source: Path | None = field(default=None, repr=False, metadata=dict(internal=True))

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass
class InclusionSection:
    """model: inclusion - one sheared inclusion in the periodic box."""

    radius: float = key(5.0, "inclusion radius (cells whose centre lies within it)", "LJ length",
                        min=0, min_open=True)
    eps0: float = key(0.01, "tensorial xy eigenstrain of the inclusion", "-")
    gamma_ext: float = key(0.0, "imposed macroscopic simple shear", "-")


Case.__annotations__["inclusion"] = InclusionSection


@dataclass
class ThresholdsSection:
    """A scalar distribution (femplast.scalar.distributions): parametric or from a CSV file."""

    kind: str = key("weibull", "weibull (scale, shape); gauss (mean, std of the Gaussian before "
                    "its truncation at 0); gamma (shape, scale); uniform (low, high); samples "
                    "(CSV file, one value per row); histogram (CSV rows 'centre, weight' or "
                    "'left, right, weight')",
                    choices=("weibull", "gauss", "gamma", "uniform", "samples", "histogram"))
    scale: float | None = key(1.4, "Weibull scale lambda / gamma scale", "LJ stress", min=0,
                              min_open=True)
    shape: float | None = key(3.0, "Weibull shape k / gamma shape", min=0, min_open=True)
    mean: float | None = key(None, "gauss: mean before truncation", "LJ stress")
    std: float | None = key(None, "gauss: std before truncation", "LJ stress", min=0,
                            min_open=True)
    low: float | None = key(None, "uniform: lower bound", "LJ stress")
    high: float | None = key(None, "uniform: upper bound", "LJ stress")
    file: str | None = key(None, "samples/histogram: CSV file (relative to the case file); "
                           "non-numeric rows and '#' lines are skipped")
    column: int = key(0, "samples: column of the CSV file", min=0)


@dataclass
class RenewalSection(ThresholdsSection):
    """Renewal distribution p_r of the thresholds after a slip (same keys as thresholds)."""

    kind: str = key("same", "same: p_r = p_i (disorder scenario, no rejuvenation); otherwise a "
                    "distribution as in scalar.thresholds (rejuvenation)",
                    choices=("same", "weibull", "gauss", "gamma", "uniform", "samples",
                             "histogram"))
    scale: float | None = key(None, "Weibull scale lambda / gamma scale", "LJ stress", min=0,
                              min_open=True)
    shape: float | None = key(None, "Weibull shape k / gamma shape", min=0, min_open=True)


@dataclass
class ScalarFitSection:
    """Fit of the slip law to target stresses (femplast.scalar.model.fit_slip_law)."""

    flow_stress: float | None = key(None, "target flow stress (mean stress for gamma_ext >= "
                                    "loading.stationary_from); when given, c0 (and c1 if "
                                    "peak_stress is given) are fitted over run.realizations "
                                    "before the final run, which uses the fitted values",
                                    "LJ stress")
    flow_stress_err: float = key(0.0, "1-sigma uncertainty of the target flow stress",
                                 "LJ stress", min=0)
    peak_stress: float | None = key(None, "target peak stress (maximum of the ensemble-mean "
                                    "stress-strain curve): fit (c0, c1) instead of c0 alone",
                                    "LJ stress")
    peak_stress_err: float = key(0.0, "1-sigma uncertainty of the target peak stress",
                                 "LJ stress", min=0)
    max_evaluations: int = key(16, "budget of ensemble evaluations of the fit", min=4)
    curves: str | None = key(None, "fit against whole target curves instead (CSV file, "
                             "relative to the case file: columns gamma_ext, stress and "
                             "optionally stress_err, tau_c_mean, tau_c_mean_err; "
                             "femplast.scalar.fit): weighted least squares on window means "
                             "with common random numbers, profile 95 % intervals, "
                             "non-identifiable parameters reported")
    parameters: list[str] = key(["c0", "c1"], "with curves: the fitted slip-law "
                                "coefficients (c0, c1 or both)")
    windows: int = key(8, "with curves: window means per curve", min=1)


@dataclass
class ScalarSection:
    """model: scalar - scalar EPM with landscape-informed thresholds (femplast.scalar.model)."""

    kernel: str = key("fourier", "redistribution kernel: fourier (continuum periodic Eshelby "
                      "kernel of square cells, eq. 1-2) or fe (femplast FE propagator projected "
                      "on xy); both: sum = -2 G (zero mode), per unit tensorial eps_xy slip",
                      choices=("fourier", "fe"))
    fe_refine: int = key(4, "kernel fe: FE elements per lattice-cell side", min=1, max=16)
    c0: float = key(0.05, "slip law eps0(sigma_c) = c0 + c1 sigma_c^2 (eq. 12): mean of the "
                    "exponential slip, tensorial eps_xy", "-", min=0)
    c1: float = key(0.0, "slip-threshold correlation c1 (0: uncorrelated)", "1/LJ stress^2",
                    min=0)
    thresholds: ThresholdsSection = field(default_factory=lambda: ThresholdsSection())
    renewal: RenewalSection = field(default_factory=lambda: RenewalSection())
    internal_stress_std: float = key(0.0, "std w_g of the initial Gaussian internal stress "
                                     "(mechanically compatible, zero mean); 0: none",
                                     "LJ stress", min=0)
    internal_stress_file: str | None = key(None, "measured frozen-in (internal) stress "
                                           "distribution: CSV file (relative to the case "
                                           "file) read as internal_stress_kind; the initial "
                                           "field keeps the spatial correlations of the "
                                           "compatible Gaussian field and takes this marginal "
                                           "(Gaussian copula), mean removed; not with "
                                           "internal_stress_std > 0")
    internal_stress_kind: str = key("samples", "internal_stress_file: samples (one value per "
                                    "row, column internal_stress_column) or histogram ('centre, "
                                    "weight' or 'left, right, weight' rows)",
                                    choices=("samples", "histogram"))
    internal_stress_column: int = key(0, "internal_stress_file (samples): column", min=0)
    disorder_strength: float | None = key(None, "direct input of the disorder strength s = "
                                          "std(p_r) / (mu* <eps0>_r) (scalar paper, eq. 3): "
                                          "the width of the renewal law (thresholds with "
                                          "renewal: same) is derived at its mean (weibull, "
                                          "gamma: shape; gauss: std; uniform: width) and "
                                          "written to the resolved case; null: from the laws",
                                          "-", min=0, min_open=True)
    age: float | None = key(None, "direct input of the age r = (<sigma_c>_i - <sigma_c>_r) / "
                            "<sigma_c>_r (eq. 6): the initial law is rescaled (weibull, "
                            "gamma: scale; gauss: mean and std; uniform: bounds) and written "
                            "to the resolved case; needs a renewal law; null: from the laws",
                            "-", min=-1, min_open=True)
    curve_points: int = key(401, "strain points of the ensemble-mean curves in summary.json",
                            min=11)
    fit: ScalarFitSection = field(default_factory=lambda: ScalarFitSection())


# ----------------------------------------------------------------------------- parsing
MAX_LIST = 100000  # longest list value (snapshots, patch sizes, ...): bounds memory and time
def _is_section(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def _hints(cls):
    # once per section class: evaluating the string annotations (PEP 563) costs ~0.2 ms per
    # field, and a sweep builds a case per point (validation and run), ~30 per sweep
    return typing.get_type_hints(cls, globalns=globals())


def _allowed(f) -> str:
    m = f.metadata
    parts = []
    if m.get("choices"):
        parts.append("one of " + ", ".join(repr(c) for c in m["choices"]))
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and hi is not None:
        parts.append(f"in {'(' if m['min_open'] else '['}{lo}, {hi}{')' if m['max_open'] else ']'}")
    elif lo is not None:
        parts.append(f"{'>' if m['min_open'] else '>='} {lo}")
    elif hi is not None:
        parts.append(f"{'<' if m['max_open'] else '<='} {hi}")
    return " and ".join(parts)


def _type_name(tp) -> str:
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(args[0])}"
    if _is_section(tp):
        return "mapping"
    return {float: "number", int: "integer", str: "string", bool: "true/false",
            dict: "mapping"}.get(tp, str(tp))


def _coerce(dotted: str, tp, value, f):
    """Check ``value`` against type ``tp`` and the field's range; return the coerced value."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(dotted, inner[0], value, f)
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise FemplastInputError(dotted, value, f"a {_type_name(tp)}")
        if len(value) > MAX_LIST:
            raise FemplastInputError(dotted, f"[{len(value)} values]", f"at most {MAX_LIST} "
                                     "values")
        out, problems = [], []
        for i, v in enumerate(value):  # every element is checked (all problems reported)
            try:
                out.append(_build(args[0], v, f"{dotted}[{i}].") if _is_section(args[0])
                           else _coerce(f"{dotted}[{i}]", args[0], v, f))
            except FemplastInputError as exc:
                problems.extend(FemplastInputErrors.flatten(exc))
        if problems:
            raise FemplastInputErrors(problems)
        return out
    if tp is dict:
        if not isinstance(value, dict):
            raise FemplastInputError(dotted, value, "a mapping of keys")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise FemplastInputError(dotted, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FemplastInputError(dotted, value, "an integer" + _range_suffix(f))
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FemplastInputError(dotted, value, "a number" + _range_suffix(f))
        value = float(value)
        if not math.isfinite(value):
            raise FemplastInputError(dotted, value, "a finite number" + _range_suffix(f))
    elif tp is str:
        if not isinstance(value, str):
            raise FemplastInputError(dotted, value, "a string" + _range_suffix(f))
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise FemplastInputError(dotted, value, _allowed(f))
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and (value < lo or (m["min_open"] and value == lo)):
        raise FemplastInputError(dotted, value, _allowed(f))
    if hi is not None and (value > hi or (m["max_open"] and value == hi)):
        raise FemplastInputError(dotted, value, _allowed(f))
    return value


def _range_suffix(f) -> str:
    a = _allowed(f)
    return f" ({a})" if a else ""


def _build(cls, data: dict, prefix: str):
    """The section ``cls`` from ``data``; every bad key of the section (and its subsections)
    is reported at once (:class:`FemplastInputErrors`)."""
    if not isinstance(data, dict):
        raise FemplastInputError(prefix.rstrip(".") or "case", data, "a mapping of keys")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    problems: list[FemplastInputError] = []
    for name in sorted((k for k in data if k not in fields), key=str):
        problems.append(FemplastInputError(f"{prefix}{name}", data[name], "a known key; "
                                           f"allowed here: {', '.join(sorted(fields))}"))
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            continue
        tp, f = hints[name], fields[name]
        try:
            if _is_section(tp):
                kwargs[name] = _build(tp, value if value is not None else {},
                                      f"{prefix}{name}.")
            else:
                kwargs[name] = _coerce(f"{prefix}{name}", tp, value, f)
        except FemplastInputError as exc:
            problems.extend(FemplastInputErrors.flatten(exc))
    if problems:
        raise FemplastInputErrors(problems)
    return cls(**kwargs)


def _to_dict(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        v = getattr(obj, f.name)
        if isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            v = [_to_dict(x) for x in v]
        out[f.name] = _to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


def parse_override(text: str) -> tuple[list[str], object]:
    """``dotted.key=value`` -> (path, YAML-parsed value)."""
    if "=" not in text:
        raise FemplastInputError("--set", text, "dotted.key=value, e.g. loading.gamma_max=0.5")
    k, v = text.split("=", 1)
    path = k.strip().split(".")
    if not all(path):
        raise FemplastInputError("--set", text, "dotted.key=value with a non-empty key, e.g. "
                                 "loading.gamma_max=0.5")
    return path, yamlsafe.load_value(v, k.strip())


def case_from_dict(data: dict, overrides: list[str] = (), source: Path | None = None) -> Case:
    """Validate a case given as a dictionary (plus ``--set`` overrides)."""
    if not isinstance(data, dict):
        raise FemplastInputError("case", type(data).__name__, "a mapping of case keys")
    data = dict(data)
    for ov in overrides:
        path, value = parse_override(ov)
        d = data
        for p in path[:-1]:
            sub = d.get(p)
            if sub is None:
                sub = d[p] = {}
            elif not isinstance(sub, dict):
                raise FemplastInputError(".".join(path), value, f"{p} is not a section")
            else:
                sub = d[p] = dict(sub)
            d = sub
        d[path[-1]] = value
    case = _build(Case, data, "")
    case.source = source
    _check_consistency(case)
    return case


def load_case(path: str | Path, overrides: list[str] = ()) -> Case:
    """Read and validate a YAML case file."""
    path = Path(path)
    data = yamlsafe.load_case_file(path)
    case = case_from_dict(data, overrides, source=path)
    if case.name is None:
        case.name = path.stem
    return case


def resolve_path(case: Case, p: str | None) -> Path | None:
    if p is None:
        return None
    q = Path(p)
    if not q.is_absolute() and case.source is not None:
        q = case.source.parent / q
    return q


def _check_consistency(case: Case) -> None:
    m = case.mesh
    if m.kind == "gmsh" and m.file is not None:
        f = resolve_path(case, m.file)
        if not f.is_file():
            raise FemplastInputError("mesh.file", m.file, "an existing gmsh .msh file")
    if m.kind != "gmsh" and (m.file is not None or m.size is not None):
        raise FemplastInputError("mesh.file" if m.file else "mesh.size", m.file or m.size,
                                 "only with mesh.kind: gmsh")
    if case.slip.N is not None and case.slip.N % 4:
        raise FemplastInputError("slip.N", case.slip.N, "a multiple of 4 (groups of four angles)")
    if case.loading.stationary_from >= case.loading.gamma_max:
        raise FemplastInputError("loading.stationary_from", case.loading.stationary_from,
                                 f"< loading.gamma_max = {case.loading.gamma_max}")
    if case.initial.state is not None and not resolve_path(case, case.initial.state).is_file():
        raise FemplastInputError("initial.state", case.initial.state, "an existing state file")
    be = case.redistribution.backend
    if case.run.parallel == "sample":
        if be not in ("auto", "direct"):
            raise FemplastInputError("redistribution.backend", be,
                                     "'direct' or 'auto' with run.parallel: sample")
        if case.model != "tensorial":
            raise FemplastInputError("run.parallel", "sample", "only with model: tensorial")
        if getattr(case, "patches", None) is not None and case.patches.enabled:
            raise FemplastInputError("run.parallel", "sample",
                                     "'realizations' when patches.enabled (patch tests run "
                                     "on one rank)")
    if be == "propagator" and m.kind != "quad":
        raise FemplastInputError("redistribution.backend", be,
                                 "'propagator' needs mesh.kind: quad (use dense, direct or auto)")
    case.output.snapshots = snapshots_within("output.snapshots", case.output.snapshots,
                                             "loading.gamma_max", case.loading.gamma_max)
    # the checks of each feature live with the feature: femplast.protocols.checks


def snapshots_within(key: str, values: list[float], end_key: str, end: float) -> list[float]:
    """The snapshots of ``values`` reachable in a run ending at ``end``: a negative one is an
    error; those beyond ``end`` are dropped with a warning (a shorter run asked with ``--set``
    must not be refused for a snapshot the case file asks for)."""
    for i, g in enumerate(values):
        if g < 0:
            raise FemplastInputError(f"{key}[{i}]", g, f"in [0, {end_key} = {end}]")
    beyond = [g for g in values if g > end]
    if beyond:
        logging.getLogger("femplast").warning(
            "%s: %s beyond %s = %s dropped", key, ", ".join(f"{g:g}" for g in beyond),
            end_key, end)
    return [g for g in values if g <= end]


# ----------------------------------------------------------------------------- reference page
def reference_markdown() -> str:
    """The case-file reference page, generated from the declarations above."""
    lines = ["# Case-file reference", "",
             "Generated from `femplast/config/case.py` (`femplast reference`). "
             "Units are Lennard-Jones units of the atomistic reference (length sigma_SL, stress "
             "eps_SL/sigma_SL^2); angles in degrees. Unknown keys are errors.", ""]

    def section(cls, prefix):
        hints = _hints(cls)
        rows, subs = [], []
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            if _is_section(tp):
                subs.append((tp, f"{prefix}{f.name}."))
                continue
            if typing.get_origin(tp) is list and _is_section(typing.get_args(tp)[0]):
                subs.append((typing.get_args(tp)[0], f"{prefix}{f.name}[]."))
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            m = f.metadata
            rows.append(f"| `{prefix}{f.name}` | {_type_name(tp)} | `{default!r}` | "
                        f"{m['unit']} | {_allowed(f) or '-'} | {m['doc']} |")
        return rows, subs

    queue = [(Case, "")]
    while queue:
        cls, prefix = queue.pop(0)
        rows, subs = section(cls, prefix)
        title = prefix.rstrip(".") or "top level"
        lines += [f"## `{title}`", "", (cls.__doc__ or "").strip().splitlines()[0], "",
                  "| key | type | default | unit | allowed | meaning |",
                  "|---|---|---|---|---|---|", *rows, ""]
        queue += subs
    return "\n".join(lines) + "\n"
