"""Patch (local yield-stress) tests on submeshes: exact thresholds, shared operator vs fresh FE,
stability of the probed samples, one-cell patches, reproducibility, runner outputs."""

import json
import math

import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.analysis.patches import (
    Patch,
    PatchAnalysis,
    PatchFE,
    PatchOperator,
    PatchRules,
    Tables,
    patch_arrays,
    patch_test,
)
from femplast.errors import FemplastInputError
from femplast.fe.elasticity import resolved_shear, to_dsp
from femplast.fe.mesh import structured_box
from femplast.streams import CounterStream, counter_generator, probe_key, realization_rng
from femplast.tensorial.aqs import AQSDriver
from femplast.tensorial.model import TensorialModel

G0, B0 = 13.2, 59.0


@pytest.fixture(scope="module")
def model8():
    box = structured_box(8, 52.8, "quad", MPI.COMM_SELF)
    return TensorialModel.build(box, G0, B0, N=36)


@pytest.fixture(scope="module")
def loaded(model8):
    """(state at gamma_ext = 0, state after the avalanche at gamma_ext = 0.3)."""
    st = model8.new_state(realization_rng(7, 0))
    init = st.copy()
    drv = AQSDriver(model8, st, 0.0, 1e-4, 3000)
    drv.run()
    return init, st


def _one_system_state(model, alpha, tau_c):
    """Stress-free state whose every cell has one soft system at angle alpha."""
    st = model.new_state(realization_rng(0, 0))
    th = alpha + 0.25 * np.pi * np.arange(model.params.N)
    th = (th + 0.5 * np.pi) % np.pi - 0.5 * np.pi
    st.theta[:] = th
    st.sin2[:], st.cos2[:] = np.sin(2 * th), np.cos(2 * th)
    st.tauc[:] = 1e9
    st.tauc[:, 0] = tau_c
    return st


@pytest.mark.parametrize("kind", ["quad", "tri"])
@pytest.mark.parametrize("alpha_deg", [0.0, 30.0, 90.0, 135.0])
def test_uniform_patch_yields_at_threshold(kind, alpha_deg):
    box = structured_box(6, 6.0, kind, MPI.COMM_SELF)
    model = TensorialModel.build(box, G0, B0, N=4)
    tau_c = 0.8
    st = _one_system_state(model, math.radians(alpha_deg), tau_c)
    pa = PatchAnalysis(model, "square", [1, 3], [alpha_deg])
    for t in pa.analyse(st, 0.0, 0.0, (1, 0, 0)):
        # uniform moduli: the patch strains affinely, tau = G gamma~ on the soft system
        assert np.allclose(t["gamma_c"], tau_c / G0, rtol=1e-12, atol=0)
        assert np.allclose(t["tau_c"], tau_c, rtol=1e-12, atol=0)
        assert np.allclose(t["tau_i"], 0.0, atol=1e-14)
        assert np.all(t["complete"])
        # every cell sits at threshold: all slip in the first relaxation step
        assert np.all(t["n_events"] >= t["cells"].shape[1])
        assert np.all(t["delta_tau_c"] > 0)


def test_gmsh_disk_yields_at_threshold(tmp_path):
    from femplast.fe.mesh import gmsh_box, write_gmsh_box

    box = gmsh_box(write_gmsh_box(tmp_path / "b.msh", 30.0, 4.0), comm=MPI.COMM_SELF)
    model = TensorialModel.build(box, G0, B0, N=4, backend="dense")
    st = _one_system_state(model, math.radians(20.0), 0.5)
    pa = PatchAnalysis(model, "disk", [7.0], [20.0, 110.0], spacing=10.0)
    (t,) = pa.analyse(st, 0.0, 0.0, (1, 0, 0))
    # every grid point is tested, seam-crossing disks included (unwrapped)
    assert len(t["tau_c"]) == len(pa.sets[0].cells) == 9 and t["skipped"] == 0
    # alpha = 20: the soft system is aligned; alpha = 110: anti-aligned, the others are hard
    assert np.allclose(t["tau_c"][:, 0], 0.5, rtol=1e-10)
    assert np.allclose(t["gamma_c"][:, 0], 0.5 / G0, rtol=1e-10)
    assert np.all(t["gamma_c"][:, 1] > 1e6)


