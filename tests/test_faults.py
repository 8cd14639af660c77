"""Faults (issue 17): the YAML reader, output-directory claims, concurrent runs, interrupts at
each phase, damaged checkpoints, a full disk, the memory estimate, a collapsing KMC, and a
rank-0 refusal under mpirun."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import datasets

import femplast  # noqa: F401  (MPI before dolfinx)
from femplast.app.cli import main
from femplast.config import yamlsafe
from femplast.errors import FemplastInputError
from femplast.io import claim as claims

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = str(Path(sys.executable).parent / "mpirun")
TINY = ("mesh: {n: 6, L: 39.6}\nslip: {N: 8}\nloading: {gamma_max: 0.3, stationary_from: 0.1}"
        "\nrun: {realizations: 2, seed: 3}\noutput: {fields: false}\n")


def same_datasets(a: Path, b: Path) -> None:
    da, db = datasets(a), datasets(b)
    assert sorted(da) == sorted(db) and da
    for k in da:
        assert np.array_equal(da[k], db[k]), k


def run(argv, capfd=None) -> tuple[int, str]:
    rc = main([str(a) for a in argv] + ["--quiet"])
    return rc, capfd.readouterr().err if capfd is not None else ""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny case and its uninterrupted output."""
    d = tmp_path_factory.mktemp("tiny")
    (d / "tiny.yaml").write_text(TINY)
    assert main([str(d / "tiny.yaml"), "--out", str(d / "ref"), "--quiet",
                 "--keep-checkpoint"]) == 0  # the tests damage its checkpoint
    return d / "tiny.yaml", d / "ref"


# ----------------------------------------------------------------------------- YAML
def test_yaml_12_numbers_and_shipped_cases_unchanged():
    d = yamlsafe.loads("a: 1e-4\nb: 1.0e300\nc: -2E+3\nd: .inf\ne: 0x1f\nf: 0o17\ng: 010\n"
                       "h: 1:20\ni: yes\nj: ~\nk: true\n", "t", None)
    assert d == dict(a=1e-4, b=1e300, c=-2000.0, d=float("inf"), e=31, f=15, g=10, h="1:20",
                     i="yes", j=None, k=True)
    for f in sorted((ROOT / "cases").glob("*.yaml")):  # the shipped cases read as before
        assert yamlsafe.load_case_file(f) == yaml.safe_load(f.read_text()), f.name


def test_alias_bomb_is_refused_without_expanding():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    with pytest.raises(FemplastInputError, match="anchors"):
        yamlsafe.loads(bomb, "case file", "bomb.yaml")


# ----------------------------------------------------------------------------- claims
def test_claim_is_atomic_between_threads(tmp_path):
    wins, errors = [], []

    def go():
        try:
            wins.append(claims.claim_fresh(tmp_path / "out", "x"))
        except FemplastInputError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 7
    assert all(e.key == "--out" for e in errors)
    (tmp_path / "out" / "case.yaml").write_text("x")
    with pytest.raises(FemplastInputError, match="running femplast"):
        claims.claim_resume(tmp_path / "out")  # the first run still holds the lock
    wins[0].release(remove=False)  # interrupted: the lock file stays, unlocked
    again = claims.claim_resume(tmp_path / "out")
    again.release()
    assert not (tmp_path / "out" / claims.LOCK_NAME).exists()


def test_default_outdirs_never_collide(tmp_path):
    got = [claims.claim_fresh(None, "case", base=tmp_path) for _ in range(3)]
    assert [c.path.name for c in got] == ["case", "case-2", "case-3"]
    for c in got:
        c.release()


@pytest.mark.parametrize("existing", [False, True])
def test_refusal_after_the_model_is_built_leaves_nothing(existing, tmp_path, capfd):
    # inclusion.radius is checked against the built mesh (after the claim): exit 2, one
    # line, and no directory that looks like a run (an empty --out given stays empty)
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    case = Path(femplast.__file__).parent.parent / "cases" / "inclusion.yaml"
    rc, err = run([case, "--set", "inclusion.radius=0.01", "--out", out], capfd)
    assert rc == 2 and err.count("\n") == 1 and "inclusion.radius = 0.01" in err
    assert out.exists() == existing and (not existing or not any(out.iterdir()))
    # a directory holding anything else is left as it is
    claim = claims.claim_fresh(tmp_path / "kept", "x")
    (claim.path / "case.yaml").write_text("x")
    (claim.path / "summary.json").write_text("{}")
    assert not claim.discard() and (claim.path / "summary.json").exists()
    claim.release()


