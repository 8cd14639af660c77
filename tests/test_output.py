"""Outputs (femplast.io.output): field files through meshio's XDMF writer, read back by meshio,
pyvista and dolfinx; every run kind writes its fields; checkpoints removed after success."""

import contextlib
import io
import re
import time

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401  (MPI before dolfinx)
from femplast.app.cases import case_from_dict
from femplast.app.runner import run_case
from femplast.io.output import Progress, read_fields

BASE = dict(model="tensorial", mesh=dict(kind="quad", n=6, L=39.6), slip=dict(N=12),
            loading=dict(dgamma_ext=1e-3))
STAGES = [dict(name="load", gamma=0.2), dict(name="unload", kind="unload")]


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory):
    """KMC quench + two stages, no snapshot asked for: fields of the quench and of each
    stage's final state are written anyway."""
    case = case_from_dict(dict(BASE, stages=STAGES, run=dict(realizations=1, seed=3),
                               kmc=dict(enabled=True, max_events=300, stop="max_events")))
    out = tmp_path_factory.mktemp("staged") / "out"
    err = io.StringIO()  # not a terminal: progress as plain lines
    with contextlib.redirect_stderr(err):
        run_case(case, out, MPI.COMM_SELF, quiet=False)
    return out, err.getvalue()


@pytest.fixture(scope="module")
def staged(staged_run):
    return staged_run[0]


def test_every_stage_and_the_quench_write_fields(staged):
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.xdmf"))
    assert files == ["quench/fields/r0000.xdmf", "stages/load/fields/r0000.xdmf",
                     "stages/unload/fields/r0000.xdmf"]
    assert not list(staged.rglob(".partial*"))


def test_final_fields_match_the_state_thresholds_and_moduli(staged):
    times, fields = read_fields(staged / "stages/load/fields/r0000.xdmf")
    assert times == [0.2]
    f = fields[-1]
    with h5py.File(staged / "stages/load/realizations/r0000.h5") as h:
        tau_c = h["state/tau_c"][()]
        stress = h["state/stress"][()]
        eps_pl = h["state/eps_pl"][()]
    assert np.array_equal(f["tau_c_min"], tau_c.min(axis=1))
    assert np.allclose(f["tau_c_mean"], tau_c.mean(axis=1), rtol=1e-14)
    assert np.array_equal(f["sigma_xy"], stress[:, 2])
    assert np.array_equal(f["eps_pl_xy"], eps_pl[:, 2])
    assert "G" not in f and "B" not in f  # uniform moduli: in case.yaml


def test_field_files_read_by_meshio_pyvista_and_dolfinx(staged):
    pv = pytest.importorskip("pyvista")
    from dolfinx import io

    path = staged / "stages/load/fields/r0000.xdmf"
    _, fields = read_fields(path)  # meshio
    reader = pv.get_reader(str(path))
    assert reader.time_values == [0.2]
    got = reader.read()["fields"].cell_data
    for k in ("sigma_xy", "tau_c_min", "tau_c_mean", "dtau_c_min"):
        assert np.array_equal(np.asarray(got[k]).ravel(), fields[0][k])
    with io.XDMFFile(MPI.COMM_SELF, str(path), "r") as x:
        msh = x.read_mesh(name="mesh")
    assert msh.topology.index_map(2).size_local == 36
    assert np.isclose(msh.geometry.x[:, :2].max(), 39.6)


def test_variant_A_writes_its_per_cell_moduli(tmp_path):
    case = case_from_dict(dict(BASE, variant=dict(model="A", G_mean=18.4, G_shape=1.3),
                               loading=dict(dgamma_ext=1e-3, gamma_max=0.02,
                                            stationary_from=0.01),
                               output=dict(snapshots=[0.02]), run=dict(realizations=1, seed=1)))
    out = tmp_path / "out"
    run_case(case, out, MPI.COMM_SELF, quiet=True)
    _, fields = read_fields(out / "fields" / "r0000.xdmf")
    G = fields[0]["G"]
    assert len(np.unique(G)) == 36 and abs(G.mean() / 18.4 - 1) < 0.3