def test_seam_crossing_disk_equals_its_interior_translate():
    """A disk across both periodic seams (unwrapped, seam nodes merged) has the same Green
    operator and boundary responses as the same disk translated into the box interior: a
    patch cut along the seam would not."""
    from femplast.analysis.patches import PatchOperator

    n, h = 8, 6.6
    box = structured_box(n, n * h, "tri", MPI.COMM_SELF)
    mid = np.empty((box.num_cells, 2))
    mid[box.canonical] = box.midpoints()

    def disk(c):
        d = mid - c
        d -= box.L * np.round(d / box.L)
        cells = np.flatnonzero(np.hypot(d[:, 0], d[:, 1]) <= 1.6 * h)
        key = np.round(d[cells] / h * 1e6).astype(np.int64)  # same order for translates
        return cells[np.lexsort(key.T)], np.array(c)

    corner = disk((0.2 * h, 0.3 * h))
    interior = disk((4.2 * h, 4.3 * h))
    assert len(corner[0]) == len(interior[0]) > 6
    ops = [PatchOperator.build(PatchFE(box, cells, G0, B0, centre=c), keep_fe=True)
           for cells, c in (corner, interior)]
    assert ops[0].fe.mesh.topology.index_map(0).size_local == \
        ops[1].fe.mesh.topology.index_map(0).size_local  # seam nodes merged, none doubled
    scale = np.abs(ops[1].D).max()
    assert np.abs(ops[0].D - ops[1].D).max() < 1e-10 * scale
    assert np.abs(ops[0].U - ops[1].U).max() < 1e-10 * G0
    cut = PatchOperator.build(PatchFE(box, corner[0], G0, B0), keep_fe=True)  # not unwrapped
    assert np.abs(cut.D - ops[1].D).max() > 1e-3 * scale


def test_shared_operator_equals_fresh_fe(model8, loaded):
    _, st = loaded
    pa = PatchAnalysis(model8, "square", [3], [0.0, 90.0])
    ps = pa.sets[0]
    op = pa.operator(ps, ps.ref)
    pos = 8 * 3 + 2  # anchor (2, 3): an interior patch, cells differ from the reference
    cells = ps.cells[pos]
    fresh = PatchOperator.build(PatchFE(model8.box, cells, G0, B0), keep_fe=True)
    assert np.abs(fresh.D - op.D).max() < 1e-10 * np.abs(op.D).max()
    assert np.abs(fresh.U - op.U).max() < 1e-10 * G0
    tot = st.sig + 0.3 * model8.load_response(0.0)  # current stress at gamma_ext = 0.3
    p = PatchRules.from_model(model8)
    for a in (0.0, math.pi / 2):
        res = []
        for o, direct in ((op, False), (fresh, True)):
            rng = np.random.default_rng(5)
            res.append(patch_test(o, a, patch_arrays(st, cells, tot[:, cells]), p, rng,
                                  direct=direct))
        r0, r1 = res
        assert r0.n_events == r1.n_events and r0.n_events >= 1
        assert abs(r0.gamma_c - r1.gamma_c) < 1e-12
        assert np.allclose(r0.sigma_c, r1.sigma_c, atol=1e-10)
        assert np.allclose(r0.sigma_f, r1.sigma_f, atol=1e-9)
    fresh.fe.destroy()


def test_stable_samples_have_positive_distance(model8, loaded):
    init, st = loaded
    pa = PatchAnalysis(model8, "square", [1, 2, 4], [0.0, 45.0, 90.0, 170.0], spacing=13.2)
    for sid, (s, g) in enumerate(((init, 0.0), (st, 0.3))):
        sig_before = s.sig.copy()
        tauc_before = s.tauc.copy()
        for t in pa.analyse(s, g, 0.0, (3, 0, sid)):
            assert np.all(np.isfinite(t["dtau_c"]))
            assert np.all(t["dtau_c"] > 0)
            assert np.all(t["gamma_c"] > 0)
            assert np.all(t["complete"])
            assert np.allclose(t["dtau_c"], t["tau_c"] - t["tau_i"])
        # tests never change the sample
        assert np.array_equal(s.sig, sig_before) and np.array_equal(s.tauc, tauc_before)