def test_concurrent_runs_on_one_out(tmp_path):
    """Two runs started together on one --out: one runs, the other is refused (exit 2)."""
    case = tmp_path / "tiny.yaml"
    case.write_text(TINY)
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "femplast", str(case), "--out", str(out),
                               "--quiet", "--seed", str(s)], stderr=subprocess.PIPE, text=True)
             for s in (1, 2)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in res)
    assert codes == [0, 2], res
    loser = next(err for rc, err in res if rc == 2)
    assert "--out" in loser and "Traceback" not in loser
    winner_seed = 1 if res[0][0] == 0 else 2
    summary = json.loads((out / "summary.json").read_text())
    assert {s[0] for s in summary["seeds"]} == {winner_seed}
    assert not (out / claims.LOCK_NAME).exists()


@pytest.mark.mpi
def test_out_refused_on_every_rank_under_mpirun(tmp_path):
    (tmp_path / "afile").write_text("x")
    case = tmp_path / "tiny.yaml"
    case.write_text(TINY)
    res = subprocess.run([MPIRUN, "-n", "2", sys.executable, "-m", "femplast", str(case),
                          "--out", str(tmp_path / "afile" / "x"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "--out" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- interrupts
def _signal_when(monkeypatch, obj, name, signum, call: int = 1):
    """Send ``signum`` to this process when ``obj.name`` is called the ``call``-th time."""
    orig = getattr(obj, name)
    count = [0]

    def hooked(*a, **k):
        count[0] += 1
        if count[0] == call:
            os.kill(os.getpid(), signum)
        return orig(*a, **k)

    monkeypatch.setattr(obj, name, hooked)


@pytest.mark.parametrize(("phase", "signum"), [("model", signal.SIGTERM),
                                                ("first_realization", signal.SIGINT),
                                                ("second_realization", signal.SIGTERM)])
def test_interrupt_then_resume_equals_uninterrupted(phase, signum, tiny, tmp_path, monkeypatch,
                                                    capfd):
    from femplast.protocols import pipeline

    case, ref = tiny
    out = tmp_path / "out"
    if phase == "model":  # before the realization loop (no handler of its own yet)
        _signal_when(monkeypatch, pipeline, "TensorialRuns", signum)
    else:
        _signal_when(monkeypatch, pipeline.RealizationRun, "run", signum,
                     call=1 if phase == "first_realization" else 2)
    rc, err = run([case, "--out", out], capfd)
    assert rc == 128 + signum, err
    assert "Traceback" not in err and "--resume" in err
    assert not (out / "summary.json").exists()
    monkeypatch.undo()
    rc, err = run([case, "--out", out, "--resume"], capfd)
    assert rc == 0, err
    same_datasets(ref, out)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sweep_interrupt_ends_cleanly_and_resumes(signum, tmp_path, monkeypatch, capfd):
    from femplast.app import sweep

    case = tmp_path / "sw.yaml"
    case.write_text(TINY + "sweep: {enabled: true, errors: [], grid: {k: [1.8, 2.0, 2.2]}}\n")
    out = tmp_path / "out"
    # the work units are (point, realization) pairs, 2 realizations per point: the third
    # unit is the second point's first realization
    _signal_when(monkeypatch, sweep, "compute_unit", signum, call=3)
    rc, err = run([case, "--out", out], capfd)
    assert rc == 128 + signum, err
    assert "Traceback" not in err and "PETSC" not in err
    assert sorted(p.name for p in (out / "sweep" / "points").iterdir()) == ["p00000.json"]
    monkeypatch.undo()
    rc, err = run([case, "--out", out, "--resume"], capfd)
    assert rc == 0, err
    assert len(list((out / "sweep" / "points").iterdir())) == 3
    assert (out / "summary.json").is_file()


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign"])
def test_damaged_checkpoint_is_exit_2_naming_the_file(damage, tiny, tmp_path, capfd):
    import shutil

    case, ref = tiny
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    (out / "summary.json").unlink()  # looks interrupted after its last checkpoint
    ck = out / "checkpoint" / "rank000-of-001.npz"
    if damage == "garbage":
        ck.write_bytes(b"PK\x03\x04 this is not a zip archive" * 20)
    elif damage == "truncated":
        ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    elif damage == "empty":
        ck.write_bytes(b"")
    else:  # a checkpoint of another case (another seed), copied in
        other = tmp_path / "other"
        other_case = tmp_path / "other.yaml"
        other_case.write_text(TINY.replace("seed: 3", "seed: 4"))
        assert main([str(other_case), "--out", str(other), "--quiet",
                     "--keep-checkpoint"]) == 0
        shutil.copy(other / "checkpoint" / "rank000-of-001.npz", ck)
    rc, err = run([case, "--out", out, "--resume"], capfd)
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and str(ck) in lines[0], err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- full disk
def _small_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True)
    return res.returncode == 0


def test_full_disk_on_a_small_tmpfs(tiny, tmp_path, capfd):
    case, ref = tiny
    mnt = tmp_path / "mnt"
    if not _small_tmpfs(mnt, "48k"):
        pytest.skip("cannot mount a tmpfs here (needs root); see the monkeypatched test")
    try:
        out = mnt / "out"
        rc, err = run([case, "--out", out], capfd)
        assert rc == 1, err
        lines = [ln for ln in err.splitlines() if "error" in ln]
        assert len(lines) == 1 and "No space left on device" in lines[0] and str(out) in lines[0]
        assert "Traceback" not in err
        assert not (out / "summary.json").exists() and not list(out.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        rc, err = run([case, "--out", out, "--resume"], capfd)
        assert rc == 0, err
        same_datasets(ref, out)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("fail_at", [1, 2, 4])
def test_enospc_on_any_write_is_one_line_exit_1_and_resumable(fail_at, tiny, tmp_path,
                                                               monkeypatch, capfd):
    """ENOSPC simulated at the fail_at-th flushed file (realization files, checkpoint, ...)."""
    from femplast.io import output

    case, ref = tiny
    out = tmp_path / "out"
    count = [0]
    real_fsync = os.fsync

    def fsync(fd):
        count[0] += 1
        if count[0] == fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(output.os, "fsync", fsync)
    rc, err = run([case, "--out", out], capfd)
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(out) in lines[0]
    assert not (out / "summary.json").exists() and not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    rc, err = run([case, "--out", out, "--resume"], capfd)
    assert rc == 0, err
    same_datasets(ref, out)


# ----------------------------------------------------------------------------- estimates
def test_memory_estimate_refuses_with_estimate_and_limit(tmp_path, capfd):
    case = tmp_path / "big.yaml"
    case.write_text("loading: {gamma_max: 3000, dgamma_ext: 1e-4}\n")  # 3e7 steps, ~3.6 GiB
    rc, err = run([case, "--check", "--set", "run.max_memory_gb=1"], capfd)
    assert rc == 2
    assert "loading.gamma_max" in err and "estimated 3.58 GiB" in err and "limit 1 GiB" in err
    rc, err = run([case, "--check", "--set", "run.max_memory_gb=100"], capfd)
    assert rc == 0, err


def test_check_is_the_validation_of_a_run(tmp_path, monkeypatch, capfd):
    """--check and a run call the same pass; a run refused by it writes nothing."""
    from femplast.app import validation

    calls = []
    orig = validation.validate
    monkeypatch.setattr(validation, "validate", lambda c, f=(): calls.append(1) or orig(c, f))
    case = tmp_path / "c.yaml"
    case.write_text(TINY)
    assert run([case, "--check"], capfd)[0] == 0
    (tmp_path / "bad.h5").write_bytes(b"not HDF5")
    case.write_text(TINY + "initial: {state: bad.h5}\n")
    assert run([case, "--out", tmp_path / "o"], capfd)[0] == 2
    assert not (tmp_path / "o").exists()
    assert len(calls) == 2


# ----------------------------------------------------------------------------- KMC
def test_kmc_whose_acceptance_collapses_says_so(tmp_path, capfd):
    case = tmp_path / "cold.yaml"
    case.write_text("model: quench\nmesh: {n: 4, L: 26.4}\nslip: {N: 4}\n"
                    "kmc: {temperature: 0.001, stop: max_events, max_events: 2000}\n")
    rc, err = run([case, "--out", tmp_path / "o"], capfd)
    assert rc == 2, err
    assert "KMC acceptance collapsed" in err and "Traceback" not in err


def test_second_signal_stops_at_once():
    from femplast.protocols import checkpoint as ck

    intr = ck.Interrupter(lambda: None)
    intr._handler(signal.SIGTERM, None)  # the first only sets the flag
    assert intr.signum == signal.SIGTERM
    with pytest.raises(ck.Interrupted) as exc:
        intr._handler(signal.SIGTERM, None)
    assert exc.value.exit_code == 143 and exc.value.path is None
