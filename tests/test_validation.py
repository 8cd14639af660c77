"""Malformed input, one line each (issue 17): every case is refused by the command line with
exit code 2, one message line naming the key or file, no traceback and nothing written.

Most rows run in-process through ``femplast.app.cli.main`` (a subprocess costs seconds of
start-up each); a handful run through ``python -m femplast`` to cover the real entry point.
Every row covers a section of docs/case-reference.md or an option of the command line; the
sections a row exercises are counted by ``test_table_covers_every_section``.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import femplast  # noqa: F401  (MPI before dolfinx)
from femplast.app.cli import main
from femplast.config.case import Case

OK8 = "mesh: {n: 8, L: 52.8}\n"  # a small valid base many rows extend
SW = ("sweep: {enabled: true, errors: [], grid: {k: [2.0, 2.2]}}\n"
      "loading: {gamma_max: 0.2, stationary_from: 0.1}\n")
SC = "model: scalar\nmesh: {n: 8, L: 70.9}\n"
ST = "stages: [{name: a, kind: load, gamma: 0.1}]\n"
GEO = "mesh: {kind: geometry}\n"
GEO_BC = "geometry: {boundaries: {bottom: clamped, top: {displacement: [0, 1]}}}\n"

# (row id, case text (None: no file; bytes: raw), extra CLI arguments, fragment of the message)
T = [
    # --- the file itself and YAML
    ("file_missing", None, [], "case file"),
    ("yaml_list", "- a\n- b\n", [], "case file"),
    ("yaml_scalar_int", "42\n", [], "case file"),
    ("yaml_prose", "This is not a case, just some prose.\n", [], "case file"),
    ("yaml_empty", "", [], "case file"),
    ("yaml_comment_only", "# nothing here\n# at all\n", [], "case file"),
    ("yaml_binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", [], "case file"),
    ("yaml_utf16", "mesh: {n: 8}\n".encode("utf-16"), [], "case file"),
    ("yaml_latin1", "description: caf\xe9\n".encode("latin-1"), [], "case file"),
    ("yaml_nul", b"mesh: {n: 8}\x00\n", [], "case file"),
    ("yaml_syntax", "mesh: {n: 8\n", [], "case file"),
    ("yaml_tab_indent", "mesh:\n\tn: 8\n", [], "case file"),
    ("yaml_duplicate_top", "model: tensorial\nmodel: scalar\n", [], "duplicate key 'model'"),
    ("yaml_duplicate_nested", "mesh: {n: 8, n: 9}\n", [], "duplicate key 'n'"),
    ("yaml_alias", "a: &x [1, 2]\nmesh: *x\n", [], "case file"),
    ("yaml_alias_bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n", [], "anchors"),
    ("yaml_merge_key", "mesh:\n  <<: {n: 8}\n", [], "mesh.<<"),
    ("yaml_alias_only", "mesh: *x\n", [], "case file"),
    ("yaml_nonstring_key", "1: 2\n", [], "not a string"),
    ("yaml_deep", "a: " + "[" * 40 + "]" * 40 + "\n", [], "case file"),
    ("yaml_huge", "description: '" + "x" * (1 << 20) + "'\n", [], "case file"),
    ("yaml_two_documents", "mesh: {n: 8}\n---\nmesh: {n: 9}\n", [], "case file"),
    ("yaml_python_tag", "mesh: !!python/object:os.system {}\n", [], "case file"),
    ("yaml_set_tag", "mesh: !!set {a, b}\n", [], "mesh"),
    ("top_unknown", "meshh: {n: 8}\n", [], "meshh"),
    ("top_model", "model: tensor\n", [], "model"),
    ("top_model_number", "model: 3\n", [], "model"),
    ("top_name_dotdot", "name: ../../x\n", [], "name"),
    ("top_name_slash", "name: a/b\n", [], "name"),
    ("top_name_dot", "name: .\n", [], "name"),
    ("top_name_hidden", "name: .hidden\n", [], "name"),
    ("top_name_list", "name: [a]\n", [], "name"),
    ("top_description", "description: {a: 1}\n", [], "description"),
    ("top_section_scalar", "mesh: 5\n", [], "mesh"),
    ("top_section_list", "loading: [1, 2]\n", [], "loading"),
    # --- mesh
    ("mesh_n_zero", "mesh: {n: 0}\n", [], "mesh.n"),
    ("mesh_n_float", "mesh: {n: 2.5}\n", [], "mesh.n"),
    ("mesh_n_bool", "mesh: {n: true}\n", [], "mesh.n"),
    ("mesh_n_string", "mesh: {n: '8'}\n", [], "mesh.n"),
    ("mesh_n_huge", "mesh: {n: 100000, L: 660000}\n", [], "mesh.n"),
    ("mesh_n_giant", "mesh: {n: 10000000000000000000000, L: 1e23}\n", [], "mesh.n"),
    ("mesh_kind", "mesh: {kind: hex}\n", [], "mesh.kind"),
    ("mesh_L_negative", "mesh: {L: -1}\n", [], "mesh.L"),
    ("mesh_L_zero", "mesh: {L: 0}\n", [], "mesh.L"),
    ("mesh_L_tiny", "mesh: {n: 8, L: 1e-6}\n", [], "mesh.L"),
    ("mesh_L_inf", "mesh: {L: .inf}\n", [], "mesh.L"),
    ("mesh_L_nan", "mesh: {L: .nan}\n", [], "mesh.L"),
    ("mesh_unknown", "mesh: {nx: 4}\n", [], "mesh.nx"),
    ("mesh_size_quad", "mesh: {kind: quad, size: 3.0}\n", [], "mesh.size"),
    ("mesh_file_quad", "mesh: {kind: quad, file: x.msh}\n", [], "mesh.file"),
    ("mesh_file_missing", "mesh: {kind: gmsh, file: missing.msh}\n", [], "mesh.file"),
    ("mesh_file_garbage", "mesh: {kind: gmsh, file: garbage.msh}\n", [], "garbage.msh"),
    ("mesh_file_empty", "mesh: {kind: gmsh, file: empty.msh}\n", [], "empty.msh"),
    ("mesh_file_nonperiodic", "mesh: {kind: gmsh, file: nonperiodic.msh}\n", [],
     "nonperiodic.msh"),
    ("mesh_file_rectangle", "mesh: {kind: gmsh, file: rectangle.msh}\n", [], "rectangle.msh"),
    ("mesh_file_nogroup", "mesh: {kind: gmsh, file: nogroup.msh}\n", [], "nogroup.msh"),
    ("mesh_file_directory", "mesh: {kind: gmsh, file: .}\n", [], "mesh.file"),
    ("mesh_gmsh_size_tiny", "mesh: {kind: gmsh, size: 1e-4}\n", [], "mesh.size"),
    ("mesh_gmsh_size_big", "mesh: {kind: gmsh, size: 500}\n", [], "mesh.size"),
    # --- specimens (mesh.kind: geometry)
    ("geometry_shape", GEO + "geometry: {shape: disk}\n", [], "geometry.shape"),
    ("geometry_size_big", GEO + "geometry: {size: 500}\n", [], "geometry.size"),
    ("geometry_notch_deep", GEO + "geometry: {shape: notched_strip, notch_depth: 300, "
     "boundaries: {top: {displacement: [0, 1]}, bottom: clamped}}\n", [],
     "geometry.notch_depth"),
    ("geometry_no_drive", GEO + "geometry: {boundaries: {bottom: clamped}}\n", [],
     "geometry.boundaries"),
    ("geometry_unknown_boundary", GEO + "geometry: {boundaries: {rim: clamped, "
     "top: {displacement: [0, 1]}}}\n", [], "geometry.boundaries.rim"),
    ("geometry_bad_condition", GEO + "geometry: {boundaries: {top: glued}}\n", [],
     "geometry.boundaries.top"),
    ("geometry_bad_displacement", GEO + "geometry: {boundaries: {top: {displacement: "
     "[1]}}}\n", [], "geometry.boundaries.top"),
    ("geometry_without_kind", "geometry: {boundaries: {top: clamped}}\n", [],
     "geometry.boundaries"),
    ("geometry_alpha", GEO + GEO_BC + "loading: {alpha_ext: 45}\n", [], "loading.alpha_ext"),
    ("geometry_propagator", GEO + GEO_BC + "redistribution: {backend: propagator}\n", [],
     "redistribution.backend"),
    ("geometry_scalar_propagator", "model: scalar\n" + GEO + GEO_BC + "redistribution: "
     "{backend: propagator}\n", [], "redistribution.backend"),
    ("geometry_scalar_stress_file", "model: scalar\n" + GEO + GEO_BC + "scalar: "
     "{internal_stress_file: neg.csv}\n", [], "scalar.internal_stress_file"),
    ("geometry_patch_radius", GEO + GEO_BC + "patches: {enabled: true, shape: disk, "
     "radius: [3, 60]}\n", [], "patches.radius[1]"),
    ("geometry_G_ss_dense", GEO + GEO_BC + "variant: {structure_strain: 0.2, lambda_ss: 1, "
     "k_ss: 2.18, G_ss: 8}\nredistribution: {backend: dense}\n", [],
     "redistribution.backend"),
    ("geometry_stage_alpha", GEO + GEO_BC + "stages: [{name: a, kind: load, gamma: 0.1, "
     "alpha_ext: 45}]\n", [], "stages[0].alpha_ext"),
    ("geometry_finite_size", GEO + GEO_BC + "sweep: {enabled: true, errors: [], grid: {k: "
     "[2.0]}, finite_size: [4]}\nloading: {gamma_max: 0.2, stationary_from: 0.1}\n", [],
     "sweep.finite_size"),
    ("geometry_sweep_boundaries", GEO + GEO_BC + "sweep: {enabled: true, errors: [], grid: "
     "{geometry.boundaries: [1, 2]}}\nloading: {gamma_max: 0.2, stationary_from: 0.1}\n", [],
     "sweep.grid.geometry.boundaries"),
    # scalar sweeps of specimens run (tests/test_scalar_specimen.py); a lattice-size scan,
    # a non-numeric or unknown geometry key and a bad shape value are refused
    ("geometry_scalar_sweep_finite_size", "model: scalar\n" + GEO + GEO_BC + "sweep: "
     "{enabled: true, errors: [], grid: {scalar.c0: [0.03, 0.04]}, finite_size: [4]}\n"
     "loading: {gamma_max: 0.2, stationary_from: 0.1}\n", [], "sweep.finite_size"),
    ("geometry_scalar_sweep_boundaries", "model: scalar\n" + GEO + GEO_BC + "sweep: "
     "{enabled: true, errors: [], grid: {geometry.boundaries: [1, 2]}}\nloading: "
     "{gamma_max: 0.2, stationary_from: 0.1}\n", [], "sweep.grid.geometry.boundaries"),
    ("geometry_scalar_sweep_nokey", "model: scalar\n" + GEO + GEO_BC + "sweep: "
     "{enabled: true, errors: [], grid: {geometry.nope: [1, 2]}}\nloading: "
     "{gamma_max: 0.2, stationary_from: 0.1}\n", [], "sweep.grid.geometry.nope"),
    ("geometry_scalar_sweep_size", "model: scalar\n" + GEO + GEO_BC + "sweep: "
     "{enabled: true, errors: [], grid: {geometry.size: [-1.0]}}\nloading: "
     "{gamma_max: 0.2, stationary_from: 0.1}\n", [], "sweep.grid.geometry.size"),
    # --- elasticity
    ("el_G_zero", "elasticity: {G: 0}\n", [], "elasticity.G"),
    ("el_G_string", "elasticity: {G: soft}\n", [], "elasticity.G"),
    ("el_G_huge", "elasticity: {G: 1e300}\n", [], "elasticity.G"),
    ("el_B_negative", "elasticity: {B: -59}\n", [], "elasticity.B"),
    ("el_B_huge", "elasticity: {B: 1e300}\n", [], "elasticity.B"),
    ("el_B_ratio", "elasticity: {G: 13.2, B: 1e-6}\n", [], "elasticity.B"),
    ("el_unknown", "elasticity: {nu: 0.3}\n", [], "elasticity.nu"),
    ("el_G_inf", "elasticity: {G: .inf}\n", [], "elasticity.G"),
    # --- slip
    ("slip_N_6", "slip: {N: 6}\n", [], "slip.N"),
    ("slip_N_zero", "slip: {N: 0}\n", [], "slip.N"),
    ("slip_N_huge", OK8 + "slip: {N: 4000000000}\n", [], "slip.N"),
    ("slip_N_float", "slip: {N: 4e9}\n", [], "slip.N"),
    ("slip_rho_zero", "slip: {rho_s: 0}\n", [], "slip.rho_s"),
    ("slip_k_negative", "slip: {weibull_k: -2}\n", [], "slip.weibull_k"),
    ("slip_k_tiny", "slip: {weibull_k: 1e-300}\n", [], "slip.weibull_k"),
    ("slip_k_huge", "slip: {weibull_k: 1e300}\n", [], "slip.weibull_k"),
    ("slip_lambda_huge", "slip: {weibull_lambda: 1e300}\n", [], "slip.weibull_lambda"),
    ("slip_area_zero", "slip: {reference_area: 0}\n", [], "slip.reference_area"),
    ("slip_area_negative", "slip: {reference_area: -43.56}\n", [], "slip.reference_area"),
    ("slip_area_inf", "slip: {reference_area: .inf}\n", [], "slip.reference_area"),
    ("slip_area_N_6", "slip: {N: 6, reference_area: 43.56}\n", [], "slip.N"),
    ("slip_area_two_fixed", "variant: {model: F}\nslip: {reference_area: 43.56}\n", [],
     "slip.reference_area"),
    ("slip_area_fluctuating", "variant: {N_fluctuation: true}\nslip: {reference_area: 43.56}\n",
     [], "slip.reference_area"),
    ("slip_area_scalar", SC + "slip: {reference_area: 43.56}\n", [], "slip.reference_area"),
    ("slip_lambda_zero", "slip: {weibull_lambda: 0}\n", [], "slip.weibull_lambda"),
    ("slip_chi_nan", "slip: {chi: .nan}\n", [], "slip.chi"),
    ("slip_chi_huge", "slip: {chi: 1e300}\n", [], "slip.chi"),
    ("slip_amplitude_unknown", "slip: {amplitude: bogus}\n", [], "slip.amplitude"),
    ("slip_amplitude_fixed", "slip: {amplitude: fixed}\n", [], "slip.amplitude"),
    ("slip_unknown", "slip: {lambda: 2}\n", [], "slip.lambda"),
    # --- loading
    ("load_dgamma_zero", "loading: {dgamma_ext: 0}\n", [], "loading.dgamma_ext"),
    ("load_dgamma_big", "loading: {dgamma_ext: 2}\n", [], "loading.dgamma_ext"),
    ("load_alpha", "loading: {alpha_ext: 270}\n", [], "loading.alpha_ext"),
    ("load_gamma_huge", "loading: {gamma_max: 1e300}\n", [], "loading.gamma_max"),
    ("load_gamma_string_1e", "loading: {gamma_max: '1e-4'}\n", [], "loading.gamma_max"),
    ("load_gamma_inf", "loading: {gamma_max: .inf}\n", [], "loading.gamma_max"),
    ("load_stationary", "loading: {gamma_max: 0.4, stationary_from: 0.5}\n", [],
     "loading.stationary_from"),
    ("load_steps", "loading: {gamma_max: 1e5, dgamma_ext: 1e-6}\n", [], "loading.gamma_max"),
    ("load_unknown", "loading: {rate: 1}\n", [], "loading.rate"),
    # --- initial
    ("init_missing", "initial: {state: nowhere.h5}\n", [], "initial.state"),
    ("init_garbage", OK8 + "slip: {N: 4}\ninitial: {state: garbage.h5}\n", [], "garbage.h5"),
    ("init_truncated", OK8 + "slip: {N: 4}\ninitial: {state: truncated.h5}\n", [],
     "truncated.h5"),
    ("init_nostate", OK8 + "slip: {N: 4}\ninitial: {state: nostate.h5}\n", [], "nostate.h5"),
    ("init_nan", OK8 + "slip: {N: 4}\ninitial: {state: nan.h5}\n", [], "nan.h5"),
    ("init_shape", OK8 + "slip: {N: 4}\ninitial: {state: shape.h5}\n", [], "shape.h5"),
    ("init_cells", "slip: {N: 4}\ninitial: {state: good.h5}\n", [], "good.h5"),
    ("init_systems", OK8 + "slip: {N: 8}\ninitial: {state: good.h5}\n", [], "good.h5"),
    ("init_negative_tauc", OK8 + "slip: {N: 4}\ninitial: {state: negtau.h5}\n", [],
     "negtau.h5"),
    ("init_no_system", OK8 + "slip: {N: 4}\ninitial: {state: allinf.h5}\n", [], "allinf.h5"),
    ("init_scalar", SC + "initial: {state: good.h5}\n", [], "initial.state"),
    # --- redistribution
    ("red_backend", "redistribution: {backend: fast}\n", [], "redistribution.backend"),
    ("red_propagator_tri", "mesh: {kind: tri}\nredistribution: {backend: propagator}\n", [],
     "redistribution.backend"),
    ("red_dense_zero", OK8 + "redistribution: {backend: dense, dense_memory_mb: 0}\n", [],
     "redistribution.dense_memory_mb"),
    ("red_dense_huge", "mesh: {n: 3000, L: 19800}\nredistribution: {backend: dense}\n", [],
     "redistribution"),
    ("red_memory_negative", "redistribution: {dense_memory_mb: -1}\n", [],
     "redistribution.dense_memory_mb"),
    ("red_unknown", "redistribution: {kernel: x}\n", [], "redistribution.kernel"),
    # --- output
    ("out_snap_negative_late", "output: {snapshots: [0.1, -1.0]}\n", [], "output.snapshots[1]"),
    ("out_snap_scalar", "output: {snapshots: 0.1}\n", [], "output.snapshots"),
    ("out_snap_string", "output: {snapshots: [0.1, x]}\n", [], "output.snapshots[1]"),
    ("out_snap_negative", "output: {snapshots: [-1]}\n", [], "output.snapshots[0]"),
    ("out_fields", "output: {fields: 1}\n", [], "output.fields"),
    ("out_unknown", "output: {format: vtk}\n", [], "output.format"),
    ("loc_window_zero", "localization: {window: 0}\n", [], "localization.window"),
    ("loc_stride_not_divisor", "localization: {window: 0.1, stride: 0.03}\n", [],
     "localization.stride"),
    ("loc_yield_rate", "localization: {yield_rate: -1}\n", [], "localization.yield_rate"),
    # --- run
    ("run_realizations_zero", "run: {realizations: 0}\n", [], "run.realizations"),
    ("run_seed_negative", "run: {seed: -1}\n", [], "run.seed"),
    ("run_seed_huge", "run: {seed: 1606938044258990275541962092341162602522202993782792835301376}"
     "\n", [], "run.seed"),
    ("run_parallel", "run: {parallel: both}\n", [], "run.parallel"),
    ("run_checkpoint_negative", "run: {checkpoint_interval: -5}\n", [],
     "run.checkpoint_interval"),
    ("run_memory_limit", OK8 + "run: {max_memory_gb: 1e-9}\n", [], "GiB"),
    ("run_memory_zero", "run: {max_memory_gb: 0}\n", [], "run.max_memory_gb"),
    ("run_sample_propagator", "run: {parallel: sample}\nredistribution: {backend: propagator}\n",
     [], "redistribution.backend"),
    ("run_sample_scalar", SC + "run: {parallel: sample}\n", [], "run.parallel"),
    ("run_unknown", "run: {threads: 4}\n", [], "run.threads"),
    # --- inclusion
    ("inc_radius", "model: inclusion\ninclusion: {radius: 0}\n", [], "inclusion.radius"),
    ("inc_eps_huge", "model: inclusion\ninclusion: {eps0: 1e300}\n", [], "inclusion.eps0"),
    ("inc_gamma_huge", "model: inclusion\ninclusion: {gamma_ext: 1e10}\n", [],
     "inclusion.gamma_ext"),
    ("inc_unknown", "model: inclusion\ninclusion: {center: 0}\n", [], "inclusion.center"),
    # --- patches
    ("pat_shape", "patches: {enabled: true, shape: hexagon}\n", [], "patches.shape"),
    ("pat_n_zero", "patches: {enabled: true, n: [2, 0, 3]}\n", [], "patches.n[1]"),
    ("pat_n_scalar", "patches: {enabled: true, n: 3}\n", [], "patches.n"),
    ("pat_radius_negative", "patches: {enabled: true, shape: disk, radius: [5, -1]}\n", [],
     "patches.radius[1]"),
    ("pat_alpha", "patches: {enabled: true, alpha: [0, 400]}\n", [], "patches.alpha[1]"),
    ("pat_gamma_negative", "patches: {enabled: true, gamma_ext: [-0.1]}\n", [],
     "patches.gamma_ext[0]"),
    ("pat_spacing", "patches: {enabled: true, spacing: 0}\n", [], "patches.spacing"),
    ("pat_stage", "patches: {enabled: true, stage: nowhere}\n" + ST, [], "patches.stage"),
    ("pat_after", "patches: {enabled: true, after: [nowhere]}\n" + ST, [], "patches.after[0]"),
    ("pat_self", "patches: {enabled: true, self_response: both}\n", [],
     "patches.self_response"),
    ("pat_sample", "patches: {enabled: true}\nrun: {parallel: sample}\n", [], "run.parallel"),
    ("pat_unknown", "patches: {enabled: true, size: 3}\n", [], "patches.size"),
    # --- variant
    ("var_model", "variant: {model: Z}\n", [], "variant.model"),
    ("var_moduli", "variant: {moduli: random}\n", [], "variant.moduli"),
    ("var_G_shape", "variant: {model: A, G_shape: 1e-300}\n", [], "variant.G_shape"),
    ("var_G_mean_huge", "variant: {model: A, G_mean: 1e300}\n", [], "variant.G_mean"),
    ("var_A_propagator", "variant: {model: A}\nredistribution: {backend: propagator}\n", [],
     "redistribution.backend"),
    ("var_A_stages", "variant: {model: A}\n" + ST, [], "variant.G_seed"),
    ("var_kernel", "variant: {kernel: fft}\n", [], "variant.kernel"),
    ("var_kernel_direct", "variant: {model: D}\nredistribution: {backend: direct}\n", [],
     "redistribution.backend"),
    ("var_two_fixed_N", "variant: {model: F}\nslip: {N: 8}\n", [], "slip.N"),
    ("var_structure", "variant: {structure_strain: 0.1}\n", [], "variant.lambda_ss"),
    ("var_G_ss", "variant: {G_ss: 10}\n", [], "variant.G_ss"),
    ("var_tau_c", "variant: {model: E, tau_c: 0}\n", [], "variant.tau_c"),
    ("var_d_gamma", "variant: {model: F, d_gamma_pl: 5}\n", [], "variant.d_gamma_pl"),
    ("var_scalar", SC + "variant: {model: B}\n", [], "variant.model"),
    ("var_seed_huge", "variant: {G_seed: 1e30}\n", [], "variant.G_seed"),
    ("var_unknown", "variant: {flavour: x}\n", [], "variant.flavour"),
    # --- scalar
    ("sc_kernel", SC + "scalar: {kernel: x}\n", [], "scalar.kernel"),
    ("sc_refine", SC + "scalar: {fe_refine: 100}\n", [], "scalar.fe_refine"),
    ("sc_c0", SC + "scalar: {c0: 0, c1: 0}\n", [], "scalar.c0"),
    ("sc_tri", "model: scalar\nmesh: {kind: tri}\n", [], "mesh.kind"),
    ("sc_alpha", SC + "loading: {alpha_ext: 10}\n", [], "loading.alpha_ext"),
    ("sc_thr_kind", SC + "scalar: {thresholds: {kind: cauchy}}\n", [],
     "scalar.thresholds.kind"),
    ("sc_thr_uniform_negative", SC + "scalar: {thresholds: {kind: uniform, low: -1, high: 2}}\n",
     [], "scalar.thresholds"),
    ("sc_thr_uniform_order", SC + "scalar: {thresholds: {kind: uniform, low: 2, high: 1}}\n", [],
     "scalar.thresholds.high"),
    ("sc_thr_gauss", SC + "scalar: {thresholds: {kind: gauss, mean: -100, std: 1}}\n", [],
     "scalar.thresholds.mean"),
    ("sc_thr_samples_missing", SC + "scalar: {thresholds: {kind: samples, file: no.csv}}\n",
     [], "scalar.thresholds.file"),
    ("sc_thr_samples_negative", SC + "scalar: {thresholds: {kind: samples, file: neg.csv}}\n",
     [], "scalar.thresholds"),
    ("sc_thr_samples_garbage", SC + "scalar: {thresholds: {kind: samples, file: "
     "garbage.csv}}\n", [], "scalar.thresholds"),
    ("sc_thr_shape", SC + "scalar: {thresholds: {shape: -3}}\n", [],
     "scalar.thresholds.shape"),
    ("sc_ren_kind", SC + "scalar: {renewal: {kind: x}}\n", [], "scalar.renewal.kind"),
    ("sc_ren_uniform_negative", SC + "scalar: {renewal: {kind: uniform, low: -2, high: 1}}\n",
     [], "scalar.renewal"),
    ("sc_fit_peak", SC + "scalar: {fit: {peak_stress: 1.0}}\n", [], "scalar.fit.peak_stress"),
    ("sc_fit_realizations", SC + "scalar: {fit: {flow_stress: 1.0}}\n", [],
     "run.realizations"),
    ("sc_fit_budget", SC + "scalar: {fit: {max_evaluations: 1}}\n", [],
     "scalar.fit.max_evaluations"),
    ("sc_curve_points", SC + "scalar: {curve_points: 2}\n", [], "scalar.curve_points"),
    ("sc_unknown", SC + "scalar: {kappa: 1}\n", [], "scalar.kappa"),
    # --- sweep
    ("sw_no_axis", "sweep: {enabled: true}\n", [], "sweep.grid"),
    ("sw_inclusion", "model: inclusion\nsweep: {enabled: true, grid: {k: [2]}}\n", [],
     "sweep.enabled"),
    ("sw_key", SW + "sweep: {enabled: true, errors: [], grid: {run.seed: [1, 2]}}\n", [],
     "duplicate key 'sweep'"),
    ("sw_bad_key", "sweep: {enabled: true, errors: [], grid: {run.seed: [1, 2]}}\n", [],
     "sweep.grid.run.seed"),
    ("sw_missing_key", "sweep: {enabled: true, errors: [], grid: {slip.nope: [1, 2]}}\n", [],
     "sweep.grid.slip.nope"),
    ("sw_k_middle_negative", "sweep: {enabled: true, errors: [], grid: {k: [2.0, -1.0, 2.2]}}\n",
     [], "sweep.grid.k"),
    ("sw_lambda_middle_huge", "sweep: {enabled: true, errors: [], grid: {lambda: [2, 1e300, 3]}}"
     "\n", [], "sweep.grid.lambda"),
    ("sw_n_middle_huge", "sweep: {enabled: true, errors: [], grid: {mesh.n: [8, 100000, 9]}}\n",
     [], "sweep.grid.mesh.n"),
    ("sw_middle_string", "sweep: {enabled: true, errors: [], grid: {chi: [2, x, 3]}}\n", [],
     "sweep.grid.chi"),
    ("sw_range_step", "sweep: {enabled: true, errors: [], grid: {k: {start: 1, stop: 2, step: 0}}"
     "}\n", [], "sweep.grid.k"),
    ("sw_range_tiny_step", "sweep: {enabled: true, errors: [], grid: {k: {start: 1, stop: 2, "
     "step: 1e-300}}}\n", [], "sweep.grid.k"),
    ("sw_range_keys", "sweep: {enabled: true, errors: [], grid: {k: {from: 1, to: 2}}}\n", [],
     "sweep.grid.k"),
    ("sw_empty_list", "sweep: {enabled: true, errors: [], grid: {k: []}}\n", [], "sweep.grid.k"),
    ("sw_product", "sweep: {enabled: true, errors: [], grid: {k: {start: 1, stop: 2, step: 1e-3},"
     " chi: {start: 1, stop: 2, step: 1e-3}}}\n", [], "sweep.grid"),
    ("sw_reference_missing", "sweep: {enabled: true, errors: [macro], reference: nowhere, "
     "grid: {k: [2]}}\n", [], "sweep.reference"),
    ("sw_reference_garbage", "sweep: {enabled: true, errors: [macro], reference: badref, "
     "grid: {k: [2]}}\n", [], "sweep.reference"),
    ("sw_meso_no_patches", "sweep: {enabled: true, errors: [meso], reference: ref, "
     "grid: {k: [2]}}\n", [], "sweep.errors"),
    ("sw_errors", "sweep: {enabled: true, errors: [micro], grid: {k: [2]}}\n", [],
     "sweep.errors[0]"),
    ("sw_seeds", "sweep: {enabled: true, seeds: random, grid: {k: [2]}}\n", [], "sweep.seeds"),
    ("sw_finite_zero", "sweep: {enabled: true, errors: [], finite_size: [6, 0]}\n", [],
     "sweep.finite_size[1]"),
    ("sw_finite_huge", "sweep: {enabled: true, errors: [], finite_size: [6, 200000]}\n", [],
     "sweep.finite_size"),
    ("sw_finite_gmsh", "mesh: {kind: gmsh}\nsweep: {enabled: true, errors: [], finite_size: [6]}"
     "\n", [], "sweep.finite_size"),
    ("sw_sample", "run: {parallel: sample}\nsweep: {enabled: true, errors: [], grid: {k: [2]}}\n",
     [], "run.parallel"),
    ("sw_grid_list", "sweep: {enabled: true, grid: [1, 2]}\n", [], "sweep.grid"),
    ("sw_scalar_errors", SC + "sweep: {enabled: true, grid: {scalar.c0: [0.1]}}\n", [],
     "sweep.errors"),
    ("sw_realizations", "sweep: {enabled: true, realizations: 0, grid: {k: [2]}}\n", [],
     "sweep.realizations"),
    # --- kmc
    ("kmc_temperature_zero", "kmc: {enabled: true, temperature: 0}\n", [], "kmc.temperature"),
    ("kmc_temperature_tiny", "kmc: {enabled: true, temperature: 1e-9}\n", [],
     "kmc.temperature"),
    ("kmc_Va", "kmc: {enabled: true, Va: -1}\n", [], "kmc.Va"),
    ("kmc_stop", "kmc: {enabled: true, stop: never}\n", [], "kmc.stop"),
    ("kmc_events_zero", "kmc: {enabled: true, max_events: 0}\n", [], "kmc.max_events"),
    ("kmc_events_huge", OK8 + "kmc: {enabled: true, max_events: 100000000000000}\n", [],
     "kmc.max_events"),
    ("kmc_window", "kmc: {enabled: true, window: 0}\n", [], "kmc.window"),
    ("kmc_tolerance", "kmc: {enabled: true, tolerance: -1}\n", [], "kmc.tolerance"),
    ("kmc_scalar", SC + "kmc: {enabled: true}\n", [], "model"),
    ("kmc_unknown", "kmc: {enabled: true, steps: 5}\n", [], "kmc.steps"),
    # --- stages
    ("stg_not_list", "stages: {name: a}\n", [], "stages"),
    ("stg_name_empty", "stages: [{kind: load, gamma: 0.1}]\n", [], "stages[0].name"),
    ("stg_name_path", "stages: [{name: ../x, kind: load, gamma: 0.1}]\n", [], "stages[0].name"),
    ("stg_name_dup", "stages: [{name: a, gamma: 0.1}, {name: a, gamma: 0.1}]\n", [],
     "stages[1].name"),
    ("stg_kind", "stages: [{name: a, kind: shear, gamma: 0.1}]\n", [], "stages[0].kind"),
    ("stg_start", "stages: [{name: a, gamma: 0.1, start: b}]\n", [], "stages[0].start"),
    ("stg_no_target", "stages: [{name: a, kind: load}]\n", [], "stages[0].gamma"),
    ("stg_unload_stress", "stages: [{name: a, gamma: 0.1}, {name: b, kind: unload, stress: 1}]\n",
     [], "stages[1].stress"),
    ("stg_hold_gamma", "stages: [{name: a, kind: hold, gamma: 0.1}]\n", [], "stages[0].gamma"),
    ("stg_load_temperature", "stages: [{name: a, gamma: 0.1, temperature: 0.2}]\n", [],
     "stages[0].temperature"),
    ("stg_hold_events", "stages: [{name: a, kind: hold, temperature: 0.2}]\n", [],
     "stages[0].events"),
    ("stg_snap_negative", "stages: [{name: a, gamma: 0.1, snapshots: [-0.5]}]\n", [],
     "stages[0].snapshots[0]"),
    ("stg_gamma_huge", "stages: [{name: a, gamma: 1e300}]\n", [], "stages[0].gamma"),
    ("stg_stress_huge", "stages: [{name: a, stress: 1e300}]\n", [], "stages[0].stress"),
    ("stg_dgamma", "stages: [{name: a, gamma: 0.1, dgamma_ext: 5}]\n", [],
     "stages[0].dgamma_ext"),
    ("stg_element_string", "stages: [{name: a, gamma: 0.1}, oops]\n", [], "stages[1]"),
    ("stg_quench", "model: quench\n" + ST, [], "stages"),
    ("stg_output_snapshots", ST + "output: {snapshots: [0.05]}\n", [], "output.snapshots"),
    ("stg_unknown", "stages: [{name: a, gamma: 0.1, strain: 1}]\n", [], "stages[0].strain"),
    # --- command line
    ("cli_set_no_equals", OK8, ["--set", "mesh.n"], "--set"),
    ("cli_set_empty_key", OK8, ["--set", "=3"], "--set"),
    ("cli_set_unknown", OK8, ["--set", "mesh.nn=3"], "mesh.nn"),
    ("cli_set_bad_yaml", OK8, ["--set", "mesh.n=[1"], "mesh.n"),
    ("cli_set_alias", OK8, ["--set", "mesh.n=*a"], "mesh.n"),
    ("cli_set_not_section", OK8, ["--set", "model.x=3"], "model"),
    ("cli_set_1e", OK8, ["--set", "loading.gamma_max=1e300"], "loading.gamma_max"),
    ("cli_set_seed_huge", OK8, ["--set", f"run.seed={2**200}"], "run.seed"),
    ("cli_seed_huge", OK8, ["--seed", str(2**200)], "run.seed"),
    ("cli_seed_text", OK8, ["--seed", "abc"], "--seed"),
    ("cli_realizations_zero", OK8, ["--realizations", "0"], "run.realizations"),
    ("cli_unknown_option", OK8, ["--fast"], "--fast"),
    ("cli_out_under_file", OK8, ["--out", "{d}/afile/x"], "--out"),
    ("cli_out_is_file", OK8, ["--out", "{d}/afile"], "--out"),
    ("cli_out_not_empty", OK8, ["--out", "{d}/full"], "--out"),
    ("cli_resume_no_out", OK8, ["--resume"], "--resume"),
    ("cli_resume_missing", OK8, ["--resume", "--out", "{d}/nowhere"], "--resume"),
    ("cli_resume_empty", OK8, ["--resume", "--out", "{d}/emptydir"], "--resume"),
    ("cli_resume_complete", OK8, ["--resume", "--out", "{d}/complete"], "--resume"),
    ("cli_no_case", None, ["--quiet"], "case file"),
]

@pytest.fixture(autouse=True)
def _collect_garbage():
    """Overrides the conftest's per-test gc.collect (0.5 s a row here): validation builds no
    PETSc objects."""
    yield


SUBPROCESS_ROWS = ("yaml_list", "yaml_utf16", "load_gamma_huge", "cli_out_under_file",
                   "sw_k_middle_negative")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files rows refer to: state files, meshes, CSV samples, reference directories."""
    d = tmp_path_factory.mktemp("inputs")
    nc, N = 64, 4

    def state(name, stress, theta, tauc, group="state"):
        with h5py.File(d / name, "w") as f:
            g = f.create_group(group)
            g["stress"], g["theta"], g["tau_c"] = stress, theta, tauc

    ok = (np.zeros((nc, 3)), np.zeros((nc, N)), np.ones((nc, N)))
    state("good.h5", *ok)
    state("nostate.h5", *ok, group="other")
    state("nan.h5", ok[0] * np.nan, ok[1], ok[2])
    state("shape.h5", np.zeros((nc, 2)), ok[1], ok[2])
    state("negtau.h5", ok[0], ok[1], -ok[2])
    noneleft = ok[2].copy()
    noneleft[5] = np.inf  # a cell without a single system
    state("allinf.h5", ok[0], ok[1], noneleft)
    (d / "garbage.h5").write_bytes(b"not an hdf5 file at all" * 10)
    (d / "truncated.h5").write_bytes((d / "good.h5").read_bytes()[:700])
    (d / "garbage.msh").write_text("$MeshFormat\ngarbage\n")
    (d / "empty.msh").write_text("")
    _msh(d / "nonperiodic.msh", [(0, 0), (10, 0), (10, 10), (0, 10), (10, 3.3)],
         [(1, 2, 5), (1, 5, 4), (5, 3, 4)])
    _msh(d / "rectangle.msh", [(0, 0), (10, 0), (10, 6), (0, 6)], [(1, 2, 3), (1, 3, 4)])
    _gmsh_rectangle(d / "nogroup.msh", 10.0, 10.0)
    (d / "neg.csv").write_text("# thresholds\n1.0\n-0.5\n2.0\n1.5\n")
    (d / "garbage.csv").write_text("a,b\nc,d\n")
    (d / "afile").write_text("a file")
    (d / "full").mkdir()
    (d / "full" / "x").write_text("results")
    (d / "emptydir").mkdir()
    (d / "complete").mkdir()
    (d / "complete" / "case.yaml").write_text(OK8)
    (d / "complete" / "summary.json").write_text("{}")
    (d / "badref").mkdir()
    (d / "badref" / "macro.csv").write_text("garbage\x00\n")
    (d / "ref").symlink_to(Path(__file__).resolve().parents[1] / "reference" / "synthetic_l6.6")
    return d