def test_one_cell_patch_is_the_cells_distance_along_alpha(model8, loaded):
    _, st = loaded
    g = 0.3
    alphas = [0.0, 40.0, 90.0, 150.0]
    pa = PatchAnalysis(model8, "square", [1], alphas)
    (t,) = pa.analyse(st, g, 0.0, (0, 0, 1))
    tot = st.sig + g * model8.load_response(0.0)
    cells = t["cells"][:, 0]
    for ia, ad in enumerate(alphas):
        a = math.radians(ad)
        dt = st.tauc - (st.sin2 * tot[0][:, None] + st.cos2 * tot[1][:, None])
        c = np.cos(2 * (st.theta - a))
        dist = np.where(c > 0, dt / np.where(c > 0, c, 1), np.inf).min(axis=1)
        assert np.allclose(t["dtau_c"][:, ia], dist[cells], rtol=1e-10)
        assert np.allclose(t["tau_i"][:, ia], resolved_shear(a, np.stack(
            [tot[2] - tot[0], tot[2] + tot[0], tot[1]], axis=-1))[cells], atol=1e-12)


def test_results_do_not_depend_on_what_else_is_tested(model8, loaded):
    _, st = loaded
    full = PatchAnalysis(model8, "square", [1, 3], [0.0, 90.0]).analyse(st, 0.3, 0.0, (1, 2, 3))
    part = PatchAnalysis(model8, "square", [3], [90.0], spacing=2 * 6.6).analyse(
        st, 0.3, 0.0, (1, 2, 3))[0]
    f3 = full[1]
    ids = [np.flatnonzero((f3["cells"] == c).all(axis=1))[0] for c in part["cells"]]
    assert np.array_equal(f3["tau_f"][ids, 1], part["tau_f"][:, 0])
    assert np.array_equal(f3["n_events"][ids, 1], part["n_events"][:, 0])


def test_patch_uses_its_own_dirichlet_self_response(model8):
    pa = PatchAnalysis(model8, "square", [1], [0.0])
    op = pa.operator(pa.sets[0], pa.sets[0].ref)
    # one cell with all nodes fixed: zero total strain, dSigma = -C : eps_pl
    assert np.allclose(op.selfq[0], [-G0, 0.0, -G0], atol=1e-10)
    assert np.allclose(op.U[:, :2, 0], [[G0, 0.0], [0.0, G0]], atol=1e-10)
    assert np.all(np.abs(model8.redist.selfq[0, [0, 2]]) < G0)  # periodic: softer


def test_case_section_checks():
    from femplast.app.cases import case_from_dict

    base = {"mesh": {"kind": "quad", "n": 6}, "loading": {"gamma_max": 0.5,
                                                          "stationary_from": 0.2}}
    bad = [({"patches": {"enabled": True, "n": [7]}}, "patches.n[0]"),
           ({"patches": {"enabled": True, "shape": "disk"}}, "patches.radius"),
           ({"patches": {"enabled": True, "shape": "disk", "radius": [3.0, 60.0]}},
            "patches.radius[1]"),
           ({"patches": {"enabled": True, "n": [2], "gamma_ext": [0.6]}}, "patches.gamma_ext[0]"),
           ({"patches": {"enabled": True, "n": [2], "initial": False}}, "patches.gamma_ext"),
           ({"patches": {"enabled": True, "n": [2], "alpha": [200.0]}}, "patches.alpha[0]")]
    for extra, keyname in bad:
        with pytest.raises(FemplastInputError) as e:
            case_from_dict({**base, **extra})
        assert e.value.key == keyname


