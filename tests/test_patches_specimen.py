"""Patch tests inside specimens (mesh.kind: geometry, issue 19): disks and squares of cells
inside the body, positions near the boundaries skipped and counted, the specimen's own
state and moduli, the compiled batch loop and counter-based streams of the periodic box."""

import json

import numpy as np
import pytest

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.analysis.patches import PatchAnalysis
from femplast.app.api import Simulation, load_case
from femplast.fe.elasticity import UNIT_C, apply_stiffness, to_dsp

H = 6.6  # cell side
WALLS = {"bottom": "clamped", "top": {"displacement": [1.0, 0.0]}}


def _square_geo(path, n: int, periodic: bool):
    """A gmsh file of an n x n square of structured quads of side H whose element order is
    the structured box's (row-major, x fastest), periodic along x if asked."""
    L = n * H
    per = f"Periodic Curve {{2}} = {{4}} Translate {{{L}, 0, 0}};\n" if periodic else ""
    path.write_text(
        f"L = {L}; n = {n};\n"
        "Point(1) = {0, 0, 0}; Point(2) = {L, 0, 0}; Point(3) = {L, L, 0};\n"
        "Point(4) = {0, L, 0}; Line(1) = {1, 2}; Line(2) = {2, 3}; Line(3) = {4, 3};\n"
        "Line(4) = {1, 4}; Curve Loop(1) = {1, 2, -3, -4}; Plane Surface(1) = {1};\n"
        "Transfinite Curve {1, 2, 3, 4} = n + 1; Transfinite Surface {1} = {1, 4, 3, 2};\n"
        "Recombine Surface {1};\n" + per +
        'Physical Surface("body") = {1}; Physical Curve("bottom") = {1};\n'
        'Physical Curve("right") = {2}; Physical Curve("top") = {3};\n'
        'Physical Curve("left") = {4};\n')
    return str(path)


def _specimen(tmp_path, n=12, periodic=True, **extra):
    geo = {"shape": "file", "file": _square_geo(tmp_path / "sq.geo", n, periodic),
           "element": "quad", "periodic": "x" if periodic else "none",
           "boundaries": WALLS}
    return load_case({"mesh": {"kind": "geometry"}, "geometry": geo,
                      "redistribution": {"backend": "dense"}, **extra})


def _box(n=12):
    return load_case({"mesh": {"kind": "quad", "n": n, "L": n * H},
                      "redistribution": {"backend": "dense"}})


ALPHAS = [0.0, 30.0, 90.0, 135.0]


def test_interior_patch_test_equals_the_periodic_one(tmp_path):
    """A strip sheared between walls, periodic along them, meshed exactly as the periodic
    box (same cells, same canonical order, so the same fresh slip systems), probed at
    gamma_ext = 0.01 (uniform simple shear in both): every tested disk position's tests equal
    the box's at the same centre, avalanches included (same stream ids). Tolerance 1e-9
    (relative to the scale of each quantity): the file's node coordinates differ from the
    box's by 1e-12 relative, the patch solves of ~100 cells amplify it by < 1e3; the
    observed difference is ~1e-11. Squares (n = 3, centred on a cell in both) agree on the
    quantities before the avalanche (their stream ids differ: anchor vs centre cell)."""
    ss, sb = Simulation(_specimen(tmp_path)), Simulation(_box())
    np.testing.assert_array_equal(ss._state.tauc, sb._state.tauc)
    for shape, size in (("disk", 9.0), ("square", 3)):
        pa_s = PatchAnalysis(ss._model, shape, [size], ALPHAS)
        pa_b = PatchAnalysis(sb._model, shape, [size], ALPHAS)
        ts = pa_s.analyse(ss._state, 0.01, 0.0, (1, 0, 0))[0]
        tb = pa_b.analyse(sb._state, 0.01, 0.0, (1, 0, 0))[0]
        cb = np.round(tb["centre"] / H - 0.5).astype(int)
        cs = np.round(ts["centre"] / H - 0.5).astype(int)
        lut = {tuple(c): i for i, c in enumerate(cb)}
        pos = np.array([lut[tuple(c)] for c in cs])
        assert len(pos) == 96
        np.testing.assert_allclose(ts["centre"], tb["centre"][pos], atol=1e-9)
        qs = ["gamma_c", "sigma_c", "tau_c", "dtau_c", "sigma_i"]
        if shape == "disk":
            qs += ["sigma_f", "delta_tau_c"]
            np.testing.assert_array_equal(ts["n_events"], tb["n_events"][pos])
            np.testing.assert_array_equal(ts["trigger_cell"], tb["trigger_cell"][pos])
            assert ts["n_events"].sum() > ts["n_events"].size  # avalanches happen
        for q in qs:
            a, b = ts[q], tb[q][pos]
            assert np.abs(a - b).max() <= 1e-9 * np.abs(b).max(), q