def _msh(path: Path, nodes, triangles) -> None:
    """A gmsh 2.2 ASCII mesh of triangles in physical group 1."""
    lines = ["$MeshFormat", "2.2 0 8", "$EndMeshFormat", "$Nodes", str(len(nodes))]
    lines += [f"{i + 1} {x} {y} 0" for i, (x, y) in enumerate(nodes)]
    lines += ["$EndNodes", "$Elements", str(len(triangles))]
    lines += [f"{i + 1} 2 2 1 1 {a} {b} {c}" for i, (a, b, c) in enumerate(triangles)]
    path.write_text("\n".join(lines + ["$EndElements", ""]))


def _gmsh_rectangle(path: Path, lx: float, ly: float) -> None:
    """A triangle mesh of [0, lx] x [0, ly] without physical groups."""
    import gmsh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("r")
        gmsh.model.occ.addRectangle(0, 0, 0, lx, ly)
        gmsh.model.occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", 2.0)
        gmsh.model.mesh.generate(2)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()


def _write_case(files: Path, work: Path, text) -> list[str]:
    if text is None:
        return [str(work / "missing.yaml")] if "no_case" not in str(work) else []
    case = files / f"{work.name}.yaml"
    if isinstance(text, bytes):
        case.write_bytes(text)
    else:
        case.write_text(text)
    return [str(case)]