def test_runner_writes_tables_and_summary(tmp_path):
    from pathlib import Path

    import h5py

    from femplast.app.cases import load_case
    from femplast.app.runner import run_case

    path = Path(__file__).parents[1] / "cases" / "patches_small.yaml"
    case = load_case(path, ["run.realizations=2", "loading.gamma_max=0.3",
                            "loading.stationary_from=0.1", "patches.gamma_ext=[0.2, 0.3]"])
    s = run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)
    with h5py.File(tmp_path / "out" / "patches" / "r0001.h5") as f:
        assert f["s0"].attrs["label"] == "initial"
        t = f["s2/n2"]
        assert t["tau_c"].shape == (36, len(case.patches.alpha))
        assert np.all(np.asarray(t["dtau_c"]) > 0)
    ent = json.loads((tmp_path / "out" / "summary.json").read_text())["patches"]["entries"]
    states = {e["state"] for e in ent}
    assert states == {"initial", "gamma_ext=0.2", "gamma_ext=0.3", "stationary"}
    e = next(e for e in ent if e["state"] == "stationary" and e["size"] == "n2"
             and e["alpha"] == 0.0)
    assert e["count"] == 2 * 2 * 36 and e["dtau_c"]["mean"] > 0 and e["tau_c"]["std"] > 0
    assert s["patches"]["states"]


def test_resume_keeps_the_patch_tests_of_finished_realizations(tmp_path):
    """--resume of a plain run with patch tests: finished realizations are read back (their
    patch files included) and the summary equals the uninterrupted run's."""
    import shutil
    from pathlib import Path

    from femplast.app.cases import load_case
    from femplast.app.runner import run_case

    path = Path(__file__).parents[1] / "cases" / "patches_small.yaml"
    case = load_case(path, ["run.realizations=3", "loading.gamma_max=0.3",
                            "loading.stationary_from=0.1", "patches.gamma_ext=[0.2, 0.3]",
                            "patches.n=[1, 2]"])
    full, cut = tmp_path / "full", tmp_path / "cut"
    s1 = run_case(case, full, MPI.COMM_SELF, quiet=True, keep_checkpoint=True)  # as if cut
    shutil.copytree(full, cut)
    # as left by an interruption during realization 2
    (cut / "summary.json").unlink()
    (cut / "realizations" / "r0002.h5").unlink()
    (cut / "patches" / "r0002.h5").unlink()
    # realization 1 finished its patch tests but not its own file: it must run again
    (cut / "realizations" / "r0001.h5").unlink()
    stamp = (cut / "realizations" / "r0000.h5").stat().st_mtime_ns
    s2 = run_case(case, cut, MPI.COMM_SELF, quiet=True, resume=True)
    assert (cut / "realizations" / "r0000.h5").stat().st_mtime_ns == stamp  # kept
    p1, p2 = (dict(s["patches"], wall_time=None) for s in (s1, s2))  # r1, r2 ran again
    assert p2 == p1 and p1["entries"]
    assert s2["stationary"] == s1["stationary"]
    assert s2["total_slip_events"] == s1["total_slip_events"]


@pytest.mark.parametrize("variant", list("ABCDEFGHI"))
def test_every_model_variant_runs_patch_tests(variant, tmp_path):
    """Patch tests use the sample's own slip rule (amplitude, renewal mode), so every variant
    of appendix A.8 can be probed: a stable sample has positive barriers dtau_c everywhere."""
    from pathlib import Path

    from femplast.app.cases import load_case
    from femplast.app.runner import run_case

    path = Path(__file__).parents[1] / "cases" / f"variant_{variant}.yaml"
    case = load_case(path, ["mesh.n=6", "mesh.L=39.6", "loading.gamma_max=0.2",
                            "loading.stationary_from=0.1", "run.realizations=1",
                            "output.snapshots=[]", "patches.enabled=true", "patches.n=[1, 2]",
                            "patches.alpha=[0, 90]", "patches.gamma_ext=[0.2]"])
    s = run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)
    ent = s["patches"]["entries"]
    assert {e["state"] for e in ent} == {"initial", "gamma_ext=0.2", "stationary"}
    for e in ent:
        assert e["count"] == 36
        assert e["dtau_c"]["mean"] > 0 and np.isfinite(e["tau_c"]["mean"])