def _tested_rows(n, reach):
    """Rows (or columns) j of an n-cell side whose patch keeps off both sides: a patch
    reaching ``reach`` cells from its centre cell touches side 0 when j <= reach."""
    return sum(1 for j in range(n) if reach < j < n - 1 - reach)


@pytest.mark.parametrize("periodic", [True, False])
def test_positions_near_the_boundaries_are_skipped_and_counted(tmp_path, periodic):
    """On the n = 12 square specimen (walls top and bottom; periodic or free sides), a disk
    of radius 9 (1.36 cells) holds the cells up to 1 row away, a square of 3 also: a
    position is tested when its centre row (and column, without periodicity) is 2 .. 9.
    Expected: periodic 8 x 12 tested, 48 skipped; free sides 8 x 8 tested, 80 skipped."""
    sim = Simulation(_specimen(tmp_path, periodic=periodic))
    pa = PatchAnalysis(sim._model, "disk", [9.0, 20.0], [0.0])
    pq = PatchAnalysis(sim._model, "square", [3], [0.0])
    for an, ps, reach in ((pa, pa.sets[0], 1), (pa, pa.sets[1], 3), (pq, pq.sets[0], 1)):
        rows = _tested_rows(12, reach)
        cols = 12 if periodic else rows
        assert len(an.positions(ps)) == len(ps.cells) == rows * cols
        assert ps.skipped == 144 - rows * cols
        for c in ps.centres:
            # no tested patch reaches a wall (or a free side)
            assert min(c[1], 12 * H - c[1]) > (reach + 0.5) * H
            if not periodic:
                assert min(c[0], 12 * H - c[0]) > (reach + 0.5) * H
    pbig = PatchAnalysis(sim._model, "square", [11], [0.0])  # touches both walls everywhere
    assert len(pbig.sets[0].cells) == 0 and pbig.sets[0].skipped == 144
    t = pbig.analyse(sim._state, 0.0, 0.0)[0]
    assert t["gamma_c"].shape == (0, 1) and t["skipped"] == 144
    # disks of 20 (3.03 cells) within 3 columns of the periodic seam cross it: unwrapped,
    # they hold the 29 cells of every other disk (lattice points with i^2 + j^2 <= 9.18)
    if periodic:
        ps = pa.sets[1]
        near = [len(c) for c, x in zip(ps.cells, ps.centres, strict=True) if x[0] < 3 * H]
        assert len(near) == 4 * 3 and {len(c) for c in ps.cells} == {29}
        # a seam-crossing patch meshes as one body: the self-responses of its cells are
        # those of a congruent interior disk (same multiset)
        seam = np.sort(pa.operator(ps, 0).selfq, axis=0)
        mid = int(np.argmin(np.abs(ps.centres[:, 0] - 6.5 * H)))
        inner = np.sort(pa.operator(ps, mid).selfq, axis=0)
        assert ps.centres[0, 0] < 3 * H and np.abs(seam - inner).max() < 1e-10


def test_hole_plate_skips_disks_that_meet_the_hole_or_the_sides():
    """An unstructured plate with a hole: every tested disk keeps clear of the hole and the
    outer sides (distance > R from the centre), tested + skipped = the grid, and disks
    around the hole are skipped even where cell barycentres surround them."""
    geo = {"shape": "hole", "width": 80.0, "height": 80.0, "size": 5.0, "hole_radius": 12.0,
           "boundaries": {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}}
    sim = Simulation(load_case({"mesh": {"kind": "geometry"}, "geometry": geo,
                                "redistribution": {"backend": "dense"}}))
    R, spacing = 8.0, 5.0
    pa = PatchAnalysis(sim._model, "disk", [R], [0.0], spacing=spacing)
    ps = pa.sets[0]
    assert len(ps.cells) + ps.skipped == 16 * 16
    c = ps.centres
    assert np.all(np.hypot(c[:, 0] - 40, c[:, 1] - 40) - 12.0 > R)
    assert np.all(np.minimum(c, 80 - c).min(axis=1) > R)
    assert 30 < len(ps.cells) < 16 * 16 - 60
    # tiny disks (R = 1, triangles of size 5): those wholly in the hole are skipped (outside
    # the body), those in the body that catch no barycentre are neither tested nor counted
    tiny = PatchAnalysis(sim._model, "disk", [1.0], [0.0], spacing=spacing).sets[0]
    g = (np.arange(16) + 0.5) * 5.0
    d = np.hypot(*(np.stack(np.meshgrid(g, g)) - 40.0))
    in_hole = int((d < 12.0 - 1.0).sum())
    assert in_hole == 16
    assert in_hole <= tiny.skipped and len(tiny.cells) + tiny.skipped < 16 * 16 - 20
    assert np.all(np.hypot(*(tiny.centres - 40.0).T) > 12.0 + 1.0)