def _snapshot(d: Path) -> set:
    return {p.relative_to(d) for p in d.rglob("*")}


@pytest.mark.parametrize(("row", "text", "args", "fragment"),
                         [r for r in T if r[0] not in SUBPROCESS_ROWS],
                         ids=[r[0] for r in T if r[0] not in SUBPROCESS_ROWS])
def test_malformed_input_in_process(row, text, args, fragment, files, tmp_path, monkeypatch,
                                    capfd):
    work = tmp_path / row
    work.mkdir()
    monkeypatch.chdir(work)  # runs/<name> would appear here
    argv = _write_case(files, work, text) + [a.format(d=files) for a in args]
    if "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(work / "out")]
    argv += ["--quiet"]
    before = _snapshot(files)
    t0 = time.process_time()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    cpu = time.process_time() - t0
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert fragment in lines[0], err
    assert not any(work.iterdir()), "something was written"
    assert _snapshot(files) - before <= {Path(f"{row}.yaml")}
    assert cpu < 5.0


@pytest.mark.parametrize("row", SUBPROCESS_ROWS)
def test_malformed_input_subprocess(row, files, tmp_path):
    _, text, args, fragment = next(r for r in T if r[0] == row)
    work = tmp_path / row
    work.mkdir()
    argv = _write_case(files, work, text) + [a.format(d=files) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(work / "out")]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, "-m", "femplast", *argv, "--quiet"], cwd=work,
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and fragment in lines[0], res.stderr
    assert not any(work.iterdir())