def test_scalar_final_snapshot_written_once(tmp_path):
    case = case_from_dict(dict(model="scalar", mesh=dict(kind="quad", n=6, L=53.2),
                               elasticity=dict(G=19.0, B=55.0),
                               loading=dict(gamma_max=0.1, stationary_from=0.05),
                               scalar=dict(c0=0.03), output=dict(snapshots=[0.05, 0.1]),
                               run=dict(realizations=1, seed=5)))
    out = tmp_path / "out"
    run_case(case, out, MPI.COMM_SELF, quiet=True)
    times, fields = read_fields(out / "fields" / "r0000.xdmf")
    assert times == [0.05, 0.1] and all(len(f["tau_c"]) == 36 for f in fields)


def test_checkpoint_removed_after_success_unless_kept(tmp_path):
    case = case_from_dict(dict(BASE, loading=dict(dgamma_ext=1e-3, gamma_max=0.01,
                                                  stationary_from=0.005),
                               run=dict(realizations=1, seed=1)))
    run_case(case, tmp_path / "a", MPI.COMM_SELF, quiet=True)
    run_case(case, tmp_path / "b", MPI.COMM_SELF, quiet=True, keep_checkpoint=True)
    assert (tmp_path / "a" / "summary.json").is_file()
    assert not (tmp_path / "a" / "checkpoint").exists()
    assert (tmp_path / "b" / "checkpoint" / "rank000-of-001.npz").is_file()


# ----------------------------------------------------------------------------- progress
class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_lines_never_cut_with_rate_and_time_left():
    s = io.StringIO()
    p = Progress(every=0.0, stream=s)
    p("realization 1/1: stage unload done (stress 1.1545e-16) " + "x" * 300, True)
    b = p.bar(10, "r0000 load", "inc")
    time.sleep(0.01)
    b.set(4, "gamma_ext 0.004")
    b.close()
    out = s.getvalue()
    assert "(stress 1.1545e-16) " + "x" * 300 + "\n" in out
    assert re.search(r"r0000 load: 4/10 inc \(40%\), [\d.,]+ inc/s, 0:0\d left, "
                     r"gamma_ext 0.004\n", out), out


def test_terminal_progress_is_a_tqdm_bar_with_rate():
    s = Terminal()
    p = Progress(stream=s)
    outer = p.bar(3, "run", "realizations")
    inner = p.bar(100, "r0000 load", "inc")
    inner.set(100, "gamma_ext 0.01")
    p("message " + "y" * 200, True)  # printed above the bars, whole
    inner.close()
    outer.update(3)
    outer.close()
    out = s.getvalue()
    assert "y" * 200 in out and "\r" in out
    assert re.search(r"r0000 load: 100%\|.*\| 100/100 \[[\d:]+<[\d:]+, +[\d.?]+ inc/s", out)
    assert re.search(r"run: 100%\|.*\| 3/3 ", out)
    assert p.open == []


def test_runs_report_stages_kmc_and_realizations(staged_run):
    log = staged_run[1]
    assert re.search(r"r0000 KMC T=[\d.]+: 300/300 ev \(100%\)", log), log
    assert re.search(r"r0000 load: 200/200 inc \(100%\), gamma_ext 0.2, [\d,]+ events", log)
    assert re.search(r"r0000 unload: [\d,]+ ev, .*gamma_ext", log)


def test_patch_tests_report_progress(tmp_path):
    case = case_from_dict(dict(BASE, loading=dict(dgamma_ext=1e-3, gamma_max=0.02,
                                                  stationary_from=0.01),
                               output=dict(fields=False), run=dict(realizations=2, seed=1),
                               patches=dict(enabled=True, n=[1, 2], alpha=[0, 90],
                                            initial=True, gamma_ext=[0.02])))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=False)
    log = err.getvalue()
    # per state: (36 + 36) positions x 2 orientations
    assert re.search(r"r0001 patch-tested states: 2/2 state \(100%\), gamma_ext=0.02: 144 "
                     r"tests in", log), log
    assert re.search(r"run: 2/2 realizations \(100%\) in [\d.]+ s", log)


def test_sweeps_report_points(tmp_path):
    from femplast.app.cases import load_case
    from femplast.app.examples import shipped_case

    case = load_case(shipped_case("sweep_scalar.yaml"), [
        "mesh.n=6", "mesh.L=53.16", "run.realizations=1", "loading.gamma_max=0.05",
        "loading.stationary_from=0.02", "sweep.grid={scalar.c0: [0.02, 0.03]}"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=False)
    assert re.search(r"sweep points: 2/2 pt \(100%\) in [\d.]+ s", err.getvalue()), \
        err.getvalue()