def test_counter_stream_rewinds_to_the_tests_own_philox_stream():
    key = probe_key(11, 2, 1)
    cs = CounterStream(key)
    cs.gen.random(5)  # wherever the stream was, a rewind starts the test's stream
    cs.rewind((7, 3000, 90000))
    want = counter_generator(key, (7, 3000, 90000)).random(9)
    assert np.array_equal(cs.gen.random(9), want)
    assert not np.array_equal(want, counter_generator(key, (7, 3000, 0)).random(9))


@pytest.mark.parametrize("self_response", ["patch", "model"])
def test_compiled_batch_equals_the_direct_tests(model8, loaded, self_response):
    """The compiled loop over positions and orientations gives, test by test, what the
    reference implementation gives with the same counter-based stream: patch_test with a fresh
    FE solve per relaxation step (direct) and with the dense Green operator."""
    _, st = loaded
    g, key = 0.3, (4, 1, 2)
    alphas = [0.0, 45.0, 112.5]
    pa = PatchAnalysis(model8, "square", [1, 3], alphas, spacing=2 * 6.6,
                       self_response=self_response)
    tables = pa.analyse(st, g, 0.0, key)
    tot = st.sig + g * model8.load_response(0.0)
    p = PatchRules.from_model(model8)
    checked = 0
    for ps, t in zip(pa.sets, tables, strict=True):
        op = pa.operator(ps, ps.ref, keep_fe=True)
        for ip in pa.positions(ps):
            cells = ps.cells[ip]
            sq = op.selfq if self_response == "patch" else model8.redist.selfq[cells]
            for ia, ad in enumerate(alphas):
                ctr = (int(ps.ids[ip]), int(round(ps.size * 1000)), int(round(ad * 1000)))
                for direct in (False, True):
                    r = patch_test(op, math.radians(ad), patch_arrays(st, cells, tot[:, cells]),
                                   p, counter_generator(probe_key(*key), ctr), selfq=sq,
                                   direct=direct)
                    assert r.n_events == t["n_events"][ip, ia] >= 1
                    assert r.gamma_c == pytest.approx(t["gamma_c"][ip, ia], rel=1e-12)
                    assert np.allclose(r.sigma_c, t["sigma_c"][ip, ia], rtol=0, atol=1e-10)
                    assert np.allclose(r.sigma_f, t["sigma_f"][ip, ia], rtol=0, atol=1e-9)
                    assert cells[r.trigger] == t["trigger_cell"][ip, ia]
                    assert r.complete == t["complete"][ip, ia]
                    checked += 1
    assert checked == 2 * 2 * 16 * len(alphas)
    op.fe.destroy()


def test_compiled_batch_does_not_depend_on_the_order_of_positions(model8, loaded):
    _, st = loaded
    pa = PatchAnalysis(model8, "square", [2], [0.0, 67.5, 90.0])
    (t,) = pa.analyse(st, 0.3, 0.0, (9, 0, 1))
    ps = pa.sets[0]
    P = len(pa.positions(ps))
    rev = np.arange(P)[::-1]
    tabs = Tables(np.full((P, 3), np.nan), np.full((3, P, 3), np.nan), np.full((3, P, 3), np.nan),
                  np.zeros((P, 3), np.int64), np.zeros((P, 3), np.int64),
                  np.full((P, 3), -1, np.int64), np.zeros((P, 3), bool), np.zeros((3, P)))
    total = st.sig + 0.3 * model8.load_response(0.0)
    smp = Patch(np.ascontiguousarray(total), st.eps_pl, st.eacc, st.theta, st.sin2, st.cos2,
                st.tauc)
    pa._batch(CounterStream(probe_key(9, 0, 1)), smp, ps, ps.ref, ps.cells[rev], ps.ids[rev],
              tabs)
    assert np.array_equal(tabs.gamma_c[::-1], t["gamma_c"])
    assert np.array_equal(tabs.n_events[::-1], t["n_events"])
    # the table's [xx, yy, xy] stresses come from these (d, s, p) ones
    assert np.allclose(tabs.sig_f[:, ::-1], to_dsp(t["sigma_f"]), rtol=0, atol=1e-12)