def test_determinism_and_independence_of_the_tested_sizes(tmp_path):
    """Patch tests on a specimen are reproducible bit for bit, and a size's tables do not
    depend on which other sizes run (per-test counter-based streams)."""
    sim = Simulation(_specimen(tmp_path, n=10))
    sim.advance_to(0.05)
    st = sim._state
    both = PatchAnalysis(sim._model, "disk", [7.0, 9.0], ALPHAS).analyse(st, 0.05, 0.0, (3, 1, 2))
    again = PatchAnalysis(sim._model, "disk", [7.0, 9.0], ALPHAS).analyse(st, 0.05, 0.0,
                                                                           (3, 1, 2))
    alone = PatchAnalysis(sim._model, "disk", [9.0], ALPHAS).analyse(st, 0.05, 0.0, (3, 1, 2))
    for q in ("gamma_c", "sigma_f", "n_events", "trigger_cell"):
        np.testing.assert_array_equal(both[1][q], again[1][q])
        np.testing.assert_array_equal(both[1][q], alone[0][q])
    assert both[1]["n_events"].sum() > 0


def test_patches_use_the_specimens_moduli(tmp_path):
    """Homogeneous specimen with G = 20: the patch's response to its unit boundary shear is
    the uniform C : M of G = 20 (an affine field is the exact solution), to 1e-12."""
    case = _specimen(tmp_path, n=10, elasticity={"G": 20.0})
    sim = Simulation(case)
    pa = PatchAnalysis(sim._model, "disk", [7.0], [0.0])
    ps = pa.sets[0]
    expect = to_dsp(apply_stiffness(20.0, 59.0, np.asarray(UNIT_C)[None]))[:, 0]
    for ip in (0, len(ps.cells) - 1):
        U = pa.operator(ps, ip).U[1]
        assert np.abs(U - expect[:, None]).max() < 1e-12 * 20.0
    assert abs(expect[1] - 20.0) < 1e-12  # s = G per unit gamma~ of M(0)


def test_run_writes_specimen_patch_summary(tmp_path):
    """A run of the walls-sheared specimen with patch tests: summary.json has the entries
    of the periodic case plus the tested/skipped positions per size; counts per state and
    orientation = tested positions x realizations."""
    from femplast.app.api import run

    case = _specimen(tmp_path, n=10, patches={"enabled": True, "shape": "disk",
                                               "radius": [7.0], "alpha": [0.0, 90.0],
                                               "gamma_ext": [0.05]},
                     loading={"dgamma_ext": 1e-3, "gamma_max": 0.1, "stationary_from": 0.05},
                     run={"realizations": 2})
    out = tmp_path / "out"
    run(case, out)
    s = json.loads((out / "summary.json").read_text())["patches"]
    assert s["positions"] == {"R7": {"tested": 60, "skipped": 40}}  # rows 2..7 of 10
    assert set(s["states"]) >= {"initial", "gamma_ext=0.05", "stationary"}
    for e in s["entries"]:
        assert e["count"] == 2 * 60 and np.isfinite(e["tau_c"]["mean"])
    import h5py

    with h5py.File(out / "patches" / "r0001.h5") as f:
        assert f["s0/R7"].attrs["skipped"] == 40
        assert f["s0/R7/gamma_c"].shape == (60, 2)


def test_operators_kept_between_states_within_the_budget(tmp_path, monkeypatch):
    """Per-position operators are built once for every probed state while they fit in
    OPERATOR_CACHE_MB (a second state builds none); with no budget each is rebuilt, and the
    tables are bitwise the same."""
    import femplast.analysis.patches as P

    sim = Simulation(_specimen(tmp_path, n=10))
    st = sim._state
    pa = PatchAnalysis(sim._model, "disk", [7.0], ALPHAS)
    first = pa.analyse(st, 0.02, 0.0, (0, 0, 0))[0]
    assert pa.cached_bytes > 0 and len(pa.sets[0].ops) == 60
    pa.operator_time = 0.0
    second = pa.analyse(st, 0.03, 0.0, (0, 0, 1))[0]
    assert pa.operator_time == 0.0
    monkeypatch.setattr(P, "OPERATOR_CACHE_MB", 0.0)
    pb = PatchAnalysis(sim._model, "disk", [7.0], ALPHAS)
    for t, g, sid in ((first, 0.02, 0), (second, 0.03, 1)):
        u = pb.analyse(st, g, 0.0, (0, 0, sid))[0]
        assert len(pb.sets[0].ops) == 1
        for q in ("gamma_c", "sigma_f", "n_events"):
            np.testing.assert_array_equal(t[q], u[q])