def test_table_covers_every_section():
    """At least 150 rows; every section of the case reference and the CLI has rows."""
    import dataclasses

    assert len(T) >= 150
    assert len({r[0] for r in T}) == len(T)
    sections = {f.name for f in dataclasses.fields(Case) if not f.metadata.get("internal")}
    prefixes = {"file", "yaml", "top", "mesh", "el", "slip", "load", "init", "red", "out", "run",
                "inc", "pat", "var", "sc", "sw", "kmc", "stg", "cli", "loc"}
    seen = {r[0].split("_")[0] for r in T}
    assert prefixes <= seen
    short = dict(elasticity="el", loading="load", initial="init", redistribution="red",
                 output="out", inclusion="inc", patches="pat", variant="var", scalar="sc",
                 sweep="sw", stages="stg", model="top", name="top", description="top",
                 localization="loc")
    assert {short.get(s, s) for s in sections} <= seen


def test_several_problems_are_reported_together(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = tmp_path / "c.yaml"
    case.write_text("mesh: {n: 0}\nslip: {weibull_k: -1, chi: x}\nrun: {seed: -2}\n")
    assert main([str(case), "--check"]) == 2
    err = capfd.readouterr().err
    for key in ("mesh.n", "slip.weibull_k", "slip.chi", "run.seed"):
        assert f"femplast: error: {key} =" in err
    assert len(err.strip().splitlines()) == 4
