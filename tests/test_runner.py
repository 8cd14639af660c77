"""Running cases end to end (femplast.app.runner, femplast.app.cli): ensembles, MPI, outputs."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.app.cases import load_case
from femplast.app.runner import run_case
from femplast.io.output import read_fields

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = str(Path(sys.executable).parent / "mpirun")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "out"
    case = load_case(ROOT / "cases" / "quickstart.yaml", ["output.snapshots=[]"])
    summary = run_case(case, out, MPI.COMM_SELF, quiet=True)
    return case, out, summary


def test_quickstart_outputs_and_summary(quickstart):
    case, out, summary = quickstart
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["backend"] == "propagator" and summary["femplast_version"]
    assert len(summary["seeds"]) == case.run.realizations
    st = summary["stationary"]
    assert 0.3 < st["sigma_xy_mean"] < 0.8 and st["sigma_xy_std"] > 0
    assert st["stress_drop_mean"] > 0 and st["slip_events_per_unit_strain"] > 100
    with h5py.File(out / "realizations" / "r0000.h5") as f:
        k_end = round(case.loading.gamma_max / case.loading.dgamma_ext)
        assert f["steps/gamma_ext"].shape == (k_end + 1,)
        assert f["steps/stress"].shape == (k_end + 1, 3)
        drops = f["avalanches/drop_xy"][:]
        assert np.all(drops > 0)  # every avalanche lowers the shear stress at fixed strain
        assert f["steps/n_events"][:].sum() == f.attrs["num_events"]


def test_stationary_mean_rise_equals_mean_drop(quickstart):
    """P(Delta Sigma_xy) is the elastic rise between two avalanches (before[i] - after[i-1]):
    in the stationary state the stress neither grows nor decays, so the mean rise equals the
    mean drop per avalanche (the sums telescope up to the end states); the rise is not the
    per-step G dgamma of the old definition."""
    case, out, summary = quickstart
    st = summary["stationary"]
    print(f"mean rise {st['increment_xy_mean']:.5f}, mean drop {st['stress_drop_mean']:.5f}")
    assert abs(st["increment_xy_mean"] / st["stress_drop_mean"] - 1) < 0.03
    G_dgamma = case.elasticity.G * case.loading.dgamma_ext
    assert st["increment_xy_mean"] > 3 * G_dgamma and st["increment_xy_std"] > G_dgamma
    incs = []
    for i in range(case.run.realizations):  # the summary's numbers from the records
        with h5py.File(out / "realizations" / f"r{i:04d}.h5") as f:
            b, a = f["avalanches/stress_before"][:, 2], f["avalanches/stress_after"][:, 2]
            g = f["avalanches/gamma_ext"][:]
        keep = (g[1:] > case.loading.stationary_from) & (g[:-1] > case.loading.stationary_from)
        incs.append((b[1:] - a[:-1])[keep])
    incs = np.concatenate(incs)
    assert np.all(incs > 0)  # AQS: the stress rises between avalanches
    assert np.isclose(incs.mean(), st["increment_xy_mean"], rtol=1e-12)


def test_run_without_avalanche(tmp_path):
    """A run that ends before the first avalanche writes its summary (no IndexError), no
    drop and no increment."""
    case = load_case(ROOT / "cases" / "quickstart.yaml",
                     ["output.snapshots=[]", "loading.gamma_max=0.001",
                      "loading.stationary_from=0.0005", "run.realizations=1"])
    st = run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)["stationary"]
    assert st["avalanches"] == 0 and st["negative_drops"] == 0
    assert np.isnan(st["increment_xy_mean"])
    # elastic: Sigma_xy = G gamma_ext, averaged over gamma_ext = 0.0006 ... 0.001
    assert st["sigma_xy_mean"] == pytest.approx(case.elasticity.G * 0.0008, rel=1e-9)


def test_quickstart_reaches_a_stationary_regime(quickstart):
    """Mean Sigma_xy over the two halves of gamma_ext in (0.5, max) agree within their
    standard errors (realizations are independent: errors from the spread across them)."""
    case, out, _ = quickstart
    halves = []
    for i in range(case.run.realizations):
        with h5py.File(out / "realizations" / f"r{i:04d}.h5") as f:
            g, s = f["steps/gamma_ext"][:], f["steps/stress"][:, 2]
        mid = 0.5 * (0.5 + case.loading.gamma_max)
        halves.append([s[(g > 0.5) & (g <= mid)].mean(), s[g > mid].mean()])
    h = np.array(halves)
    m = h.mean(axis=0)
    se = h.std(axis=0, ddof=1) / np.sqrt(len(h))
    print(f"stationary halves: {m[0]:.4f} +- {se[0]:.4f}, {m[1]:.4f} +- {se[1]:.4f}")
    assert abs(m[0] - m[1]) <= 2 * np.hypot(*se)
    # and the start is a transient: the first 2% of the strain is below the plateau
    with h5py.File(out / "realizations" / "r0000.h5") as f:
        g, s = f["steps/gamma_ext"][:], f["steps/stress"][:, 2]
    assert s[g <= 0.02].mean() < 0.5 * m.mean()


def _same_outputs(a: Path, b: Path, names, atol=0.0):
    for name in names:
        with h5py.File(a / "realizations" / name) as fa, h5py.File(b / "realizations" / name) as fb:
            for grp in ("steps", "avalanches", "state"):
                for k in fa[grp]:
                    x, y = fa[grp][k][:], fb[grp][k][:]
                    if atol == 0.0:
                        assert np.array_equal(x, y), (name, grp, k)
                    else:
                        assert x.shape == y.shape and np.allclose(x, y, rtol=0, atol=atol), k


@pytest.mark.mpi
def test_ensemble_serial_equals_mpirun(tmp_path):
    args = ["cases/quickstart.yaml", "--quiet", "--realizations", "3", "--set",
            "loading.gamma_max=0.4", "--set", "loading.stationary_from=0.2", "--set",
            "output.snapshots=[0.4]"]
    serial, par = tmp_path / "serial", tmp_path / "par"
    subprocess.run([sys.executable, "-m", "femplast", *args, "--out", str(serial)], cwd=ROOT,
                   check=True)
    subprocess.run([MPIRUN, "-n", "2", sys.executable, "-m", "femplast", *args, "--out",
                    str(par)], cwd=ROOT, check=True)
    _same_outputs(serial, par, [f"r{i:04d}.h5" for i in range(3)])
    s1 = json.loads((serial / "summary.json").read_text())
    s2 = json.loads((par / "summary.json").read_text())
    assert s1["stationary"] == s2["stationary"] and s2["mpi_ranks"] == 2
    for i in range(3):  # the fields too
        (ta, fa), (tb, fb) = (read_fields(d / "fields" / f"r{i:04d}.xdmf") for d in (serial, par))
        assert ta == tb == [0.4] and np.array_equal(fa[0]["eps_pl_xy"], fb[0]["eps_pl_xy"])


@pytest.mark.mpi
def test_one_sample_distributed_over_two_ranks(tmp_path):
    """run.parallel: sample, direct backend on a mesh split over 2 ranks: the same events and
    stresses (to round-off) as the serial direct run."""
    args = ["cases/quickstart.yaml", "--quiet", "--realizations", "1", "--set",
            "loading.gamma_max=0.25", "--set", "loading.stationary_from=0.1", "--set",
            "output.snapshots=[]", "--set", "redistribution.backend=direct", "--event-log"]
    serial, par = tmp_path / "serial", tmp_path / "par"
    subprocess.run([sys.executable, "-m", "femplast", *args, "--out", str(serial)], cwd=ROOT,
                   check=True)
    subprocess.run([MPIRUN, "-n", "2", sys.executable, "-m", "femplast", *args, "--out",
                    str(par), "--set", "run.parallel=sample"], cwd=ROOT, check=True)
    with h5py.File(serial / "realizations/r0000.h5") as fa, \
            h5py.File(par / "realizations/r0000.h5") as fb:
        assert fa.attrs["num_events"] == fb.attrs["num_events"] > 50
        assert np.array_equal(fa["events/cell"][:], fb["events/cell"][:])
        scale = np.abs(fa["state/stress"][:]).max()
        assert np.abs(fa["state/stress"][:] - fb["state/stress"][:]).max() <= 1e-9 * scale


@pytest.mark.mpi
def test_prescribed_events_direct_backend_on_two_ranks(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "mpi_scripts"))
    from prescribed_events import prescribed

    serial = prescribed(MPI.COMM_SELF)
    out = tmp_path / "p.npz"
    subprocess.run([MPIRUN, "-n", "2", sys.executable,
                    str(ROOT / "tests" / "mpi_scripts" / "prescribed_events.py"), str(out)],
                   check=True)
    par = np.load(out)
    assert int(par["ranks"]) == 2
    assert np.abs(par["sigma"] - serial).max() <= 1e-9 * np.abs(serial).max()


def test_plain_run_sigterm_then_resume_equals_uninterrupted(tmp_path):
    """SIGTERM stops a plain run at a safe point (exit 143, no summary.json); --resume keeps
    the finished realizations, reruns the others, and the outputs equal an uninterrupted run."""
    import signal
    import time

    args = ["cases/paper_optimum_l6.6.yaml", "--quiet", "--realizations", "24", "--set",
            "loading.gamma_max=0.6", "--set", "loading.stationary_from=0.3", "--set",
            "output.snapshots=[0.6]"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run([sys.executable, "-m", "femplast", *args, "--out", str(full)], cwd=ROOT,
                   check=True)
    proc = subprocess.Popen([sys.executable, "-m", "femplast", *args, "--out", str(cut)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (cut / "realizations" / "r0003.h5").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "--resume" in err and not (cut / "summary.json").exists()
    kept = len(list((cut / "realizations").glob("r*.h5")))
    assert 4 <= kept < 24
    res = subprocess.run([sys.executable, "-m", "femplast", *args, "--out", str(cut),
                          "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _same_outputs(full, cut, [f"r{i:04d}.h5" for i in range(24)])
    s1 = json.loads((full / "summary.json").read_text())
    s2 = json.loads((cut / "summary.json").read_text())
    assert s1["stationary"] == s2["stationary"]
    assert s1["total_slip_events"] == s2["total_slip_events"]
    for i in range(24):
        assert (full / "fields" / f"r{i:04d}.h5").read_bytes() == \
            (cut / "fields" / f"r{i:04d}.h5").read_bytes()
    # a finished run cannot be resumed
    res = subprocess.run([sys.executable, "-m", "femplast", *args, "--out", str(cut),
                          "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "complete" in res.stderr