@pytest.mark.mpi
def test_specimen_patch_tests_serial_equal_mpirun(tmp_path):
    """Realizations over 2 ranks: the patch tables of every realization and the summary
    entries are those of the serial run, bit for bit (per-test streams, one rank per
    realization)."""
    import subprocess
    import sys
    from pathlib import Path

    import h5py
    import yaml

    root = Path(__file__).resolve().parents[1]
    mpirun = str(Path(sys.executable).parent / "mpirun")
    case = _specimen(tmp_path, n=10, patches={"enabled": True, "shape": "disk",
                                               "radius": [7.0], "alpha": [0.0, 90.0],
                                               "gamma_ext": [0.05]},
                     loading={"dgamma_ext": 1e-3, "gamma_max": 0.05, "stationary_from": 0.02},
                     run={"realizations": 2})
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(case.to_dict()))
    cmd = [sys.executable, "-m", "femplast", "run", str(path), "--quiet", "--out"]
    subprocess.run([*cmd, str(tmp_path / "s")], cwd=root, check=True)
    subprocess.run([mpirun, "-n", "2", *cmd, str(tmp_path / "m")], cwd=root, check=True)
    a, b = (json.loads((tmp_path / d / "summary.json").read_text())["patches"]
            for d in ("s", "m"))
    assert a["entries"] == b["entries"] and a["positions"] == b["positions"]
    for r in range(2):
        with h5py.File(tmp_path / "s" / "patches" / f"r000{r}.h5") as f, \
                h5py.File(tmp_path / "m" / "patches" / f"r000{r}.h5") as g:
            for s in ("s0", "s1"):
                for q in ("gamma_c", "sigma_f", "n_events", "trigger_cell"):
                    np.testing.assert_array_equal(f[f"{s}/R7/{q}"][()], g[f"{s}/R7/{q}"][()])


def test_compiled_batch_equals_reference_tests_on_a_loaded_specimen():
    """A plate with a hole loaded in tension past its first avalanches (a non-uniform stress
    with plastic strain): every compiled test equals the reference one-test implementation
    (:func:`patch_test`, direct FE solves on the patch) fed with the stress of a fresh FE
    solve of the specimen, on the same counter-based stream."""
    import math

    from femplast.analysis.patches import PatchRules, patch_arrays, patch_test
    from femplast.fe.elasticity import to_dsp
    from femplast.streams import counter_generator, probe_key

    geo = {"shape": "hole", "width": 60.0, "height": 60.0, "size": 5.0, "hole_radius": 8.0,
           "boundaries": {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}}
    sim = Simulation(load_case({"mesh": {"kind": "geometry"}, "geometry": geo,
                                "redistribution": {"backend": "dense"}}))
    sim.advance_to(0.03)
    st, m, g = sim._state, sim._model, sim.gamma_ext
    assert sim.num_events > 5
    tot = to_dsp(m.fe_stress(st, g, 0.0))
    assert np.ptp(tot[0]) > 0.5 * np.abs(tot[0]).max()  # far from uniform
    alphas = [0.0, 45.0, 120.0]
    pa = PatchAnalysis(m, "disk", [7.0], alphas, spacing=6.0)
    key = (4, 0, 1)
    t = pa.analyse(st, g, 0.0, key)[0]
    ps, rules = pa.sets[0], PatchRules.from_model(m)
    assert len(ps.cells) >= 8 and ps.skipped > 0
    for ip in pa.positions(ps):
        cells = ps.cells[ip]
        op = pa.operator(ps, ip, keep_fe=True)
        for ia, ad in enumerate(alphas):
            ctr = (int(ps.ids[ip]), 7000, int(round(ad * 1000)))
            r = patch_test(op, math.radians(ad), patch_arrays(st, cells, tot[:, cells]), rules,
                           counter_generator(probe_key(*key), ctr), direct=True)
            assert r.n_events == t["n_events"][ip, ia] >= 1
            assert r.gamma_c == pytest.approx(t["gamma_c"][ip, ia], rel=1e-9, abs=1e-12)
            assert np.allclose(r.sigma_f, t["sigma_f"][ip, ia], rtol=0, atol=1e-9)
            assert cells[r.trigger] == t["trigger_cell"][ip, ia]
        op.fe.destroy()
